"""Elastic layers: weight-sharing layers that run a slice of their largest weights.

Each layer owns the weights of its largest configuration. Input channels are read from the
input tensor; output channels and kernel size are set through ``active_*`` attributes. Every
layer can copy the slice it would run into a plain torch layer of the matching shape
(``copy_to``), which is how a supernet extracts a static subnet.

Kernels shrink by taking the centre of the largest kernel, as in Once-for-All (Cai et al.,
2020, "Once-for-All: Train One Network and Specialize it for Efficient Deployment"). A
depthwise layer can also learn Once-for-All's kernel transformation matrices, so that a
smaller kernel is a learned function of the larger one's centre rather than the same
weights. Channels shrink by keeping the first channels.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from search_spaces._layers import SqueezeExcite

__all__ = [
    "ElasticBatchNorm2d",
    "ElasticConv2d",
    "ElasticDepthwiseConv2d",
    "ElasticLinear",
    "ElasticSqueezeExcite",
    "make_divisible",
]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Rounds ``value`` to the nearest multiple of ``divisor``, never more than 10% below it.

    This is the channel rounding used throughout the MobileNet family.

    Args:
        value: The channel count to round.
        divisor: The multiple to round to.
        min_value: The smallest result allowed; ``divisor`` when None.

    Returns:
        The rounded channel count.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _centre_crop(weight: Tensor, kernel_size: int) -> Tensor:
    """Returns the centre ``kernel_size`` x ``kernel_size`` window of a (..., K, K) kernel."""
    full = weight.shape[-1]
    start = (full - kernel_size) // 2
    return weight[..., start : start + kernel_size, start : start + kernel_size]


def _check_kernel(kernel_size: int, max_kernel_size: int) -> None:
    if kernel_size % 2 != 1 or not 1 <= kernel_size <= max_kernel_size:
        raise ValueError(
            f"kernel_size must be odd and in [1, {max_kernel_size}], got {kernel_size}"
        )


class ElasticConv2d(nn.Module):
    """A dense convolution with elastic input channels, output channels and kernel size.

    Padding keeps the spatial size ("same" padding, ``kernel_size // 2``) for every kernel.

    Args:
        max_in_channels: The largest number of input channels.
        max_out_channels: The largest number of output channels.
        kernel_size: The largest (odd) kernel size.
        stride: The stride.
        bias: Whether the convolution has a bias.
    """

    def __init__(
        self,
        max_in_channels: int,
        max_out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        _check_kernel(kernel_size, kernel_size)
        self.max_in_channels = max_in_channels
        self.max_out_channels = max_out_channels
        self.max_kernel_size = kernel_size
        self.stride = stride
        shape = (max_out_channels, max_in_channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(max_out_channels)) if bias else None
        self.active_out_channels = max_out_channels
        self.active_kernel_size = kernel_size
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def get_weight(self, out_channels: int, in_channels: int, kernel_size: int) -> Tensor:
        """Returns the (out_channels, in_channels, k, k) slice of the shared weight."""
        _check_kernel(kernel_size, self.max_kernel_size)
        return _centre_crop(self.weight[:out_channels, :in_channels], kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        k = self.active_kernel_size
        weight = self.get_weight(self.active_out_channels, x.shape[1], k)
        bias = None if self.bias is None else self.bias[: self.active_out_channels]
        return F.conv2d(x, weight, bias, self.stride, k // 2)

    @torch.no_grad()
    def copy_to(self, conv: nn.Conv2d) -> None:
        """Copies the slice matching ``conv``'s shape into ``conv`` (a plain ``nn.Conv2d``)."""
        out_channels, in_channels, k, _ = conv.weight.shape
        conv.weight.copy_(self.get_weight(out_channels, in_channels, k))
        if (conv.bias is None) != (self.bias is None):
            raise ValueError("conv must have a bias exactly when the elastic conv has one")
        if conv.bias is not None and self.bias is not None:
            conv.bias.copy_(self.bias[:out_channels])

    def extra_repr(self) -> str:
        return (
            f"{self.max_in_channels}, {self.max_out_channels}, "
            f"kernel_size={self.max_kernel_size}, stride={self.stride}"
        )


class ElasticDepthwiseConv2d(nn.Module):
    """A depthwise convolution (no bias) with elastic channels and kernel size.

    A smaller kernel is the centre of the largest. With ``kernel_transform`` each step down
    (5 to 3, 3 to 1, ...) also passes the cropped centre through a learned k²×k² matrix
    shared by the layer's channels, initialised to the identity (Once-for-All's kernel
    transformation): the centre weights then need not serve as both the middle of a large
    kernel and a whole small one.

    Args:
        max_channels: The largest number of channels.
        kernel_size: The largest (odd) kernel size.
        stride: The stride.
        kernel_transform: Learn a transformation matrix for every step down to
            ``min_kernel_size``.
        min_kernel_size: The smallest kernel size the layer will run with transforms.
    """

    def __init__(
        self,
        max_channels: int,
        kernel_size: int,
        stride: int = 1,
        kernel_transform: bool = False,
        min_kernel_size: int = 1,
    ) -> None:
        super().__init__()
        _check_kernel(kernel_size, kernel_size)
        self.max_channels = max_channels
        self.max_kernel_size = kernel_size
        self.min_kernel_size = min_kernel_size
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(max_channels, 1, kernel_size, kernel_size))
        self.active_kernel_size = kernel_size
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        # "5to3": the matrix applied to the flattened 3x3 centre of the 5x5 kernel
        self.kernel_transforms = nn.ParameterDict({
            f"{k + 2}to{k}": nn.Parameter(torch.eye(k * k))
            for k in range(kernel_size - 2, min_kernel_size - 1, -2)
        } if kernel_transform else {})

    def get_weight(self, channels: int, kernel_size: int) -> Tensor:
        """Returns the (channels, 1, k, k) kernel of the first ``channels`` channels: the
        shared weight's centre, transformed step by step when the layer learns transforms.

        Raises:
            ValueError: ``kernel_size`` is even, larger than the layer's, or (with
                transforms) smaller than its ``min_kernel_size``.
        """
        _check_kernel(kernel_size, self.max_kernel_size)
        if self.kernel_transforms and kernel_size < self.min_kernel_size:
            raise ValueError(f"kernel_size must be at least {self.min_kernel_size}, the smallest "
                             f"with a learned transform, got {kernel_size}")
        weight = self.weight[:channels]
        if not self.kernel_transforms:
            return _centre_crop(weight, kernel_size)
        for k in range(self.max_kernel_size - 2, kernel_size - 1, -2):
            centre = _centre_crop(weight, k).reshape(channels, k * k)
            weight = F.linear(centre, self.kernel_transforms[f"{k + 2}to{k}"]).view(
                channels, 1, k, k)
        return weight

    def forward(self, x: Tensor) -> Tensor:
        channels, k = x.shape[1], self.active_kernel_size
        weight = self.get_weight(channels, k)
        return F.conv2d(x, weight, None, self.stride, k // 2, 1, channels)

    @torch.no_grad()
    def copy_to(self, conv: nn.Conv2d) -> None:
        """Copies the slice matching ``conv``'s shape into a depthwise ``nn.Conv2d``."""
        if conv.groups != conv.in_channels or conv.in_channels != conv.out_channels:
            raise ValueError(f"conv must be depthwise, got {conv}")
        conv.weight.copy_(self.get_weight(conv.out_channels, conv.weight.shape[-1]))

    def extra_repr(self) -> str:
        transform = ", kernel_transform=True" if self.kernel_transforms else ""
        return (f"{self.max_channels}, kernel_size={self.max_kernel_size}, stride={self.stride}"
                f"{transform}")


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that normalises the first ``C`` channels of a ``C``-channel input.

    In eval mode it uses the matching slice of the running statistics. In train mode it
    normalises with the batch statistics and the sliced affine parameters, and updates the
    running statistics of those channels only; the other channels keep their values.
    It is an ``nn.BatchNorm2d``, so code that resets or recalibrates BN layers treats it
    like any other.
    """

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        if channels > self.num_features:
            raise ValueError(f"expected at most {self.num_features} channels, got {channels}")
        # Same momentum logic as nn.BatchNorm2d, on a slice of the parameters and buffers.
        average_factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                average_factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        # Slices of the first channels are views, so batch_norm's in-place update of the
        # running statistics writes back into the full buffers.
        running_mean = running_var = None
        if track and self.running_mean is not None and self.running_var is not None:
            running_mean = self.running_mean[:channels]
            running_var = self.running_var[:channels]
        weight = self.weight[:channels] if self.affine else None
        bias = self.bias[:channels] if self.affine else None
        return F.batch_norm(
            x, running_mean, running_var, weight, bias, use_batch_stats, average_factor, self.eps
        )

    @torch.no_grad()
    def copy_to(self, bn: nn.BatchNorm2d) -> None:
        """Copies the first ``bn.num_features`` channels' parameters and statistics into ``bn``."""
        channels = bn.num_features
        if self.affine and bn.affine:
            bn.weight.copy_(self.weight[:channels])
            bn.bias.copy_(self.bias[:channels])
        if self.running_mean is not None and bn.running_mean is not None:
            bn.running_mean.copy_(self.running_mean[:channels])
        if self.running_var is not None and bn.running_var is not None:
            bn.running_var.copy_(self.running_var[:channels])
        if self.num_batches_tracked is not None and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.copy_(self.num_batches_tracked)
        bn.eps = self.eps
        bn.momentum = self.momentum


class ElasticLinear(nn.Module):
    """A fully connected layer with elastic input features (the first features are kept).

    Args:
        max_in_features: The largest number of input features.
        out_features: The number of output features.
        bias: Whether the layer has a bias.
    """

    def __init__(self, max_in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.max_in_features = max_in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, max_in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        # The same initialisation as nn.Linear of the largest size.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(max_in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight[:, : x.shape[-1]], self.bias)

    @torch.no_grad()
    def copy_to(self, linear: nn.Linear) -> None:
        """Copies the slice matching ``linear``'s shape into ``linear`` (a plain ``nn.Linear``)."""
        linear.weight.copy_(self.weight[: linear.out_features, : linear.in_features])
        if linear.bias is not None and self.bias is not None:
            linear.bias.copy_(self.bias[: linear.out_features])

    def extra_repr(self) -> str:
        return f"max_in_features={self.max_in_features}, out_features={self.out_features}"


class ElasticSqueezeExcite(nn.Module):
    """Squeeze-and-excitation with elastic channels and bottleneck width.

    Hu et al., 2018, "Squeeze-and-Excitation Networks", with the hard-sigmoid gate of
    MobileNetV3. The static counterpart is ``search_spaces._layers.SqueezeExcite``.

    Args:
        max_channels: The largest number of channels.
        max_rd_channels: The largest bottleneck width.
    """

    def __init__(self, max_channels: int, max_rd_channels: int) -> None:
        super().__init__()
        self.conv_reduce = ElasticConv2d(max_channels, max_rd_channels, bias=True)
        self.act = nn.ReLU()
        self.conv_expand = ElasticConv2d(max_rd_channels, max_channels, bias=True)
        self.gate = nn.Hardsigmoid()

    def set_active(self, channels: int, rd_channels: int) -> None:
        """Sets the number of channels of the next inputs and the bottleneck width."""
        self.conv_reduce.active_out_channels = rd_channels
        self.conv_expand.active_out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)  # (B, C, 1, 1)
        scale = self.conv_expand(self.act(self.conv_reduce(scale)))
        gate: Tensor = self.gate(scale)
        return x * gate

    def copy_to(self, se: SqueezeExcite) -> None:
        """Copies the slice matching ``se``'s widths into a static squeeze-excite."""
        self.conv_reduce.copy_to(se.conv_reduce)
        self.conv_expand.copy_to(se.conv_expand)
