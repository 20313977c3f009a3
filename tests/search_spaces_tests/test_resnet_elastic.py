from __future__ import annotations

import random

import numpy as np
import onnxruntime as ort
import pydantic
import pytest
import torch
from torch import nn

from compress import MacsTarget, export_onnx, prune
from evaluators import count_macs
from search_spaces import Arch, ResNetElasticOptions, SearchSpaceError, get_search_space
from search_spaces._resnet_builder import ElasticResBlock, ResBlockCfg, ResNet
from search_spaces.resnet_elastic import BLOCK_DEFAULTS, ElasticResNet, ResNetElasticSpace
from tests.search_spaces_tests.conftest import deep_and_shallow_outputs

RGB_64 = (2, 3, 64, 64)
# Small enough to enumerate, with widths that stay distinct after rounding to multiples of 8.
TINY = {
    "stem_channels": 16,
    "stage_channels": [32, 64],
    "stage_strides": [1, 2],
    "depths": [1, 2],
    "width_mults": [0.5, 1.0],
    "expand_ratios": [0.5, 1.0],
}


def _space(**options: object) -> ResNetElasticSpace:
    space = get_search_space("resnet_elastic", **options)
    assert isinstance(space, ResNetElasticSpace)
    return space


def _warm_supernet(
    space: ResNetElasticSpace, in_channels: int = 3, size: int = 64
) -> ElasticResNet:
    """Returns an eval-mode supernet with non-trivial BN parameters and running statistics."""
    torch.manual_seed(0)
    supernet = space.build_supernet(10, in_channels)
    with torch.no_grad():
        for module in supernet.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        rng = random.Random(0)
        supernet.train()
        for arch in (space.max_arch(), space.sample(rng), space.sample(rng)):
            supernet.set_active(arch)
            supernet(torch.randn(4, in_channels, size, size) * 2 + 0.5)
    return supernet.eval()


def _archs(space: ResNetElasticSpace, n_random: int) -> list[Arch]:
    rng = random.Random(1)
    return [space.max_arch(), space.min_arch()] + [space.sample(rng) for _ in range(n_random)]


def test_default_choices_are_flat_and_named() -> None:
    space = _space()
    choices = space.choices()
    assert list(choices)[:3] == ["w", "d0", "e0_0"]
    assert len(choices) == 1 + 4 * (1 + 3)
    assert choices["w"] == (0.65, 0.8, 1.0)
    assert choices["d3"] == (1, 2, 3)
    assert choices["e2_2"] == (0.5, 0.75, 1.0)
    assert "e0_3" not in choices and "d4" not in choices
    choices["w"] = (9.0,)  # the caller's copy; the space is unchanged
    assert space.choices()["w"] == (0.65, 0.8, 1.0)


def test_default_space_size_and_description() -> None:
    space = _space()
    assert space.num_archs() == 3 * (3 + 3**2 + 3**3) ** 4 == 6_940_323
    text = space.describe()
    assert "basic blocks" in text
    assert "6,940,323 distinct architectures" in text
    assert "17 flat choices" in text


def test_block_kind_sets_the_defaults_it_needs() -> None:
    basic, bottleneck = ResNetElasticOptions(), ResNetElasticOptions(block="bottleneck")
    assert basic.block == "basic"
    assert basic.stage_channels == BLOCK_DEFAULTS["basic"].stage_channels
    assert basic.expand_ratios == (0.5, 0.75, 1.0)
    assert bottleneck.stage_channels == (128, 256, 384, 512)
    assert bottleneck.expand_ratios == (0.25, 0.35)
    given = ResNetElasticOptions(block="bottleneck", expand_ratios=(0.2, 0.25))
    assert given.expand_ratios == (0.2, 0.25)
    assert given.stage_channels == (128, 256, 384, 512)
    assert ResNetElasticOptions.model_validate(bottleneck.model_dump()) == bottleneck


def test_max_and_min_archs_hold_plain_python_values() -> None:
    space = _space()
    big, small = space.max_arch(), space.min_arch()
    assert big["w"] == 1.0 and big["d1"] == 3 and big["e1_2"] == 1.0
    assert small["w"] == 0.65 and small["d1"] == 1 and small["e1_0"] == 0.5
    assert type(big["w"]) is float and type(big["d1"]) is int and type(big["e0_0"]) is float


def test_inactive_blocks_are_canonicalised() -> None:
    space = _space()
    params = dict(space.max_arch())
    params.update({"d0": 1, "e0_1": 1.0, "e0_2": 0.75})
    other = {**params, "e0_1": 0.5, "e0_2": 1.0}
    a, b = space.decode(params), space.decode(other)
    assert a == b and hash(a) == hash(b) and a.key() == b.key()
    assert a["e0_1"] == 0.5 and a["e0_2"] == 0.5  # the first allowed ratio
    # An active block's choice, and the width, still matter.
    assert space.decode({**params, "e0_0": 0.5}) != space.decode({**params, "e0_0": 1.0})
    assert space.decode({**params, "w": 0.8}) != space.decode(params)


def test_decode_accepts_equal_numbers_and_rejects_bools() -> None:
    space = _space()
    params = dict(space.min_arch())
    arch = space.decode({**params, "w": 1, "d1": np.int64(2), "e1_1": np.float64(0.75)})
    assert arch["w"] == 1.0 and type(arch["w"]) is float
    assert arch["d1"] == 2 and type(arch["d1"]) is int
    assert arch["e1_1"] == 0.75 and type(arch["e1_1"]) is float
    assert arch == space.decode({**params, "w": 1.0, "d1": 2, "e1_1": 0.75})
    with pytest.raises(SearchSpaceError, match=r"'w' must be one of \[0.65, 0.8, 1.0\], got True"):
        space.decode({**params, "w": True})
    with pytest.raises(SearchSpaceError, match=r"choice 'e0_0' must be one of .*, got 0.6"):
        space.decode({**params, "e0_0": 0.6})


def test_enumerate_yields_exactly_num_archs_distinct_networks() -> None:
    space = _space(**TINY)
    assert space.num_archs() == 2 * (2 + 2**2) ** 2 == 72
    archs = list(space.enumerate())
    assert len(archs) == len(set(archs)) == space.num_archs()
    cfgs = {space.net_cfg(a, num_classes=10, in_channels=1) for a in archs}
    assert len(cfgs) == space.num_archs()  # distinct archs are distinct networks here
    with pytest.raises(SearchSpaceError, match="more than the limit of 10"):
        next(space.enumerate(limit=10))


def test_net_cfg_scales_widths_and_keeps_shortcut_kinds() -> None:
    space = _space()
    arch = space.decode({**space.min_arch(), "w": 0.8, "d1": 2, "e1_1": 1.0})
    cfg = space.net_cfg(arch, num_classes=10, in_channels=3)
    assert cfg.stem_channels == 48  # make_divisible(64 * 0.8) = 51.2 -> 48
    assert [len(stage) for stage in cfg.stages] == [1, 2, 1, 1]
    first, second = cfg.stages[1]
    assert (first.in_channels, first.out_channels, first.mid_channels) == (48, 80, 40)
    assert (first.stride, first.downsample) == (2, True)
    assert (second.in_channels, second.mid_channels, second.stride) == (80, 80, 1)
    assert not second.downsample  # same width at multiplier 1: identity shortcut
    # Stem 64 and stage 0 64 at multiplier 1: stage 0's first block has an identity
    # shortcut at every width.
    assert not cfg.stages[0][0].downsample
    assert space.net_cfg(space.max_arch(), num_classes=10, in_channels=3).last_channels == 160


def test_shortcut_kind_follows_the_unscaled_widths() -> None:
    # Stem 60 and stage 0 64 both round to 64 channels at w=1, yet the shortcut stays a
    # conv, as it must be at w=0.65 (40 vs 40) and in the supernet's block.
    space = _space(stem_channels=60)
    supernet = space.build_supernet(10, 3)
    for w in space.choices()["w"]:
        arch = space.decode({**space.max_arch(), "w": w})
        first = space.net_cfg(arch, num_classes=10, in_channels=3).stages[0][0]
        assert first.downsample and first.stride == 1
        supernet.set_active(arch)  # the spec fits the supernet's block at every width
    big = space.net_cfg(space.max_arch(), num_classes=10, in_channels=3).stages[0][0]
    assert big.in_channels == big.out_channels == 64


def test_extracted_nets_are_dense_relu_convnets() -> None:
    for block, kernels in (("basic", [3, 3]), ("bottleneck", [1, 3, 1])):
        space = _space(block=block)
        net = space.build_supernet(10, 3).extract(space.max_arch())
        assert isinstance(net, ResNet) and isinstance(net.classifier, nn.Linear)
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert all(conv.groups == 1 for conv in convs)
        acts = {type(m) for m in net.modules() if not list(m.children())} - {
            nn.Conv2d,
            nn.BatchNorm2d,
            nn.Linear,
            nn.AvgPool2d,
            nn.AdaptiveAvgPool2d,
            nn.Flatten,
            nn.Dropout,
            nn.Identity,
        }
        assert acts == {nn.ReLU}
        body = net.blocks[1][0].body
        assert [m.kernel_size[0] for m in body if isinstance(m, nn.Conv2d)] == kernels


def test_max_subnet_holds_every_supernet_weight() -> None:
    space = _space()
    supernet = space.build_supernet(10, 3)
    count = sum(p.numel() for p in supernet.parameters())
    assert sum(p.numel() for p in supernet.extract(space.max_arch()).parameters()) == count
    small = supernet.extract(space.min_arch())
    assert sum(p.numel() for p in small.parameters()) < count / 8


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_extract_matches_the_supernet_on_rgb_64(block: str) -> None:
    space = _space(block=block)
    supernet = _warm_supernet(space)
    x = torch.randn(*RGB_64)
    for arch in _archs(space, n_random=3):
        supernet.set_active(arch)
        subnet = supernet.extract(arch)
        assert not subnet.training
        with torch.no_grad():
            expected, got = supernet(x), subnet(x)
        assert got.shape == (2, 10)
        assert expected.abs().max() > 0.1  # not a degenerate comparison
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_train_mode_batch_norm_matches_and_updates_the_same_statistics() -> None:
    space = _space(**TINY)
    supernet = _warm_supernet(space, in_channels=1, size=16).train()
    arch = space.decode({**space.max_arch(), "w": 0.5, "d1": 1, "e0_0": 0.5})
    supernet.set_active(arch)
    subnet = supernet.extract(arch)
    assert subnet.training
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(subnet(x), supernet(x), atol=1e-5, rtol=0)
    # Both updated their running statistics alike: a fresh extract equals the subnet.
    again = supernet.extract(arch)
    for (name, a), b in zip(subnet.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


def test_onnx_export_matches_torch_including_odd_sizes() -> None:
    space = _space()
    supernet = _warm_supernet(space)
    for arch, shape in [
        (space.max_arch(), (1, 3, 64, 64)),
        (space.min_arch(), (1, 3, 64, 64)),
        (space.sample(random.Random(5)), (1, 3, 40, 40)),  # 20 -> 10 -> 5 -> 3: ceil pooling
    ]:
        subnet = supernet.extract(arch)
        onnx_bytes = export_onnx(subnet, shape)
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        x = torch.randn(*shape)
        (got,) = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            expected = subnet(x).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_extracted_net_prunes_to_half_the_macs() -> None:
    space = _space()
    supernet = _warm_supernet(space)
    arch = space.decode({n: v[(len(v) - 1) // 2] for n, v in space.choices().items()})
    net = supernet.extract(arch)
    example = torch.zeros(1, 3, 64, 64)
    macs = count_macs(net, example.shape)
    result = prune(net, example, target=MacsTarget(2.0), iterations=2, round_to=8)
    pruned = result.model
    assert count_macs(pruned, example.shape) * 2 <= macs
    assert result.macs_after * 2 <= result.macs_before == macs
    assert pruned(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert isinstance(pruned, ResNet) and isinstance(pruned.classifier, nn.Linear)
    assert pruned.classifier.out_features == 10
    assert pruned.num_features == pruned.classifier.in_features < net.num_features
    assert count_macs(net, example.shape) == macs  # the input model is left untouched


def test_elastic_block_rejects_a_spec_of_another_shape() -> None:
    cfg = ResBlockCfg(
        kind="basic", in_channels=16, out_channels=32, mid_channels=32, stride=2, downsample=True
    )
    block = ElasticResBlock(cfg)
    block.set_active(ResBlockCfg("basic", 8, 16, 8, 2, True))
    assert block(torch.randn(1, 8, 8, 8)).shape == (1, 16, 4, 4)
    with pytest.raises(ValueError, match="does not fit the elastic block"):
        block.set_active(ResBlockCfg("basic", 16, 32, 32, 1, True))
    with pytest.raises(ValueError, match="does not fit the elastic block"):
        block.set_active(ResBlockCfg("basic", 16, 32, 40, 2, True))  # wider than its weights


def test_summarize_and_layout_follow_the_arch() -> None:
    space = _space()
    arch = space.decode({**space.min_arch(), "w": 0.8, "d2": 2, "e2_1": 1.0})
    assert space.summarize(arch) == "w0.8 | d1:e0.5 | d1:e0.5 | d2:e0.5,e1.0 | d1:e0.5"
    rows = space.layout(arch)
    assert rows[0] == ("stem: 48 ch, stride 2", ["w=0.8", "basic"])
    assert rows[3] == ("stage 2: depth 2, 104 ch, stride 2", ["e0.5 (56 mid)", "e1.0 (104 mid)"])
    assert len(rows) == 5


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"stage_strides": [1, 2]}, "", "stage_strides must have one entry per stage"),
        ({"depths": [2, 1]}, "depths", "depths must be strictly increasing, got [2, 1]"),
        ({"width_mults": []}, "width_mults", "width_mults must not be empty"),
        ({"width_mults": [1.0, 0.5]}, "width_mults", "strictly increasing, got [1.0, 0.5]"),
        ({"width_mults": [0.0, 1.0]}, "width_mults.0", "greater than 0"),
        ({"expand_ratios": [0.35, 0.25]}, "expand_ratios", "strictly increasing"),
        ({"stage_channels": [64, 0, 128, 160]}, "stage_channels.1", "greater than 0"),
        ({"block": "wide"}, "block", "'basic' or 'bottleneck'"),
        ({"dropout": 1.0}, "dropout", "less than 1"),
        ({"widths": [1]}, "widths", "Extra inputs are not permitted"),
    ],
)
def test_options_are_validated(options: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        get_search_space("resnet_elastic", **options)
    error = info.value.errors()[0]
    assert ".".join(str(part) for part in error["loc"]) == field
    assert message in error["msg"]


def test_options_are_frozen_and_hashable() -> None:
    options = ResNetElasticOptions()
    with pytest.raises(pydantic.ValidationError):
        options.stem_channels = 3  # type: ignore[misc]
    assert hash(options) == hash(ResNetElasticOptions())
    assert ResNetElasticSpace().options == options


def test_supernet_starts_at_the_max_arch_and_extract_keeps_dtype() -> None:
    space = _space(**TINY)
    supernet = space.build_supernet(5, 1).double().eval()
    assert supernet.active_arch == space.max_arch()
    arch = space.sample(random.Random(2))
    supernet.set_active(dict(arch))
    assert supernet.active_arch == arch
    subnet = supernet.extract(arch)
    assert next(subnet.parameters()).dtype == torch.float64
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(subnet(x), supernet(x), atol=1e-10, rtol=0)
    subnet.reset_classifier(7)
    assert subnet(x).shape == (2, 7)


def test_zeroed_residual_branches_make_the_deeper_blocks_identities() -> None:
    before, after, zeroed = deep_and_shallow_outputs(_space(**TINY), torch.randn(*RGB_64))
    assert not torch.allclose(*before)
    assert zeroed == 4  # the last BN of every block's branch
    torch.testing.assert_close(*after)
