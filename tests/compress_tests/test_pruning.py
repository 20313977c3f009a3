"""Channel pruning to a MACs target, importance criteria, saving the structure."""

from __future__ import annotations

import io
import json

import pytest
import torch
import torch_pruning as tp

from compress import (
    MacsTarget,
    _importance,
    get_importance,
    list_importances,
    prune,
    register_importance,
)
from compress._structure import load_pruned, save_pruned
from evaluators import count_macs, count_params
from search_spaces import get_search_space
from search_spaces._layers import SqueezeExcite
from search_spaces._mobilenet_builder import InvertedResidual

INPUT_SHAPE = (1, 1, 16, 16)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def build():
    """Returns a factory of the default space's largest subnet, always with the same weights."""
    space = get_search_space("mobilenet_elastic")
    torch.manual_seed(0)
    supernet = space.build_supernet(num_classes=10, in_channels=1).eval()
    arch = space.max_arch()
    return lambda: supernet.extract(arch).eval()


@pytest.fixture(scope="module")
def halved(build):
    model = build()
    calls = []
    result = prune(model, torch.zeros(INPUT_SHAPE), target=MacsTarget(2.0), iterations=3,
                   finetune=lambda m, step: calls.append((m, step)))
    return model, result, calls


def _channels(model: torch.nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d)}


def test_macs_target_halves_macs_and_keeps_the_output_shape(build, halved):
    model, result, _ = halved
    assert result.macs_before == count_macs(build(), INPUT_SHAPE)
    assert result.macs_after == count_macs(result.model, INPUT_SHAPE)
    assert result.macs_before / result.macs_after >= 2.0
    assert result.params_after == count_params(result.model) < result.params_before
    x = torch.randn(3, *INPUT_SHAPE[1:])
    with torch.no_grad():
        out = result.model(x)
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    # the input model is untouched
    assert _channels(model) == _channels(build())
    assert count_macs(model, INPUT_SHAPE) == result.macs_before


def test_coupled_layers_are_pruned_consistently(halved):
    _, result, _ = halved
    net = result.model
    assert net.conv_stem.out_channels < 16 and net.classifier.out_features == 10
    blocks = [m for m in net.modules() if isinstance(m, InvertedResidual)]
    assert sum(isinstance(b.se, SqueezeExcite) for b in blocks) > 0
    residuals = 0
    for b in blocks:
        mid = b.conv_pw.out_channels
        # depthwise: one group per channel, same width as the expansion
        assert b.conv_dw.in_channels == b.conv_dw.out_channels == b.conv_dw.groups == mid
        assert b.bn1.num_features == b.bn2.num_features == mid == b.conv_pwl.in_channels
        if isinstance(b.se, SqueezeExcite):
            assert b.se.conv_reduce.in_channels == b.se.conv_expand.out_channels == mid
        if b.has_skip:
            residuals += 1
            assert b.conv_pw.in_channels == b.conv_pwl.out_channels == b.bn3.num_features
    assert residuals > 0
    assert net.conv_head.in_channels == blocks[-1].conv_pwl.out_channels


def test_each_step_is_recorded_fine_tuned_and_serialisable(halved, tmp_path):
    _, result, calls = halved
    assert [s.step for s in result.steps] == [c[1] for c in calls] == [0, 1, 2]
    assert all(m is result.model for m, _ in calls)
    macs = [s.macs for s in result.steps]
    assert macs == sorted(macs, reverse=True) and macs[-1] == result.macs_after
    assert result.steps[0].macs_reduction == pytest.approx(result.macs_before / macs[0])
    plan = json.loads(json.dumps(result.plan))
    assert plan["target"] == {"kind": "macs", "ratio": 2.0}
    assert plan["importance"] == "magnitude" and len(plan["steps"]) == 3
    assert plan["history"] and all(len(entry) == 3 for entry in plan["history"])
    result.save_plan(tmp_path / "prune_plan.json")
    assert json.loads((tmp_path / "prune_plan.json").read_text()) == plan


@pytest.mark.parametrize("importance", list_importances())
def test_every_criterion_halves_macs(build, importance):
    torch.manual_seed(0)
    x = torch.randn(8, *INPUT_SHAPE[1:])
    result = prune(build(), x[:1], target=MacsTarget(2.0), importance=importance, iterations=1,
                   calibration=(x, torch.arange(8) % 10))
    assert result.importance == importance
    assert result.macs_before / result.macs_after >= 2.0
    with torch.no_grad():
        assert result.model(x).shape == (8, 10)


def test_criteria_choose_different_channels(build):
    torch.manual_seed(0)
    histories = {
        name: prune(build(), torch.zeros(INPUT_SHAPE), target=MacsTarget(1.5), importance=name,
                    iterations=1).history
        for name in ("magnitude", "taylor", "random")
    }
    assert histories["magnitude"] != histories["random"]
    assert histories["magnitude"] != histories["taylor"]


def test_a_criterion_is_one_registry_entry(build, monkeypatch):
    monkeypatch.setattr(_importance, "_CRITERIA", dict(_importance._CRITERIA))
    register_importance("l1")(lambda: tp.importance.GroupMagnitudeImportance(p=1))
    assert "l1" in list_importances() and not get_importance("l1").needs_gradients
    result = prune(build(), torch.zeros(INPUT_SHAPE), target=MacsTarget(1.5), importance="l1",
                   iterations=1)
    assert result.importance == "l1" and result.macs_before / result.macs_after >= 1.5
    with pytest.warns(UserWarning, match="registered again"):
        register_importance("l1")(lambda: tp.importance.RandomImportance())
    with pytest.raises(ValueError, match=r"must be one of \[.*'magnitude'"):
        get_importance("nope")


def test_bad_arguments_and_unreachable_targets_raise(build):
    with pytest.raises(ValueError, match="ratio: must be > 1, got 1.0"):
        MacsTarget(1.0)
    with pytest.raises(ValueError, match="iterations: must be >= 1, got 0"):
        prune(build(), torch.zeros(INPUT_SHAPE), target=MacsTarget(2.0), iterations=0)
    with pytest.raises(ValueError, match="cannot prune below"):
        prune(build(), torch.zeros(INPUT_SHAPE), target=MacsTarget(1e4), iterations=1)


def test_pruned_structure_reloads_without_pickled_modules(build, halved, tmp_path):
    _, result, _ = halved
    path = tmp_path / "pruned.pt"
    save_pruned(result.model, path)
    payload = torch.load(path, weights_only=True)  # only tensors and plain values inside
    assert set(payload) >= {"modules", "state_dict"}
    reloaded = load_pruned(build, path)
    assert _channels(reloaded) == _channels(result.model) != _channels(build())
    x = torch.randn(5, *INPUT_SHAPE[1:])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), result.model(x), atol=1e-6, rtol=0)
    from_bytes = load_pruned(build, io.BytesIO(save_pruned(result.model)))
    with torch.no_grad():
        torch.testing.assert_close(from_bytes(x), result.model(x), atol=1e-6, rtol=0)


def test_reloading_into_another_architecture_raises(halved):
    _, result, _ = halved
    space = get_search_space("mobilenet_elastic")
    other = space.build_supernet(num_classes=10, in_channels=1).extract(space.min_arch())
    with pytest.raises(ValueError, match="does not build the saved model"):
        load_pruned(lambda: other, save_pruned(result.model))
