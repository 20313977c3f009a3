"""A user's own pruning criterion, registered in a plugin module and chosen from YAML."""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from compress import ModelContext, _importance
from compress._pruned import PrunedStage
from evaluators.latency import DeviceLock, LatencyMeter
from nas._compress_stage import settings_from_config
from nas._config import ConfigError, load_config
from search_spaces import get_search_space

PLUGIN = '''
import torch_pruning as tp
from compress import register_importance

CALLS = []


class CountingL1(tp.importance.GroupMagnitudeImportance):
    def __call__(self, group):
        CALLS.append(len(group[0].idxs))
        return super().__call__(group)


@register_importance("counting_l1")
def counting_l1():
    return CountingL1(p=1)
'''


@pytest.fixture
def private_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test's plugin vanish with the test."""
    monkeypatch.setattr(_importance, "_CRITERIA", dict(_importance._CRITERIA))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))


@pytest.mark.usefixtures("private_registry")
def test_a_registered_importance_runs_from_yaml(tmp_path: Path, digits12, tiny_options) -> None:
    (tmp_path / "my_criteria.py").write_text(PLUGIN)
    config = tmp_path / "config.yaml"
    config.write_text(
        "plugins: [my_criteria.py]\n"
        "search_space: {name: mobilenet_elastic}\n"
        "compress:\n"
        "  prune: {macs_ratio: 1.5, importance: counting_l1, iterations: 1, finetune_epochs: 0}\n"
    )
    spec = load_config(config)
    assert spec.plugins == (str(tmp_path / "my_criteria.py"),)  # resolved next to the config
    assert spec.compress.prune.importance == "counting_l1" and spec.compress.prune.speedup is None
    settings = settings_from_config(spec.compress, seed=0, batch_size=64)

    space = get_search_space("mobilenet_elastic", **tiny_options)
    model = space.build_supernet(10, 1).extract(space.max_arch()).eval()
    profile = spec.hardware.load()
    ctx = ModelContext(
        model_id="m", arch_json="{}", build_unpruned=lambda: copy.deepcopy(model), teacher=model,
        data=digits12, profile=profile,
        meter=LatencyMeter(profile, lock=DeviceLock("cpu", lock_dir=tmp_path)),
        settings=settings, out_dir=tmp_path / "m", metadata={},
        compute_guard=contextlib.nullcontext,
    )
    calls = sys.modules["hwnas_plugin_my_criteria"].CALLS
    before = len(calls)
    out = PrunedStage().apply(ctx, model)
    assert len(calls) > before  # the user's criterion scored the channels
    plan = json.loads(out.files["prune_plan.json"])
    assert plan["importance"] == "counting_l1" and plan["target"] == {"kind": "macs", "ratio": 1.5}
    x = torch.zeros(1, 1, 12, 12)
    assert out.model is not None and out.model(x).shape == (1, 10)


def test_an_unknown_importance_names_the_registered_ones(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("compress: {prune: {importance: nope}}\n")
    with pytest.raises(ConfigError, match=r"compress\.prune\.importance: must be one of "
                                          r"\['magnitude', .*'taylor'\], got 'nope'"):
        load_config(config)


def test_a_plugin_that_fails_to_import_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    config = tmp_path / "config.yaml"
    config.write_text("plugins: [broken.py, not_a_module_anywhere]\n")
    with pytest.raises(ConfigError, match=r"plugins\[0\]: cannot import .*broken\.py.*boom"):
        load_config(config)
