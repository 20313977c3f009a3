"""Static layers shared by the extracted subnets: only standard torch layers inside."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ActLayer", "PooledClassifier", "SqueezeExcite", "get_act_layer"]

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


class PooledClassifier(nn.Module):
    """The interface every network of a space exposes (timm's): ``forward_features`` (the
    subclass's), then ``forward_head``: global average pooling, dropout and the classifier.

    Subclasses set ``global_pool``, ``flatten``, ``dropout`` and ``classifier`` and define
    ``forward_features`` and ``num_features``.
    """

    global_pool: nn.Module
    flatten: nn.Module
    dropout: nn.Module
    classifier: nn.Module
    num_classes: int

    def forward_features(self, x: Tensor) -> Tensor:
        """Returns the feature map before pooling, (B, num_features, H', W')."""
        raise NotImplementedError

    @property
    def num_features(self) -> int:
        """The width of the pooled features that enter the classifier."""
        raise NotImplementedError

    def active_classifier(self) -> nn.Module:
        """Returns the classifier ``forward_head`` applies: ``classifier``, unless a supernet
        keeps one per subnet shape."""
        return self.classifier

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pools the features and returns logits (or the pooled features if ``pre_logits``)."""
        x = self.dropout(self.flatten(self.global_pool(x)))  # (B, num_features)
        return x if pre_logits else self.active_classifier()(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the classifier by a new one with ``num_classes`` outputs (0: identity)."""
        self.num_classes = num_classes
        ref = next(self.parameters())
        self.classifier = (
            nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            if num_classes > 0
            else nn.Identity()
        )
