"""ResNet building blocks: the typed network spec, the static network and its elastic twin.

A decoded arch becomes a ``ResNetCfg`` (frozen dataclasses). The static ``ResNet`` is built
from that spec with standard torch layers only (dense convolutions, BatchNorm, ReLU, average
pooling), so it exports to ONNX, quantises to INT8 and prunes like any model.
``ElasticResBlock`` holds the shared weights of one block of the supernet and copies the
slice of a given spec into a static ``ResBlock``. Both are laid out by the same functions,
so their module trees match name for name.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from search_spaces._elastic import ElasticBatchNorm2d, ElasticConv2d
from search_spaces._layers import PooledClassifier

__all__ = [
    "BlockKind",
    "ElasticResBlock",
    "ResBlock",
    "ResBlockCfg",
    "ResNet",
    "ResNetCfg",
]

BlockKind = Literal["basic", "bottleneck"]

# (in_channels, out_channels, kernel_size, stride) -> a conv with "same" padding, no bias.
ConvFactory = Callable[[int, int, int, int], nn.Module]
NormFactory = Callable[[int], nn.Module]


@dataclass(frozen=True)
class ResBlockCfg:
    """One residual block.

    A ``"bottleneck"`` block runs 1x1 (in -> mid), 3x3 (mid -> mid, strided), 1x1
    (mid -> out). A ``"basic"`` block runs 3x3 (in -> mid, strided), 3x3 (mid -> out).
    Every conv is followed by BN, every BN but the last by ReLU; the shortcut is added
    before the final ReLU.

    Attributes:
        kind: ``"bottleneck"`` or ``"basic"``.
        in_channels: Input channels.
        out_channels: Output channels.
        mid_channels: Width inside the block (the 3x3 conv of a bottleneck, the output of
            the first conv of a basic block).
        stride: The stride of the block's 3x3 conv (the first 3x3 conv of a basic block).
        downsample: Whether the shortcut is a 1x1 conv + BN (after a ``stride`` x ``stride``
            average pool when ``stride > 1``) rather than the identity.
    """

    kind: BlockKind
    in_channels: int
    out_channels: int
    mid_channels: int
    stride: int
    downsample: bool


@dataclass(frozen=True)
class ResNetCfg:
    """A whole static network: stem, stages of blocks and classifier."""

    in_channels: int
    num_classes: int
    stem_channels: int
    stem_stride: int
    stages: tuple[tuple[ResBlockCfg, ...], ...]
    dropout: float

    @property
    def last_channels(self) -> int:
        """The channels entering the classifier."""
        blocks = [block for stage in self.stages for block in stage]
        return blocks[-1].out_channels if blocks else self.stem_channels


def _static_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Module:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)


def _elastic_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Module:
    return ElasticConv2d(in_channels, out_channels, kernel_size, stride)


def _body(cfg: ResBlockCfg, conv: ConvFactory, norm: NormFactory) -> nn.Sequential:
    """Lays out the residual branch of ``cfg``; the last conv gives ``out_channels``."""
    cin, mid, out, stride = cfg.in_channels, cfg.mid_channels, cfg.out_channels, cfg.stride
    if cfg.kind == "bottleneck":
        layers = [
            ("conv1", conv(cin, mid, 1, 1)),  # (B, mid, H, W)
            ("bn1", norm(mid)),
            ("act1", nn.ReLU()),
            ("conv2", conv(mid, mid, 3, stride)),  # (B, mid, H / stride, W / stride)
            ("bn2", norm(mid)),
            ("act2", nn.ReLU()),
            ("conv3", conv(mid, out, 1, 1)),  # (B, out, H / stride, W / stride)
            ("bn3", norm(out)),
        ]
    else:
        layers = [
            ("conv1", conv(cin, mid, 3, stride)),  # (B, mid, H / stride, W / stride)
            ("bn1", norm(mid)),
            ("act1", nn.ReLU()),
            ("conv2", conv(mid, out, 3, 1)),  # (B, out, H / stride, W / stride)
            ("bn2", norm(out)),
        ]
    return nn.Sequential(OrderedDict(layers))


def _shortcut(cfg: ResBlockCfg, conv: ConvFactory, norm: NormFactory) -> nn.Module:
    """Lays out the shortcut: identity, or (average pool +) 1x1 conv + BN as in OFA-ResNet."""
    if not cfg.downsample:
        return nn.Identity()
    layers: list[tuple[str, nn.Module]] = []
    if cfg.stride > 1:
        # ceil_mode keeps the pooled size equal to the strided 3x3 conv's, odd inputs too.
        pool = nn.AvgPool2d(cfg.stride, cfg.stride, ceil_mode=True, count_include_pad=False)
        layers.append(("pool", pool))
    layers.append(("conv", conv(cfg.in_channels, cfg.out_channels, 1, 1)))
    layers.append(("bn", norm(cfg.out_channels)))
    return nn.Sequential(OrderedDict(layers))


class _ResBlockForward(nn.Module):
    """The forward pass shared by the static and the elastic block (same layer names)."""

    body: nn.Sequential
    shortcut: nn.Module
    act: nn.Module

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.act(self.body(x) + self.shortcut(x))  # (B, out, H', W')
        return out


class ResBlock(_ResBlockForward):
    """A static ResNet block (He et al., 2016), stride on the 3x3 conv as in ResNet-v1.5.

    Args:
        cfg: The block spec.
    """

    def __init__(self, cfg: ResBlockCfg) -> None:
        super().__init__()
        self.body = _body(cfg, _static_conv, nn.BatchNorm2d)
        self.shortcut = _shortcut(cfg, _static_conv, nn.BatchNorm2d)
        self.act = nn.ReLU()


class ElasticResBlock(_ResBlockForward):
    """A ResNet block of the supernet with elastic input, middle and output widths.

    It holds the weights of ``max_cfg``; ``set_active`` selects the widths of a smaller
    spec of the same kind, stride and shortcut. Input channels follow the input tensor.

    Args:
        max_cfg: The block at its largest widths.
    """

    def __init__(self, max_cfg: ResBlockCfg) -> None:
        super().__init__()
        self.max_cfg = max_cfg
        self.body = _body(max_cfg, _elastic_conv, ElasticBatchNorm2d)
        self.shortcut = _shortcut(max_cfg, _elastic_conv, ElasticBatchNorm2d)
        self.act = nn.ReLU()
        # Every conv of the branch but the last gives the middle width; the branch's last
        # conv and the shortcut conv give the output width.
        convs = [m for m in self.body if isinstance(m, ElasticConv2d)]
        shortcut_convs = [m for m in self.shortcut.modules() if isinstance(m, ElasticConv2d)]
        self._mid_convs = convs[:-1]
        self._out_convs = [convs[-1], *shortcut_convs]

    def set_active(self, cfg: ResBlockCfg) -> None:
        """Makes ``forward`` run the block described by ``cfg``."""
        m = self.max_cfg
        fits = (cfg.kind, cfg.stride, cfg.downsample) == (m.kind, m.stride, m.downsample) and (
            cfg.in_channels <= m.in_channels
            and cfg.mid_channels <= m.mid_channels
            and cfg.out_channels <= m.out_channels
        )
        if not fits:
            raise ValueError(f"cfg {cfg} does not fit the elastic block {m}")
        for conv in self._mid_convs:
            conv.active_out_channels = cfg.mid_channels
        for conv in self._out_convs:
            conv.active_out_channels = cfg.out_channels

    def copy_to(self, block: ResBlock) -> None:
        """Copies the weights (and BN statistics) matching ``block``'s shapes into it."""
        mine = dict(self.named_modules())
        for name, target in block.named_modules():
            source = mine[name]  # both trees are laid out by _body and _shortcut
            if isinstance(source, ElasticConv2d):
                assert isinstance(target, nn.Conv2d)
                source.copy_to(target)
            elif isinstance(source, ElasticBatchNorm2d):
                assert isinstance(target, nn.BatchNorm2d)
                source.copy_to(target)


class ResNet(PooledClassifier):
    """A static ResNet built from a ``ResNetCfg``.

    He et al., 2016, "Deep Residual Learning for Image Recognition", in the Once-for-All
    ResNet variant (Cai et al., 2020): average-pool + 1x1 conv shortcuts. A single 3x3
    stem, stages of residual blocks, global pooling and a linear classifier. Exposes the
    timm interface: ``forward_features``, ``forward_head``, ``reset_classifier``.

    Args:
        cfg: The network spec, e.g. from ``ResNetElasticSpace.net_cfg``.
    """

    def __init__(self, cfg: ResNetCfg) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        self.conv_stem = _static_conv(cfg.in_channels, cfg.stem_channels, 3, cfg.stem_stride)
        self.bn1 = nn.BatchNorm2d(cfg.stem_channels)
        self.act1 = nn.ReLU()
        self.blocks = nn.Sequential(
            *(nn.Sequential(*(ResBlock(block) for block in stage)) for stage in cfg.stages)
        )
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier: nn.Module = nn.Linear(cfg.last_channels, cfg.num_classes)

    @property
    def num_features(self) -> int:
        """The width of the pooled features that enter the classifier (pruning may change it)."""
        norms = [m for m in self.blocks.modules() if isinstance(m, nn.BatchNorm2d)]
        return int((norms[-1] if norms else self.bn1).num_features)

    def forward_features(self, x: Tensor) -> Tensor:
        """Returns the feature map before pooling, (B, last_channels, H', W')."""
        x = self.act1(self.bn1(self.conv_stem(x)))  # (B, stem, H / stem_stride, W / stem_stride)
        x = self.blocks(x)
        return x

