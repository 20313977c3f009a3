"""MobileNetV3 building blocks: the typed network spec, the static network and its elastic twin.

A decoded arch becomes a ``MobileNetV3Cfg`` (frozen dataclasses). The static ``MobileNetV3``
is built from that spec with standard torch layers only, so it exports to ONNX and prunes
like any model. ``ElasticInvertedResidual`` holds the shared weights of one block of the
supernet and copies the slice of a given spec into a static ``InvertedResidual``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from search_spaces._elastic import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticDepthwiseConv2d,
    ElasticSqueezeExcite,
)
from search_spaces._layers import PooledClassifier, SqueezeExcite, get_act_layer

__all__ = [
    "BlockCfg",
    "ElasticInvertedResidual",
    "InvertedResidual",
    "MobileNetV3",
    "MobileNetV3Cfg",
]


@dataclass(frozen=True)
class BlockCfg:
    """One inverted residual block: 1x1 expand, kxk depthwise, optional SE, 1x1 project.

    Attributes:
        in_channels: Input channels.
        out_channels: Output channels.
        mid_channels: Channels after the 1x1 expansion (``in_channels * expand_ratio``).
        kernel_size: The depthwise kernel size.
        stride: The depthwise stride.
        se_channels: The squeeze-excite bottleneck width; 0 means no squeeze-excite.
        act: The activation name (see ``get_act_layer``).
    """

    in_channels: int
    out_channels: int
    mid_channels: int
    kernel_size: int
    stride: int
    se_channels: int
    act: str

    @property
    def has_skip(self) -> bool:
        """Whether the block adds its input to its output."""
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclass(frozen=True)
class MobileNetV3Cfg:
    """A whole static network: stem, stages of blocks, head and classifier."""

    in_channels: int
    num_classes: int
    stem_channels: int
    stem_stride: int
    stages: tuple[tuple[BlockCfg, ...], ...]
    head_channels: int
    dropout: float

    @property
    def last_channels(self) -> int:
        """The channels entering the head."""
        blocks = [block for stage in self.stages for block in stage]
        return blocks[-1].out_channels if blocks else self.stem_channels


class _InvertedResidualForward(nn.Module):
    """The forward pass shared by the static and the elastic block (same layer names)."""

    has_skip: bool

    def forward(self, x: Tensor) -> Tensor:
        b: Any = self  # the layers are set by the subclasses, static or elastic
        shortcut = x
        x = b.act1(b.bn1(b.conv_pw(x)))  # (B, mid, H, W)
        x = b.act2(b.bn2(b.conv_dw(x)))  # (B, mid, H / stride, W / stride)
        x = b.se(x)
        x = b.bn3(b.conv_pwl(x))  # (B, out, H / stride, W / stride)
        return x + shortcut if self.has_skip else x


class InvertedResidual(_InvertedResidualForward):
    """The MobileNetV2/V3 inverted residual block (Sandler et al., 2018; Howard et al., 2019)."""

    def __init__(self, cfg: BlockCfg) -> None:
        super().__init__()
        act_layer = get_act_layer(cfg.act)
        mid, k = cfg.mid_channels, cfg.kernel_size
        self.has_skip = cfg.has_skip
        self.conv_pw = nn.Conv2d(cfg.in_channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = act_layer()
        self.conv_dw = nn.Conv2d(mid, mid, k, cfg.stride, k // 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = act_layer()
        self.se: nn.Module = (
            SqueezeExcite(mid, cfg.se_channels) if cfg.se_channels else nn.Identity()
        )
        self.conv_pwl = nn.Conv2d(mid, cfg.out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cfg.out_channels)



class MobileNetV3(PooledClassifier):
    """A static MobileNetV3-style network built from a ``MobileNetV3Cfg``.

    Howard et al., 2019, "Searching for MobileNetV3". Hard-swish stem and head, stages of
    inverted residual blocks, a 1x1 head convolution, global pooling and a linear classifier.
    Exposes the timm interface: ``forward_features``, ``forward_head``, ``reset_classifier``.

    Args:
        cfg: The network spec, e.g. from ``MobileNetElasticSpace.net_cfg``.
    """

    def __init__(self, cfg: MobileNetV3Cfg) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        self.conv_stem = nn.Conv2d(
            cfg.in_channels, cfg.stem_channels, 3, cfg.stem_stride, 1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(cfg.stem_channels)
        self.act1 = nn.Hardswish()
        self.blocks = nn.Sequential(
            *(nn.Sequential(*(InvertedResidual(block) for block in stage)) for stage in cfg.stages)
        )
        self.conv_head = nn.Conv2d(cfg.last_channels, cfg.head_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cfg.head_channels)
        self.act2 = nn.Hardswish()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier: nn.Module = nn.Linear(cfg.head_channels, cfg.num_classes)

    @property
    def num_features(self) -> int:
        """The width of the pooled features that enter the classifier."""
        return int(self.conv_head.out_channels)

    def forward_features(self, x: Tensor) -> Tensor:
        """Returns the feature map before pooling, (B, head_channels, H', W')."""
        x = self.act1(self.bn1(self.conv_stem(x)))
        x = self.blocks(x)
        x = self.act2(self.bn2(self.conv_head(x)))  # (B, head_channels, H', W')
        return x



class ElasticInvertedResidual(_InvertedResidualForward):
    """An inverted residual block of the supernet with elastic kernel and expansion.

    Input and output widths are fixed; the expanded width and the depthwise kernel follow
    the ``BlockCfg`` given to ``set_active``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: The depthwise stride.
        kernel_sizes: The allowed depthwise kernel sizes.
        max_mid_channels: The largest expanded width.
        max_se_channels: The largest squeeze-excite bottleneck width; 0 means no SE.
        act: The activation name.
        kernel_transform: Learn Once-for-All's kernel transformation matrices in the
            depthwise convolution (see ``ElasticDepthwiseConv2d``).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        stride: int,
        kernel_sizes: Sequence[int],
        max_mid_channels: int,
        max_se_channels: int,
        act: str,
        kernel_transform: bool = False,
    ) -> None:
        super().__init__()
        act_layer = get_act_layer(act)
        mid = max_mid_channels
        self.has_skip = stride == 1 and in_channels == out_channels
        self.conv_pw = ElasticConv2d(in_channels, mid, 1)
        self.bn1 = ElasticBatchNorm2d(mid)
        self.act1 = act_layer()
        self.conv_dw = ElasticDepthwiseConv2d(mid, max(kernel_sizes), stride, kernel_transform,
                                              min(kernel_sizes))
        self.bn2 = ElasticBatchNorm2d(mid)
        self.act2 = act_layer()
        self.se: nn.Module = (
            ElasticSqueezeExcite(mid, max_se_channels) if max_se_channels else nn.Identity()
        )
        self.conv_pwl = ElasticConv2d(mid, out_channels, 1)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def set_active(self, cfg: BlockCfg) -> None:
        """Makes ``forward`` run the block described by ``cfg``."""
        self.conv_pw.active_out_channels = cfg.mid_channels
        self.conv_dw.active_kernel_size = cfg.kernel_size
        if isinstance(self.se, ElasticSqueezeExcite):
            self.se.set_active(cfg.mid_channels, cfg.se_channels)


    def copy_to(self, block: InvertedResidual) -> None:
        """Copies the weights (and BN statistics) matching ``block``'s shapes into it."""
        self.conv_pw.copy_to(block.conv_pw)
        self.bn1.copy_to(block.bn1)
        self.conv_dw.copy_to(block.conv_dw)
        self.bn2.copy_to(block.bn2)
        if isinstance(self.se, ElasticSqueezeExcite) and isinstance(block.se, SqueezeExcite):
            self.se.copy_to(block.se)
        self.conv_pwl.copy_to(block.conv_pwl)
        block.bn3.load_state_dict(self.bn3.state_dict())
