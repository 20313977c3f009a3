"""An Once-for-All style MobileNetV3 search space with elastic depth, kernel and expansion.

Howard et al., 2019, "Searching for MobileNetV3" (the block, squeeze-excite and hard-swish
design) and Cai et al., 2020, "Once-for-All: Train One Network and Specialize it for
Efficient Deployment" (the elastic supernet). Each stage chooses its depth; each block
chooses its depthwise kernel size and its expansion ratio. Stage widths are fixed.

Example:
    >>> import torch
    >>> from search_spaces import get_search_space
    >>> space = get_search_space("mobilenet_elastic")
    >>> supernet = space.build_supernet(num_classes=10, in_channels=1).eval()
    >>> subnet = supernet.extract(space.min_arch()).eval()
    >>> subnet(torch.zeros(2, 1, 16, 16)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Literal, cast

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from torch import Tensor, nn

from search_spaces._arch import Arch, ArchValue
from search_spaces._base import SearchSpace, Supernet
from search_spaces._elastic import make_divisible
from search_spaces._layers import PooledClassifier
from search_spaces._mobilenet_builder import (
    BlockCfg,
    ElasticInvertedResidual,
    InvertedResidual,
    MobileNetV3,
    MobileNetV3Cfg,
)
from search_spaces._options import check_choice_values, check_one_per_stage
from search_spaces._registry import register_search_space
from search_spaces._staged import staged_features

__all__ = [
    "ElasticMobileNetV3",
    "MobileNetElasticOptions",
    "MobileNetElasticSpace",
    "mobilenet_elastic",
]

# Squeeze-excite bottleneck: a quarter of the expanded width, rounded to a multiple of 8
# (Howard et al., 2019, Sec. 5.3).
SE_RATIO = 0.25
SE_DIVISOR = 8


class MobileNetElasticOptions(BaseModel):
    """Options of the ``mobilenet_elastic`` search space.

    The defaults suit small inputs such as 16x16 grey digits: a stride-1 stem and four
    stages that reduce 16x16 to 4x4.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    stem_channels: PositiveInt = Field(default=16, description="Output channels of the 3x3 stem.")
    stem_stride: PositiveInt = Field(
        default=1, description="Stride of the stem (2 for large inputs)."
    )
    stage_channels: tuple[PositiveInt, ...] = Field(
        default=(16, 24, 32, 48), description="Output channels of each stage."
    )
    stage_strides: tuple[PositiveInt, ...] = Field(
        default=(1, 2, 2, 1), description="Stride of the first block of each stage."
    )
    use_se: tuple[bool, ...] = Field(
        default=(False, False, True, True),
        description="Whether each stage's blocks use squeeze-excite.",
    )
    activations: tuple[Literal["relu", "relu6", "hardswish", "silu"], ...] = Field(
        default=("relu", "relu", "hardswish", "hardswish"), description="Activation of each stage."
    )
    depths: tuple[PositiveInt, ...] = Field(
        default=(1, 2, 3), description="Allowed numbers of blocks per stage, increasing."
    )
    kernel_sizes: tuple[PositiveInt, ...] = Field(
        default=(3, 5), description="Allowed depthwise kernel sizes, odd and increasing."
    )
    expand_ratios: tuple[PositiveInt, ...] = Field(
        default=(2, 3, 4), description="Allowed expansion ratios of a block, increasing."
    )
    head_channels: PositiveInt = Field(
        default=128, description="Output channels of the 1x1 head conv."
    )
    dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout before the classifier."
    )
    kernel_transform: bool = Field(
        default=False,
        description="Supernet only: each smaller depthwise kernel is a learned transform of "
        "the larger one's centre (Once-for-All's kernel transformation matrices) instead of "
        "the same weights. Extracted subnets are plain convolutions either way.",
    )
    last_depth_heads: bool = Field(
        default=False,
        description="Supernet only: one head (1x1 conv, BatchNorm and classifier) per depth "
        "of the last stage instead of one shared by all; a subnet takes the head of its "
        "last stage's depth. Extracted subnets are the same networks either way.",
    )
    last_depth_stages: bool = Field(
        default=False,
        description="Supernet only: one copy of the last stage's blocks per depth of that "
        "stage except the largest (a few-shot split on the last stage's depth), each "
        "starting as the shared blocks do; a subnet runs the copy of its last stage's depth. "
        "Extracted subnets are the same networks either way.",
    )

    @field_validator("stage_channels", "depths", "kernel_sizes", "expand_ratios")
    @classmethod
    def _non_empty_increasing(
        cls, value: tuple[int, ...], info: ValidationInfo
    ) -> tuple[int, ...]:
        field = str(info.field_name)
        check_choice_values(value, field, increasing=field != "stage_channels")
        return value

    @field_validator("kernel_sizes")
    @classmethod
    def _odd_kernels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(k % 2 == 0 for k in value):
            raise ValueError(f"kernel_sizes must all be odd, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _one_entry_per_stage(self) -> MobileNetElasticOptions:
        check_one_per_stage(len(self.stage_channels), {
            field: len(getattr(self, field)) for field in ("stage_strides", "use_se", "activations")
        })
        return self


class MobileNetElasticSpace(SearchSpace):
    """The elastic MobileNetV3 space: flat categorical choices per stage and per block.

    Choices: ``d{s}`` is the depth of stage ``s``; ``k{s}_{b}`` and ``e{s}_{b}`` are the
    kernel size and expansion ratio of block ``b`` of stage ``s``, for every block up to
    the largest depth. The expanded width of a block is ``in_channels * e``.

    Args:
        options: The space's options; the defaults when None.
    """

    name = "mobilenet_elastic"
    supernet_only_options = frozenset(
        {"kernel_transform", "last_depth_heads", "last_depth_stages"}
    )

    def __init__(self, options: MobileNetElasticOptions | None = None) -> None:
        self.options = options if options is not None else MobileNetElasticOptions()
        self.num_stages = len(self.options.stage_channels)
        self.max_depth = max(self.options.depths)
        choices: dict[str, tuple[ArchValue, ...]] = {}
        for s in range(self.num_stages):
            choices[f"d{s}"] = self.options.depths
            for b in range(self.max_depth):
                choices[f"k{s}_{b}"] = self.options.kernel_sizes
                choices[f"e{s}_{b}"] = self.options.expand_ratios
        self._choices = choices

    def choices(self) -> dict[str, tuple[ArchValue, ...]]:
        return dict(self._choices)

    def decode(self, params: Mapping[str, ArchValue]) -> Arch:
        """Returns the canonical arch: blocks beyond a stage's depth get the first values.

        Args:
            params: One value per choice, e.g. suggested by a sampler.

        Returns:
            The arch; archs that run the same network are equal.

        Raises:
            SearchSpaceError: a choice is missing, unknown, or has a value not allowed.
        """
        values = self.canonical_values(params)
        for s in range(self.num_stages):
            for b in range(int(values[f"d{s}"]), self.max_depth):
                values[f"k{s}_{b}"] = self.options.kernel_sizes[0]
                values[f"e{s}_{b}"] = self.options.expand_ratios[0]
        return Arch(values)

    def features(self, params: Mapping[str, ArchValue]) -> list[float]:
        """Returns the share of blocks that run and the mean per-block choices ("e", "k") of
        the running blocks, per stage and overall (see ``staged_features``).

        Raises:
            SearchSpaceError: ``params`` is not an arch of this space.
        """
        return staged_features(self.decode(params), self.num_stages, self.max_depth, ("e", "k"))

    def num_archs(self) -> int:
        """Returns the exact number of distinct archs (distinct networks) in the space."""
        per_block = len(self.options.kernel_sizes) * len(self.options.expand_ratios)
        per_stage = sum(per_block**depth for depth in self.options.depths)
        return int(per_stage**self.num_stages)

    def describe(self) -> str:
        o = self.options
        stages = ", ".join(
            f"{c}ch/s{st}{'/se' if se else ''}/{act}"
            for c, st, se, act in zip(o.stage_channels, o.stage_strides, o.use_se, o.activations)
        )
        return (
            f"Elastic MobileNetV3 (Once-for-All style): a {o.stem_channels}-channel stem "
            f"(stride {o.stem_stride}), {self.num_stages} stages [{stages}] and a "
            f"{o.head_channels}-channel head. Each stage chooses its depth from "
            f"{list(o.depths)}; each block chooses its kernel size from {list(o.kernel_sizes)} "
            f"and its expansion ratio from {list(o.expand_ratios)}. {len(self._choices)} flat "
            f"choices; {self.num_archs():,} distinct architectures."
        )

    def summarize(self, arch: Arch) -> str:
        """Returns a compact form: per stage, ``d<depth>:`` then ``k<kernel>e<expand>`` per block.

        Example: ``d2:k5e4,k3e2 | d1:k3e3 | ...``
        """
        stages = []
        for s in range(len(self.options.stage_channels)):
            depth = int(arch[f"d{s}"])
            blocks = ",".join(f"k{arch[f'k{s}_{b}']}e{arch[f'e{s}_{b}']}" for b in range(depth))
            stages.append(f"d{depth}:{blocks}")
        return " | ".join(stages)

    def layout(self, arch: Arch) -> list[tuple[str, list[str]]]:
        """Returns one row per stage, labelled with its depth, width and stride, and one
        ``k<kernel> e<expand>`` cell per active block."""
        o = self.options
        rows = []
        for s, (channels, stride) in enumerate(zip(o.stage_channels, o.stage_strides)):
            depth = int(arch[f"d{s}"])
            label = f"stage {s}: depth {depth}, {channels} ch, stride {stride}"
            rows.append((label, [f"k{arch[f'k{s}_{b}']} e{arch[f'e{s}_{b}']}" for b in range(depth)]))
        return rows

    def se_channels(self, mid_channels: int) -> int:
        """Returns the squeeze-excite bottleneck width for an expanded width."""
        return make_divisible(mid_channels * SE_RATIO, SE_DIVISOR)

    def net_cfg(
        self, arch: Mapping[str, ArchValue], *, num_classes: int, in_channels: int
    ) -> MobileNetV3Cfg:
        """Returns the typed spec of the static network that ``arch`` selects.

        Args:
            arch: An arch of this space (or params that decode to one).
            num_classes: Classifier outputs.
            in_channels: Input image channels.

        Returns:
            The frozen spec that ``MobileNetV3`` is built from; equal archs give equal specs.

        Raises:
            SearchSpaceError: ``arch`` does not belong to this space.
        """
        arch = self.decode(arch)
        o = self.options
        stages: list[tuple[BlockCfg, ...]] = []
        channels = o.stem_channels
        for s, out_channels in enumerate(o.stage_channels):
            blocks = []
            for b in range(int(arch[f"d{s}"])):
                mid = channels * int(arch[f"e{s}_{b}"])
                blocks.append(
                    BlockCfg(
                        in_channels=channels,
                        out_channels=out_channels,
                        mid_channels=mid,
                        kernel_size=int(arch[f"k{s}_{b}"]),
                        stride=o.stage_strides[s] if b == 0 else 1,
                        se_channels=self.se_channels(mid) if o.use_se[s] else 0,
                        act=o.activations[s],
                    )
                )
                channels = out_channels
            stages.append(tuple(blocks))
        return MobileNetV3Cfg(
            in_channels=in_channels,
            num_classes=num_classes,
            stem_channels=o.stem_channels,
            stem_stride=o.stem_stride,
            stages=tuple(stages),
            head_channels=o.head_channels,
            dropout=o.dropout,
        )

    def build_supernet(self, num_classes: int, in_channels: int) -> ElasticMobileNetV3:
        return ElasticMobileNetV3(self, num_classes=num_classes, in_channels=in_channels)


class ElasticMobileNetV3(PooledClassifier, Supernet):
    """The weight-sharing supernet of a ``MobileNetElasticSpace``; starts at the max arch.

    Its stem is shared as is, and so are the head and classifier unless the space's
    ``last_depth_heads`` gives each depth of the last stage its own; the last stage's blocks
    are shared by its depths unless ``last_depth_stages`` gives each depth a copy of its
    own. Every block holds the weights of its largest configuration. ``forward`` runs the
    active subnet, and ``extract`` copies a subnet's weights into a static ``MobileNetV3``.

    Args:
        space: The search space the supernet belongs to.
        num_classes: Classifier outputs.
        in_channels: Input image channels.
    """

    def __init__(
        self, space: MobileNetElasticSpace, *, num_classes: int, in_channels: int
    ) -> None:
        super().__init__()
        self.space = space
        self.num_classes = num_classes
        self.in_channels = in_channels
        o = space.options
        max_cfg = space.net_cfg(space.max_arch(), num_classes=num_classes, in_channels=in_channels)
        self.conv_stem = nn.Conv2d(in_channels, o.stem_channels, 3, o.stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(o.stem_channels)
        self.act1 = nn.Hardswish()
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                ElasticInvertedResidual(
                    in_channels=block.in_channels,
                    out_channels=block.out_channels,
                    stride=block.stride,
                    kernel_sizes=o.kernel_sizes,
                    max_mid_channels=block.mid_channels,
                    max_se_channels=block.se_channels,
                    act=block.act,
                    kernel_transform=o.kernel_transform,
                )
                for block in stage
            )
            for stage in max_cfg.stages
        )
        self.conv_head = nn.Conv2d(max_cfg.last_channels, o.head_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(o.head_channels)
        self.act2 = nn.Hardswish()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(o.dropout)
        self.classifier = nn.Linear(o.head_channels, num_classes)
        nn.init.kaiming_normal_(self.conv_stem.weight, mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_normal_(self.conv_head.weight, mode="fan_out", nonlinearity="relu")
        # built last, so the shared layers start as they would without them
        self.depth_heads = nn.ModuleDict()
        if o.last_depth_heads:
            for depth in o.depths[:-1]:
                conv_head = nn.Conv2d(max_cfg.last_channels, o.head_channels, 1, bias=False)
                nn.init.kaiming_normal_(conv_head.weight, mode="fan_out", nonlinearity="relu")
                self.depth_heads[str(depth)] = nn.ModuleDict({
                    "conv_head": conv_head,
                    "bn2": nn.BatchNorm2d(o.head_channels),
                    "classifier": nn.Linear(o.head_channels, num_classes),
                })
        # copies of the shared blocks, made after every other layer: no random numbers drawn
        self.depth_stages = nn.ModuleDict()
        if o.last_depth_stages:
            shared = list(cast(nn.ModuleList, self.blocks[-1]))
            for depth in o.depths[:-1]:
                self.depth_stages[str(depth)] = copy.deepcopy(nn.ModuleList(shared[:depth]))
        self._depths: list[int] = []
        self.active_arch = space.max_arch()
        self.set_active(self.active_arch)

    def stage_blocks(self, depths: list[int]) -> list[list[ElasticInvertedResidual]]:
        """Returns the blocks a subnet with these stage depths runs, stage by stage: all of
        each stage's shared blocks (the subnet runs the first ``depth``), except that the
        last stage is the copy of its depth where ``last_depth_stages`` made one."""
        stages = list(self.blocks)
        if str(depths[-1]) in self.depth_stages:
            stages[-1] = self.depth_stages[str(depths[-1])]
        return [
            [cast(ElasticInvertedResidual, b) for b in cast(nn.ModuleList, stage)]
            for stage in stages
        ]

    def set_active(self, arch: Mapping[str, ArchValue]) -> None:
        cfg = self.space.net_cfg(arch, num_classes=self.num_classes, in_channels=self.in_channels)
        self._depths = [len(stage) for stage in cfg.stages]
        for blocks, stage in zip(self.stage_blocks(self._depths), cfg.stages):
            for block, block_cfg in zip(blocks, stage):
                block.set_active(block_cfg)
        self.active_arch = self.space.decode(arch)

    def head_layers(self, last_depth: int) -> tuple[nn.Module, nn.Module, nn.Module]:
        """Returns the 1x1 head conv, its BatchNorm and the classifier that subnets whose last
        stage has ``last_depth`` blocks use: their own with ``last_depth_heads``, else the
        shared ones (which the largest depth always uses)."""
        if str(last_depth) in self.depth_heads:
            head = cast(nn.ModuleDict, self.depth_heads[str(last_depth)])
            return head["conv_head"], head["bn2"], head["classifier"]
        return self.conv_head, self.bn2, self.classifier

    def active_classifier(self) -> nn.Module:
        """Returns the classifier of the active subnet's head (see ``head_layers``)."""
        return self.head_layers(self._depths[-1])[2]

    def residual_branch_norms(self) -> list[nn.BatchNorm2d]:
        """Returns the last BatchNorm of every block with a skip connection."""
        return [
            m.bn3 for m in self.modules() if isinstance(m, ElasticInvertedResidual) and m.has_skip
        ]

    def forward_features(self, x: Tensor) -> Tensor:
        """Returns the active subnet's feature map before pooling."""
        x = self.act1(self.bn1(self.conv_stem(x)))
        for blocks, depth in zip(self.stage_blocks(self._depths), self._depths):
            for block in blocks[:depth]:
                x = block(x)
        conv_head, bn2, _ = self.head_layers(self._depths[-1])
        x = self.act2(bn2(conv_head(x)))  # (B, head_channels, H', W')
        return x

    def extract(self, arch: Mapping[str, ArchValue]) -> MobileNetV3:
        """Returns a static ``MobileNetV3`` with ``arch``'s weights copied out of the supernet.

        The copy has the supernet's device, dtype and train/eval mode; the active arch is
        left unchanged.

        Raises:
            SearchSpaceError: ``arch`` does not belong to this supernet's space.
        """
        cfg = self.space.net_cfg(arch, num_classes=self.num_classes, in_channels=self.in_channels)
        weight = self.conv_stem.weight
        net = MobileNetV3(cfg).to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            for name in ("conv_stem", "bn1"):
                getattr(net, name).load_state_dict(getattr(self, name).state_dict())
            head = self.head_layers(len(cfg.stages[-1]))
            for name, layer in zip(("conv_head", "bn2", "classifier"), head):
                getattr(net, name).load_state_dict(layer.state_dict())
            depths = [len(stage) for stage in cfg.stages]
            for blocks, static_blocks in zip(self.stage_blocks(depths), net.blocks):
                for block, static_block in zip(blocks, cast(nn.Sequential, static_blocks)):
                    block.copy_to(cast(InvertedResidual, static_block))
        return net.train(self.training)


@register_search_space(options=MobileNetElasticOptions)
def mobilenet_elastic(options: MobileNetElasticOptions | None = None) -> MobileNetElasticSpace:
    """Elastic MobileNetV3 (Once-for-All style); see ``MobileNetElasticOptions``."""
    return MobileNetElasticSpace(options)
