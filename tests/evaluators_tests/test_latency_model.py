"""The per-profile latency model: blocks of a subnet, measured once, a fitted sum."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from evaluators.latency import (
    BlockLatencyTable,
    DeviceLock,
    LatencyCache,
    LatencyMeter,
    LatencyModel,
    LatencyModelError,
    chain_blocks,
    model_path,
    part_protocol,
)
from evaluators.latency._meter import PART_SAMPLE_MS
from evaluators.latency._model import _check_chain
from hwprofiles import HardwareProfile, load_profile
from search_spaces import get_search_space

SHAPE = (1, 1, 16, 16)


def _meter(tmp_path: Path, **changes: Any) -> LatencyMeter:
    fields = {**load_profile("cpu").model_dump(), "warmup": 2, "repeats": 10,
              "max_cv": None, **changes}
    return LatencyMeter(HardwareProfile(**fields), cache=LatencyCache(tmp_path / "cache.db"),
                        lock=DeviceLock("cpu", lock_dir=tmp_path))


@pytest.mark.parametrize("name", ["mobilenet_elastic", "resnet_elastic"])
def test_subnets_run_as_the_chain_of_their_blocks(name: str) -> None:
    space = get_search_space(name)
    supernet = space.build_supernet(num_classes=10, in_channels=3)
    for arch in (space.min_arch(), space.max_arch()):
        subnet = supernet.extract(arch).eval()
        blocks = chain_blocks(subnet)
        _check_chain(subnet, blocks, (2, 3, 32, 32))  # raises if the chain is not the subnet
        depth = sum(int(v) for k, v in arch.items() if k.startswith("d"))
        assert len(blocks) == depth + 2  # stem, every block, head


class _Skip(nn.Module):
    """Adds its input back: not a chain of its children."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.conv(x) + x)


def test_a_model_that_is_not_a_chain_is_refused_with_what_to_do() -> None:
    model = _Skip().eval()
    with pytest.raises(LatencyModelError, match="latency_blocks"):
        _check_chain(model, chain_blocks(model), SHAPE)


@pytest.mark.slow
def test_build_predict_save_and_reuse_the_blocks(tmp_path: Path) -> None:
    space = get_search_space("mobilenet_elastic")
    meter = _meter(tmp_path)
    model, table = LatencyModel.build(space, meter, SHAPE, fit_archs=6, seed=1)
    assert model.blocks == len(table) > 6 and len(model.fitted_on) == 6
    supernet = space.build_supernet(num_classes=10, in_channels=1)
    small = model.predict(supernet.extract(space.min_arch()), table)
    large = model.predict(supernet.extract(space.max_arch()), table)
    assert 0 < small < large  # the largest subnet is predicted slower than the smallest
    measured = meter.measure(supernet.extract(space.max_arch()).eval(), SHAPE).median_ms
    assert abs(large - measured) < 0.5 * measured
    path = model_path(meter.cache, space.name, meter.profile.fingerprint(), SHAPE)
    assert path is not None and path.parent == tmp_path
    model.save(path)
    assert LatencyModel.load(path) == model
    # a second build on the same cache measures no block again
    again, table2 = LatencyModel.build(space, _meter(tmp_path), SHAPE, fit_archs=6, seed=1)
    assert table2.measured == 0 and again.coefficients == model.coefficients


def test_a_file_that_is_not_a_latency_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text('{"format": "something else"}')
    with pytest.raises(LatencyModelError, match="not a latency model"):
        LatencyModel.load(path)
    path.write_text("{truncated")
    with pytest.raises(LatencyModelError, match="cannot read"):
        LatencyModel.load(path)


def test_parts_are_timed_with_short_samples_whole_models_with_the_profiles_own() -> None:
    profile = load_profile("cpu")
    assert profile.min_sample_ms > PART_SAMPLE_MS  # a whole model's samples are longer
    part = part_protocol(profile, 30)
    assert (part.warmup, part.repeats, part.min_sample_ms) == (5, 30, PART_SAMPLE_MS)
    assert part.fingerprint() != profile.fingerprint()  # never one another's cache entries
    assert BlockLatencyTable(LatencyMeter(profile)).meter.profile == part
    quick = HardwareProfile(**{**profile.model_dump(), "warmup": 2, "repeats": 10,
                               "min_sample_ms": 0.5})
    assert part_protocol(quick, 30) == quick  # a quicker profile is not slowed down
