"""A Once-for-All style ResNet search space with elastic depth, width and expansion.

He et al., 2016, "Deep Residual Learning for Image Recognition" (the blocks) and Cai et al.,
2020, "Once-for-All: Train One Network and Specialize it for Efficient Deployment" (the
elastic ResNet supernet: elastic depth, width multiplier and bottleneck expand ratio).
Dense 3x3 and 1x1 convolutions with BatchNorm and ReLU only: no depthwise convolutions,
hard-swish or squeeze-excite, so the networks run well on INT8 integer kernels.

Example:
    >>> import torch
    >>> from search_spaces import get_search_space
    >>> space = get_search_space("resnet_elastic")
    >>> supernet = space.build_supernet(num_classes=10, in_channels=1).eval()
    >>> subnet = supernet.extract(space.min_arch()).eval()
    >>> subnet(torch.zeros(2, 1, 16, 16)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from torch import Tensor, nn

from search_spaces._arch import Arch, ArchValue
from search_spaces._base import SearchSpace, Supernet
from search_spaces._elastic import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticLinear,
    make_divisible,
)
from search_spaces._layers import PooledClassifier
from search_spaces._options import check_choice_values, check_one_per_stage
from search_spaces._registry import register_search_space
from search_spaces._staged import staged_features
from search_spaces._resnet_builder import (
    BlockKind,
    ElasticResBlock,
    ResBlock,
    ResBlockCfg,
    ResNet,
    ResNetCfg,
)

__all__ = [
    "ElasticResNet",
    "ResNetElasticOptions",
    "ResNetElasticSpace",
    "resnet_elastic",
]

# Every width is rounded to a multiple of 8, as in OFA-ResNet (MyNetwork.CHANNEL_DIVISIBLE).
CHANNEL_DIVISOR = 8


@dataclass(frozen=True)
class BlockDefaults:
    """The defaults of the options that depend on the block kind."""

    stage_channels: tuple[int, ...]
    expand_ratios: tuple[float, ...]


# Options whose defaults depend on the block kind; used when the options leave them out.
# A basic block's first conv keeps between half and all of the output width (1.0 is the
# plain ResNet basic block). A bottleneck's middle width is a fraction of its output width
# (OFA-ResNet uses 0.2, 0.25 and 0.35), so its stages are wider. Basic is the default: on
# 64x64 inputs and one CPU thread (onnxruntime, AVX-512 VNNI) the largest basic subnet takes
# about 3.5 ms in fp32, and static INT8 QDQ runs subnets 1.9x (smallest) to 3.4x (largest)
# faster; bottleneck subnets gain only 1.45x to 2.6x.
BLOCK_DEFAULTS: dict[str, BlockDefaults] = {
    "basic": BlockDefaults(stage_channels=(64, 96, 128, 160), expand_ratios=(0.5, 0.75, 1.0)),
    "bottleneck": BlockDefaults(stage_channels=(128, 256, 384, 512), expand_ratios=(0.25, 0.35)),
}


class ResNetElasticOptions(BaseModel):
    """Options of the ``resnet_elastic`` search space.

    The defaults suit 64x64 RGB inputs on a CPU: basic blocks (dense 3x3 convolutions,
    which INT8 kernels speed up the most), a stride-2 stem and four stages that reduce
    64x64 to 4x4. They also run on 16x16 inputs (down to 1x1). ``stage_channels`` and
    ``expand_ratios`` default per block kind (see ``BLOCK_DEFAULTS``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    block: BlockKind = Field(
        default="basic",
        description="Residual block: 'basic' (3x3, 3x3) or 'bottleneck' (1x1, 3x3, 1x1).",
    )
    stem_channels: PositiveInt = Field(
        default=64, description="Output channels of the 3x3 stem at width multiplier 1."
    )
    stem_stride: PositiveInt = Field(default=2, description="Stride of the stem.")
    stage_channels: tuple[PositiveInt, ...] = Field(
        default=BLOCK_DEFAULTS["basic"].stage_channels,
        description=(
            "Output channels of each stage at width multiplier 1. Defaults to "
            "(64, 96, 128, 160) for basic and (128, 256, 384, 512) for bottleneck blocks."
        ),
    )
    stage_strides: tuple[PositiveInt, ...] = Field(
        default=(1, 2, 2, 2), description="Stride of the first block of each stage."
    )
    depths: tuple[PositiveInt, ...] = Field(
        default=(1, 2, 3), description="Allowed numbers of blocks per stage, increasing."
    )
    width_mults: tuple[PositiveFloat, ...] = Field(
        default=(0.65, 0.8, 1.0),
        description="Allowed global width multipliers of the stem and every stage, increasing.",
    )
    expand_ratios: tuple[PositiveFloat, ...] = Field(
        default=BLOCK_DEFAULTS["basic"].expand_ratios,
        description=(
            "Allowed expand ratios of a block, increasing: its middle width over its output "
            "width. Defaults to (0.5, 0.75, 1.0) for basic and (0.25, 0.35) for bottleneck "
            "blocks."
        ),
    )
    dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout before the classifier."
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults_follow_the_block(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        block = data.get("block", "basic")
        if not (isinstance(block, str) and block in BLOCK_DEFAULTS):
            return data  # the field validator reports the bad block
        return {**asdict(BLOCK_DEFAULTS[block]), **data}

    @field_validator("stage_channels", "depths", "width_mults", "expand_ratios")
    @classmethod
    def _non_empty_increasing(
        cls, value: tuple[float, ...], info: ValidationInfo
    ) -> tuple[float, ...]:
        field = str(info.field_name)
        check_choice_values(value, field, increasing=field != "stage_channels")
        return value

    @model_validator(mode="after")
    def _one_stride_per_stage(self) -> ResNetElasticOptions:
        check_one_per_stage(len(self.stage_channels), {"stage_strides": len(self.stage_strides)})
        return self


class ResNetElasticSpace(SearchSpace):
    """The elastic ResNet space: a global width choice, then choices per stage and block.

    Choices: ``w`` is the width multiplier of the stem and every stage; ``d{s}`` is the
    depth of stage ``s``; ``e{s}_{b}`` is the expand ratio of block ``b`` of stage ``s``,
    for every block up to the largest depth. A block's output width is
    ``make_divisible(stage_channels[s] * w)`` and its middle width (the 3x3 conv of a
    bottleneck, the first conv's output of a basic block) is
    ``make_divisible(output_width * e)``, both multiples of 8.

    Args:
        options: The space's options; the defaults when None.
    """

    name = "resnet_elastic"

    def __init__(self, options: ResNetElasticOptions | None = None) -> None:
        self.options = options if options is not None else ResNetElasticOptions()
        o = self.options
        self.num_stages = len(o.stage_channels)
        self.max_depth = max(o.depths)
        choices: dict[str, tuple[ArchValue, ...]] = {"w": o.width_mults}
        for s in range(self.num_stages):
            choices[f"d{s}"] = o.depths
            for b in range(self.max_depth):
                choices[f"e{s}_{b}"] = o.expand_ratios
        self._choices = choices

    def choices(self) -> dict[str, tuple[ArchValue, ...]]:
        return dict(self._choices)

    def decode(self, params: Mapping[str, ArchValue]) -> Arch:
        """Returns the canonical arch: blocks beyond a stage's depth get the first ratio.

        Each value is replaced by the equal allowed value, so ``numpy`` numbers and ints
        given for floats (``1`` for ``1.0``) decode to the same arch.

        Args:
            params: One value per choice, e.g. suggested by a sampler.

        Returns:
            The arch; archs that differ only in blocks beyond the depth are equal.

        Raises:
            SearchSpaceError: a choice is missing, unknown, or has a value not allowed.
        """
        values = self.canonical_values(params)
        for s in range(self.num_stages):
            for b in range(int(values[f"d{s}"]), self.max_depth):
                values[f"e{s}_{b}"] = self.options.expand_ratios[0]
        return Arch(values)

    def features(self, params: Mapping[str, ArchValue]) -> list[float]:
        """Returns the share of blocks that run and the mean per-block choices ("e",) of
        the running blocks, per stage and overall (see ``staged_features``).

        Raises:
            SearchSpaceError: ``params`` is not an arch of this space.
        """
        return staged_features(self.decode(params), self.num_stages, self.max_depth, ("e",))

    def num_archs(self) -> int:
        """Returns the exact number of distinct archs in the space.

        Distinct archs are distinct networks unless rounding to multiples of 8 makes two
        widths equal (very narrow stages, or close multipliers or ratios).
        """
        per_stage = sum(len(self.options.expand_ratios) ** d for d in self.options.depths)
        return len(self.options.width_mults) * int(per_stage**self.num_stages)

    def describe(self) -> str:
        o = self.options
        stages = ", ".join(f"{c}ch/s{st}" for c, st in zip(o.stage_channels, o.stage_strides))
        return (
            f"Elastic ResNet (Once-for-All style) of {o.block} blocks: a {o.stem_channels}-"
            f"channel 3x3 stem (stride {o.stem_stride}) and {self.num_stages} stages "
            f"[{stages}], widths scaled by a global multiplier from {list(o.width_mults)}. "
            f"Each stage chooses its depth from {list(o.depths)}; each block chooses its "
            f"expand ratio from {list(o.expand_ratios)}. {len(self._choices)} flat choices; "
            f"{self.num_archs():,} distinct architectures."
        )

    def summarize(self, arch: Arch) -> str:
        """Returns a compact form: the width, then per stage ``d<depth>:`` and one
        ``e<ratio>`` per block.

        Example: ``w0.8 | d2:e0.35,e0.25 | d1:e0.25 | ...``
        """
        stages = [f"w{arch['w']}"]
        for s in range(self.num_stages):
            depth = int(arch[f"d{s}"])
            blocks = ",".join(f"e{arch[f'e{s}_{b}']}" for b in range(depth))
            stages.append(f"d{depth}:{blocks}")
        return " | ".join(stages)

    def layout(self, arch: Arch) -> list[tuple[str, list[str]]]:
        """Returns a stem row with the width multiplier, then one row per stage, labelled
        with its depth, width and stride, and one ``e<ratio> (<mid> mid)`` cell per block."""
        cfg = self.net_cfg(arch, num_classes=1, in_channels=1)
        o = self.options
        rows = [
            (
                f"stem: {cfg.stem_channels} ch, stride {o.stem_stride}",
                [f"w={arch['w']}", o.block],
            )
        ]
        for s, stage in enumerate(cfg.stages):
            label = (
                f"stage {s}: depth {len(stage)}, {stage[0].out_channels} ch, "
                f"stride {o.stage_strides[s]}"
            )
            cells = [
                f"e{arch[f'e{s}_{b}']} ({blk.mid_channels} mid)" for b, blk in enumerate(stage)
            ]
            rows.append((label, cells))
        return rows

    def width(self, channels: int, width_mult: float) -> int:
        """Returns ``channels`` scaled by ``width_mult``, rounded to a multiple of 8."""
        return make_divisible(channels * width_mult, CHANNEL_DIVISOR)

    def net_cfg(
        self, arch: Mapping[str, ArchValue], *, num_classes: int, in_channels: int
    ) -> ResNetCfg:
        """Returns the typed spec of the static network that ``arch`` selects.

        The shortcut of a block is a conv exactly when its stride is not 1 or its input
        and output widths differ at width multiplier 1, so that the kind of every shortcut
        is the same in every subnet (as in OFA-ResNet).

        Args:
            arch: An arch of this space (or params that decode to one).
            num_classes: Classifier outputs.
            in_channels: Input image channels.

        Returns:
            The frozen spec that ``ResNet`` is built from; equal archs give equal specs.

        Raises:
            SearchSpaceError: ``arch`` does not belong to this space.
        """
        arch = self.decode(arch)
        o = self.options
        w = float(arch["w"])
        stem_channels = self.width(o.stem_channels, w)
        channels, base = stem_channels, o.stem_channels  # actual and unscaled input width
        stages: list[tuple[ResBlockCfg, ...]] = []
        for s, base_out in enumerate(o.stage_channels):
            out_channels = self.width(base_out, w)
            blocks = []
            for b in range(int(arch[f"d{s}"])):
                stride = o.stage_strides[s] if b == 0 else 1
                blocks.append(
                    ResBlockCfg(
                        kind=o.block,
                        in_channels=channels,
                        out_channels=out_channels,
                        mid_channels=self.width(out_channels, float(arch[f"e{s}_{b}"])),
                        stride=stride,
                        downsample=stride != 1 or base != base_out,
                    )
                )
                channels, base = out_channels, base_out
            stages.append(tuple(blocks))
        return ResNetCfg(
            in_channels=in_channels,
            num_classes=num_classes,
            stem_channels=stem_channels,
            stem_stride=o.stem_stride,
            stages=tuple(stages),
            dropout=o.dropout,
        )

    def build_supernet(self, num_classes: int, in_channels: int) -> ElasticResNet:
        return ElasticResNet(self, num_classes=num_classes, in_channels=in_channels)


class ElasticResNet(PooledClassifier, Supernet):
    """The weight-sharing supernet of a ``ResNetElasticSpace``; starts at the max arch.

    Every layer holds the weights of the largest subnet and runs the first channels of
    them: the stem and every block follow the width multiplier, the middle of every block
    its expand ratio, and the classifier reads the first features. ``forward`` runs the
    active subnet, and ``extract`` copies a subnet's weights into a static ``ResNet``.

    Args:
        space: The search space the supernet belongs to.
        num_classes: Classifier outputs.
        in_channels: Input image channels.
    """

    def __init__(self, space: ResNetElasticSpace, *, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.space = space
        self.num_classes = num_classes
        self.in_channels = in_channels
        o = space.options
        # Widths grow with the multiplier and the ratios, so the max arch holds every subnet.
        max_cfg = space.net_cfg(space.max_arch(), num_classes=num_classes, in_channels=in_channels)
        self.conv_stem = ElasticConv2d(in_channels, max_cfg.stem_channels, 3, o.stem_stride)
        self.bn1 = ElasticBatchNorm2d(max_cfg.stem_channels)
        self.act1 = nn.ReLU()
        self.blocks = nn.ModuleList(
            nn.ModuleList(ElasticResBlock(block) for block in stage) for stage in max_cfg.stages
        )
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(o.dropout)
        self.classifier = ElasticLinear(max_cfg.last_channels, num_classes)
        self._depths: list[int] = []
        self.active_arch = space.max_arch()
        self.set_active(self.active_arch)

    def _stages(self) -> list[list[ElasticResBlock]]:
        return [
            [cast(ElasticResBlock, b) for b in cast(nn.ModuleList, stage)] for stage in self.blocks
        ]

    def set_active(self, arch: Mapping[str, ArchValue]) -> None:
        cfg = self.space.net_cfg(arch, num_classes=self.num_classes, in_channels=self.in_channels)
        self.conv_stem.active_out_channels = cfg.stem_channels
        for blocks, stage in zip(self._stages(), cfg.stages):
            for block, block_cfg in zip(blocks, stage):
                block.set_active(block_cfg)
        self._depths = [len(stage) for stage in cfg.stages]
        self.active_arch = self.space.decode(arch)

    def residual_branch_norms(self) -> list[nn.BatchNorm2d]:
        """Returns the last BatchNorm of every block's residual branch (every block's output
        is its branch plus its shortcut, identity or conv)."""
        return [cast(nn.BatchNorm2d, block.body[-1])
                for blocks in self._stages() for block in blocks]

    def forward_features(self, x: Tensor) -> Tensor:
        """Returns the active subnet's feature map before pooling."""
        x = self.act1(self.bn1(self.conv_stem(x)))  # (B, stem, H / stem_stride, W / stem_stride)
        for blocks, depth in zip(self._stages(), self._depths):
            for block in blocks[:depth]:
                x = block(x)
        return x  # (B, last_channels, H', W')

    def extract(self, arch: Mapping[str, ArchValue]) -> ResNet:
        """Returns a static ``ResNet`` with ``arch``'s weights copied out of the supernet.

        The copy has the supernet's device, dtype and train/eval mode; the active arch is
        left unchanged.

        Raises:
            SearchSpaceError: ``arch`` does not belong to this supernet's space.
        """
        cfg = self.space.net_cfg(arch, num_classes=self.num_classes, in_channels=self.in_channels)
        weight = self.conv_stem.weight
        net = ResNet(cfg).to(device=weight.device, dtype=weight.dtype)
        self.conv_stem.copy_to(cast(nn.Conv2d, net.conv_stem))
        self.bn1.copy_to(net.bn1)
        cast(ElasticLinear, self.classifier).copy_to(cast(nn.Linear, net.classifier))
        for blocks, static_blocks in zip(self._stages(), net.blocks):
            for block, static_block in zip(blocks, cast(nn.Sequential, static_blocks)):
                block.copy_to(cast(ResBlock, static_block))
        return net.train(self.training)


@register_search_space(options=ResNetElasticOptions)
def resnet_elastic(options: ResNetElasticOptions | None = None) -> ResNetElasticSpace:
    """Elastic ResNet (Once-for-All style); see ``ResNetElasticOptions``."""
    return ResNetElasticSpace(options)
