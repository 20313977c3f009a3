"""What a layer's channels cost on the device: a measured lookup table of single layers.

The latency-aware pruner asks how many milliseconds removing some channels of a coupled
group saves. The answer is measured, not counted: each distinct layer configuration (kind,
channels, kernel, stride, groups, input size) is timed once, alone, with the profile's own
backend, and kept in the latency cache under the profile's fingerprint, so later models,
runs and reruns on that profile reuse it (Shen et al., "Structural Pruning via
Latency-Saliency Knapsack", NeurIPS 2022, build their latency table the same way).

A standalone layer's time includes the runtime's fixed per-call cost; the pruner only uses
differences between two widths of one layer, where that cost cancels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from torch import nn

from evaluators.latency import LatencyMeter, part_protocol

if TYPE_CHECKING:
    from evaluators.latency import DeviceLock, LatencyCache
    from hwprofiles import HardwareProfile

__all__ = ["LayerLatencyTable", "LayerSpec"]

logger = logging.getLogger(__name__)

# A table entry is one of hundreds: timed as any part of a model (part_protocol), with
# fewer samples than a whole model's measurement.
_TABLE_REPEATS = 25


@dataclass(frozen=True)
class LayerSpec:
    """One convolution or linear layer at given widths, as the table keys it."""

    kind: Literal["conv", "linear"]
    in_channels: int
    out_channels: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False
    in_hw: tuple[int, int] = (1, 1)  # the input's spatial size (conv)

    @classmethod
    def of(cls, module: nn.Module, in_hw: tuple[int, int]) -> LayerSpec:
        """Returns the spec of a ``nn.Conv2d`` or ``nn.Linear`` with input size ``in_hw``.

        Raises:
            TypeError: ``module`` is neither.
        """
        if isinstance(module, nn.Conv2d):
            return cls(
                "conv", module.in_channels, module.out_channels,
                _pair(module.kernel_size), _pair(module.stride), _pair(module.padding),
                _pair(module.dilation), module.groups, module.bias is not None, in_hw,
            )
        if isinstance(module, nn.Linear):
            return cls("linear", module.in_features, module.out_features,
                       bias=module.bias is not None)
        raise TypeError(f"layer table: expected nn.Conv2d or nn.Linear, got {type(module).__name__}")

    def with_channels(self, in_channels: int, out_channels: int) -> LayerSpec:
        """Returns this layer at other widths; a depthwise layer keeps ``groups == channels``."""
        depthwise = self.kind == "conv" and self.groups == self.in_channels == self.out_channels
        return LayerSpec(self.kind, in_channels, out_channels, self.kernel, self.stride,
                         self.padding, self.dilation, in_channels if depthwise else self.groups,
                         self.bias, self.in_hw)

    def key(self) -> str:
        """Returns the table key, e.g. ``layer:conv:i16:o64:k3x3:s1x1:p1x1:d1x1:g1:b0:hw16x16``."""
        def xy(v: tuple[int, int]) -> str:
            return f"{v[0]}x{v[1]}"

        if self.kind == "linear":
            return f"layer:linear:i{self.in_channels}:o{self.out_channels}:b{int(self.bias)}"
        return (f"layer:conv:i{self.in_channels}:o{self.out_channels}:k{xy(self.kernel)}:"
                f"s{xy(self.stride)}:p{xy(self.padding)}:d{xy(self.dilation)}:g{self.groups}:"
                f"b{int(self.bias)}:hw{xy(self.in_hw)}")

    def build(self) -> nn.Module:
        """Returns a freshly initialised layer of this spec."""
        if self.kind == "linear":
            return nn.Linear(self.in_channels, self.out_channels, bias=self.bias)
        return nn.Conv2d(self.in_channels, self.out_channels, self.kernel, self.stride,
                         self.padding, self.dilation, self.groups, self.bias)

    def input_shape(self, batch: int) -> tuple[int, ...]:
        """Returns the input shape the layer is timed with."""
        if self.kind == "linear":
            return (batch, self.in_channels)
        return (batch, self.in_channels, *self.in_hw)


def _pair(value: int | tuple[int, ...] | str) -> tuple[int, int]:
    if isinstance(value, str):  # padding="same"/"valid" has no numeric form here
        raise TypeError(f"layer table: string padding {value!r} is not supported")
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[-1]))


class LayerLatencyTable:
    """Median latency of single layers on a hardware profile, measured once per layer spec.

    Args:
        profile: The profile the model will run on; the table times layers with its backend,
            threads and batch size, with fewer repeats than a model's measurement.
        cache: Where entries are kept (a file-backed cache shares them across runs).
        lock: The device lock of the measurements.

    Example:
        >>> from hwprofiles import load_profile
        >>> table = LayerLatencyTable(load_profile("cpu"))
        >>> table.latency_ms(LayerSpec("conv", 16, 32, (3, 3), in_hw=(16, 16))) > 0
        True
    """

    def __init__(
        self,
        profile: HardwareProfile,
        *,
        cache: LatencyCache | None = None,
        lock: DeviceLock | None = None,
    ) -> None:
        self.meter = LatencyMeter(part_protocol(profile, _TABLE_REPEATS), cache=cache,
                                  lock=lock)
        self._known: dict[str, float] = {}

    @property
    def measured(self) -> int:
        """Returns how many entries were timed (not found in the cache) so far."""
        return self.meter.misses

    def latency_ms(self, spec: LayerSpec) -> float:
        """Returns the median latency of ``spec`` alone on the profile, in milliseconds."""
        key = spec.key()
        if key not in self._known:
            layer = spec.build().eval()
            shape = spec.input_shape(self.meter.profile.batch_size)
            self._known[key] = self.meter.measure(layer, shape, key=key).median_ms
        return self._known[key]
