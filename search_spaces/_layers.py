"""Static layers shared by the extracted subnets: only standard torch layers inside."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ActLayer", "SqueezeExcite", "get_act_layer"]

ActLayer = str | type[nn.Module] | None

_ACT_LAYERS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "hard_swish": nn.Hardswish,
    "hardsigmoid": nn.Hardsigmoid,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "identity": nn.Identity,
}


def get_act_layer(act: ActLayer) -> type[nn.Module]:
    """Returns the activation class for a name, a class, or None (identity).

    Args:
        act: An activation name such as ``"relu"`` or ``"hardswish"``, an ``nn.Module``
            subclass, or None.

    Returns:
        The activation class; construct it with no arguments.

    Raises:
        ValueError: ``act`` is an unknown name.
    """
    if act is None:
        return nn.Identity
    if isinstance(act, str):
        try:
            return _ACT_LAYERS[act.lower()]
        except KeyError:
            raise ValueError(
                f"unknown activation {act!r}; known activations are {sorted(_ACT_LAYERS)}"
            ) from None
    return act


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation with a hard-sigmoid gate, as in MobileNetV3.

    Args:
        channels: The number of input (and output) channels.
        rd_channels: The bottleneck width.
    """

    def __init__(self, channels: int, rd_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_reduce = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.act = nn.ReLU()
        self.conv_expand = nn.Conv2d(rd_channels, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.pool(x)  # (B, C, 1, 1)
        scale = self.conv_expand(self.act(self.conv_reduce(scale)))
        gate: Tensor = self.gate(scale)
        return x * gate
