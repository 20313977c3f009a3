from __future__ import annotations

import random

import numpy as np
import pydantic
import pytest
import torch

from search_spaces import Arch, MobileNetElasticOptions, SearchSpaceError, get_search_space
from search_spaces.mobilenet_elastic import ElasticMobileNetV3, MobileNetElasticSpace
from tests.search_spaces_tests.conftest import deep_and_shallow_outputs

TINY = {
    "stem_channels": 8,
    "stage_channels": [8, 16],
    "stage_strides": [1, 2],
    "use_se": [False, True],
    "activations": ["relu", "hardswish"],
    "depths": [1, 2],
    "kernel_sizes": [3, 5],
    "expand_ratios": [1, 2],
    "head_channels": 16,
}


def _space(**options: object) -> MobileNetElasticSpace:
    space = get_search_space("mobilenet_elastic", **options)
    assert isinstance(space, MobileNetElasticSpace)
    return space


def test_default_choices_are_flat_and_named_per_stage_and_block() -> None:
    space = _space()
    choices = space.choices()
    assert len(choices) == 4 * (1 + 3 * 2)
    assert choices["d0"] == (1, 2, 3)
    assert choices["k3_2"] == (3, 5)
    assert choices["e2_0"] == (2, 3, 4)
    assert "k0_3" not in choices
    choices["d0"] = (9,)  # the caller's copy; the space is unchanged
    assert space.choices()["d0"] == (1, 2, 3)


def test_default_space_size_and_description() -> None:
    space = _space()
    assert space.num_archs() == (6 + 6**2 + 6**3) ** 4 == 4_430_766_096
    text = space.describe()
    assert "4,430,766,096 distinct architectures" in text
    assert "28 flat choices" in text


def test_max_and_min_archs_hold_python_ints() -> None:
    space = _space()
    big, small = space.max_arch(), space.min_arch()
    assert all(type(v) is int for v in (*big.values(), *small.values()))
    assert big["d1"] == 3 and big["k1_2"] == 5 and big["e1_2"] == 4
    assert small["d1"] == 1 and small["k1_0"] == 3 and small["e1_0"] == 2


def test_inactive_blocks_are_canonicalised() -> None:
    space = _space()
    params = dict(space.max_arch())
    params.update({"d0": 1, "k0_1": 5, "e0_1": 4, "k0_2": 3, "e0_2": 3})
    other = {**params, "k0_1": 3, "e0_1": 2, "k0_2": 5, "e0_2": 4}
    a, b = space.decode(params), space.decode(other)
    assert a == b
    assert hash(a) == hash(b)
    assert a.key() == b.key()
    assert a["k0_1"] == 3 and a["e0_1"] == 2  # the first allowed values
    # An active block's choice still matters.
    assert space.decode({**params, "k0_0": 3}) != space.decode({**params, "k0_0": 5})


def test_decode_accepts_equal_numbers_and_rejects_bools() -> None:
    space = _space()
    params = dict(space.min_arch())
    arch = space.decode({**params, "d1": np.int64(2), "e1_0": 3.0})
    assert arch["d1"] == 2 and type(arch["d1"]) is int
    assert type(arch["e1_0"]) is int
    with pytest.raises(
        SearchSpaceError, match="choice 'd1' must be one of \\[1, 2, 3\\], got True"
    ):
        space.decode({**params, "d1": True})
    with pytest.raises(SearchSpaceError, match="choice 'k0_0' must be one of \\[3, 5\\], got 7"):
        space.decode({**params, "k0_0": 7})


def test_enumerate_yields_exactly_num_archs_distinct_networks() -> None:
    space = _space(**TINY)
    assert space.num_archs() == (4 + 4**2) ** 2
    archs = list(space.enumerate())
    assert len(archs) == len(set(archs)) == space.num_archs()
    cfgs = {space.net_cfg(a, num_classes=10, in_channels=1) for a in archs}
    assert len(cfgs) == space.num_archs()  # distinct archs are distinct networks
    with pytest.raises(SearchSpaceError, match="more than the limit of 10"):
        next(space.enumerate(limit=10))


def test_net_cfg_follows_the_arch() -> None:
    space = _space()
    arch = space.decode({**space.min_arch(), "d2": 2, "k2_1": 5, "e2_1": 4})
    cfg = space.net_cfg(arch, num_classes=10, in_channels=3)
    assert [len(stage) for stage in cfg.stages] == [1, 1, 2, 1]
    first, second = cfg.stages[2]
    assert (first.in_channels, first.out_channels, first.stride) == (24, 32, 2)
    assert (second.in_channels, second.mid_channels, second.kernel_size) == (32, 128, 5)
    assert second.has_skip and not first.has_skip
    assert second.se_channels == 32 and cfg.stages[0][0].se_channels == 0
    assert (cfg.stages[0][0].act, cfg.stages[3][0].act) == ("relu", "hardswish")


def test_max_subnet_holds_every_supernet_weight() -> None:
    space = _space()
    supernet = space.build_supernet(10, 1)
    subnet = supernet.extract(space.max_arch())
    count = sum(p.numel() for p in supernet.parameters())
    assert sum(p.numel() for p in subnet.parameters()) == count
    small = supernet.extract(space.min_arch())
    assert sum(p.numel() for p in small.parameters()) < count / 4


def test_extract_keeps_dtype_and_a_stride_two_stem_works() -> None:
    space = _space(stem_stride=2, dropout=0.2)
    supernet = space.build_supernet(5, 3).double().eval()
    arch = space.sample(random.Random(0))
    supernet.set_active(dict(arch))
    assert supernet.active_arch == arch
    subnet = supernet.extract(arch)
    assert next(subnet.parameters()).dtype == torch.float64
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(subnet(x), supernet(x), atol=1e-10, rtol=0)
    assert subnet.forward_features(x).shape == (2, 128, 4, 4)
    subnet.reset_classifier(7)
    assert subnet(x).shape == (2, 7)


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"stage_strides": [1, 2]}, "", "stage_strides must have one entry per stage"),
        ({"use_se": [True]}, "", "use_se must have one entry per stage"),
        ({"kernel_sizes": [3, 4]}, "kernel_sizes", "kernel_sizes must all be odd"),
        ({"depths": [2, 1]}, "depths", "depths must be strictly increasing, got [2, 1]"),
        ({"expand_ratios": []}, "expand_ratios", "expand_ratios must not be empty"),
        ({"stage_channels": []}, "stage_channels", "stage_channels must not be empty"),
        ({"stage_channels": [16, 0, 32, 48]}, "stage_channels.1", "greater than 0"),
        ({"activations": ["relu", "relu", "gelu", "relu"]}, "activations.2", "hardswish"),
        ({"dropout": 1.0}, "dropout", "less than 1"),
        ({"widths": [1]}, "widths", "Extra inputs are not permitted"),
    ],
)
def test_options_are_validated(options: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        get_search_space("mobilenet_elastic", **options)
    error = info.value.errors()[0]
    assert ".".join(str(part) for part in error["loc"]) == field
    assert message in error["msg"]


def test_options_are_frozen_and_hashable() -> None:
    options = MobileNetElasticOptions()
    with pytest.raises(pydantic.ValidationError):
        options.head_channels = 3  # type: ignore[misc]
    assert hash(options) == hash(MobileNetElasticOptions())
    assert MobileNetElasticSpace().options == options


def test_supernet_starts_at_the_max_arch() -> None:
    space = _space(**TINY)
    supernet = space.build_supernet(10, 1)
    assert supernet.active_arch == space.max_arch()
    assert isinstance(supernet.active_arch, Arch)


def test_zeroed_residual_branches_make_the_deeper_blocks_identities() -> None:
    before, after, zeroed = deep_and_shallow_outputs(_space(**TINY), torch.randn(4, 1, 16, 16))
    assert not torch.allclose(*before)
    # both blocks of stage 0 (8 -> 8 channels, stride 1) and the second of stage 1 keep the width
    assert zeroed == 3
    torch.testing.assert_close(*after)


def _plain_and_optioned(
    **option: object,
) -> tuple[ElasticMobileNetV3, MobileNetElasticSpace, ElasticMobileNetV3, list[str]]:
    """Returns a TINY supernet, the space with ``option`` set, its supernet built from the
    same seed, and the state-dict keys the option adds."""
    torch.manual_seed(0)
    plain = _space(**TINY).build_supernet(10, 1).eval()
    torch.manual_seed(0)
    space = _space(**TINY, **option)
    supernet = space.build_supernet(10, 1).eval()
    return plain, space, supernet, sorted(set(supernet.state_dict()) - set(plain.state_dict()))


def _perturb_shallow_last_depth(
    plain: ElasticMobileNetV3, space: MobileNetElasticSpace, supernet: ElasticMobileNetV3,
    module: torch.nn.Module,
) -> None:
    """Perturbs ``module``, which only subnets with a one-block last stage should read, and
    asserts that the supernet still agrees with its extracted subnets, that these have the
    plain modules, and that only the shallow subnet's output changed."""
    x = torch.randn(3, 1, 16, 16)
    deep = space.max_arch()
    shallow = space.decode({**deep, "d1": 1})
    before = {arch: supernet.extract(arch).eval()(x) for arch in (deep, shallow)}
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    for arch in (deep, shallow):
        supernet.set_active(arch)
        subnet = supernet.extract(arch).eval()
        torch.testing.assert_close(supernet(x), subnet(x))
        assert set(subnet.state_dict()) == set(plain.extract(arch).state_dict())
    torch.testing.assert_close(supernet.extract(deep).eval()(x), before[deep])
    assert not torch.allclose(supernet.extract(shallow).eval()(x), before[shallow])


def test_kernel_transform_changes_the_supernet_but_not_its_subnets() -> None:
    plain, space, supernet, extra = _plain_and_optioned(kernel_transform=True)
    # one 9x9 matrix (5 to 3) per block: stages of depth 2 and 2
    assert len(extra) == 4 and all(key.endswith("kernel_transforms.5to3") for key in extra)
    arch = space.min_arch()
    x = torch.randn(3, 1, 16, 16)
    subnet = supernet.extract(arch).eval()
    # identity transforms: the same subnet as without; and the same static modules
    torch.testing.assert_close(subnet(x), plain.extract(arch).eval()(x))
    assert set(subnet.state_dict()) == set(plain.extract(arch).state_dict())
    with torch.no_grad():
        for key in extra:
            supernet.get_parameter(key).add_(0.2 * torch.randn(9, 9))
    supernet.set_active(arch)
    torch.testing.assert_close(supernet(x), supernet.extract(arch).eval()(x))
    assert not torch.allclose(supernet(x), plain.extract(arch).eval()(x))


def test_last_depth_heads_give_each_last_stage_depth_its_own_head() -> None:
    plain, space, supernet, extra = _plain_and_optioned(last_depth_heads=True)
    # depths [1, 2]: depth 2 (the largest) keeps the shared head, depth 1 gets its own
    assert extra and all(key.startswith("depth_heads.1.") for key in extra)
    for key, value in plain.state_dict().items():  # the shared layers start unchanged
        torch.testing.assert_close(supernet.state_dict()[key], value)
    # only the shallow last stage's subnets read the head that changed
    _perturb_shallow_last_depth(plain, space, supernet, supernet.depth_heads)
    assert supernet.head_layers(2)[2] is supernet.classifier
    assert supernet.head_layers(1)[2] is not supernet.classifier
    assert "last_depth_heads" in space.supernet_only_options


def test_last_depth_stages_give_each_last_stage_depth_its_own_blocks() -> None:
    plain, space, supernet, extra = _plain_and_optioned(last_depth_stages=True)
    # depths [1, 2]: depth 2 (the largest) keeps the shared blocks, depth 1 gets one copy
    assert extra and all(key.startswith("depth_stages.1.0.") for key in extra)
    state = supernet.state_dict()
    for key, value in plain.state_dict().items():  # the shared layers start unchanged
        torch.testing.assert_close(state[key], value)
    for key in extra:  # and the copy starts as the shared first block of the last stage
        torch.testing.assert_close(state[key], state["blocks.1.0." + key.split(".", 3)[3]])
    # the copy computes what the shared block did
    x = torch.randn(3, 1, 16, 16)
    shallow = space.decode({**space.max_arch(), "d1": 1})
    torch.testing.assert_close(
        supernet.extract(shallow).eval()(x), plain.extract(shallow).eval()(x)
    )
    # only the shallow last stage's subnets run the blocks that changed
    _perturb_shallow_last_depth(plain, space, supernet, supernet.depth_stages)
    assert supernet.stage_blocks([2, 1])[-1][0] is not supernet.stage_blocks([2, 2])[-1][0]
    # default depths [1, 2, 3]: the depth-2 copy's second block has a skip connection
    norms = [len(_space(last_depth_stages=split).build_supernet(10, 1).residual_branch_norms())
             for split in (False, True)]
    assert norms[1] == norms[0] + 1
    assert "last_depth_stages" in space.supernet_only_options
