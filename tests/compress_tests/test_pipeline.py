"""The per-model pipeline: the accuracy budget, fallbacks, skips and artifacts."""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from compress import (
    CompressionPipeline,
    CompressionStage,
    CompressSettings,
    ModelContext,
    StageOutput,
    read_metadata,
    save_pruned,
)
from evaluators.latency import DeviceLock, LatencyMeter
from hwprofiles import HardwareProfile, load_profile
from search_spaces import get_search_space


@pytest.fixture(scope="module")
def data(digits12):
    return digits12


class Keep(CompressionStage):
    """Returns a copy of its input: accuracy unchanged."""

    name = "baseline"

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        copied = copy.deepcopy(model)
        return StageOutput(model=copied, files={f"{self.name}.pt": save_pruned(copied)}, artifact=f"{self.name}.pt")


class Break(CompressionStage):
    """Zeroes the classifier: accuracy collapses, the budget must reject it."""

    name = "pruned"

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        broken = copy.deepcopy(model)
        for module in broken.modules():
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        return StageOutput(model=broken, files={"pruned.pt": save_pruned(broken)}, artifact="pruned.pt")


class Record(CompressionStage):
    """Records the model it was given."""

    name = "distilled"

    def __init__(self) -> None:
        self.seen: nn.Module | None = None

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        self.seen = model
        return StageOutput(model=model, files={"distilled.pt": save_pruned(model)}, artifact="distilled.pt")


def context(data, tmp_path: Path, model: nn.Module, settings: CompressSettings | None = None) -> ModelContext:
    base = load_profile("cpu")
    profile = HardwareProfile(**{**base.model_dump(), "warmup": 2, "repeats": 10, "max_cv": None})
    return ModelContext(
        model_id="trial_0", arch_json="{}", build_unpruned=lambda: copy.deepcopy(model), teacher=model,
        data=data, profile=profile, meter=LatencyMeter(profile, lock=DeviceLock("cpu", lock_dir=tmp_path)),
        settings=settings or CompressSettings(), out_dir=tmp_path / "models" / "trial_0",
        metadata={"preprocessing": data.normalization.to_dict(), "input_layout": "NCHW",
                  "classes": list(data.classes), "arch": {}},
        compute_guard=contextlib.nullcontext,
    )


@pytest.fixture(scope="module")
def trained(data, tiny_options) -> nn.Module:
    from evaluators import OptimConfig, cross_entropy_step, train

    space = get_search_space("mobilenet_elastic", **tiny_options)
    torch.manual_seed(0)
    model = space.build_supernet(10, 1).extract(space.max_arch())
    train(model, lambda e: data.loader("train", 64, shuffle=True, seed=e), cross_entropy_step(),
          epochs=4, steps_per_epoch=20, optim=OptimConfig(lr=5e-3))
    return model


def test_budget_rejects_a_stage_and_the_next_starts_from_the_last_accepted(data, trained, tmp_path: Path) -> None:
    recorder = Record()
    pipeline = CompressionPipeline([Keep(), Break(), recorder])
    records = pipeline.run(context(data, tmp_path, trained), trained)
    by_stage = {r.stage: r for r in records}
    assert by_stage["baseline"].status == "ok" and by_stage["baseline"].accuracy > 0.8
    assert by_stage["pruned"].status == "rejected"
    assert "below the baseline" in by_stage["pruned"].reason and "budget 1" in by_stage["pruned"].reason
    # the rejected model never reached the next stage, nor the disk
    assert recorder.seen is not None
    assert any(float(m.weight.detach().abs().sum()) > 0 for m in recorder.seen.modules() if isinstance(m, nn.Linear))
    assert not (tmp_path / "models" / "trial_0" / "pruned.pt").exists()
    assert by_stage["distilled"].status == "ok"
    assert by_stage["tensorrt"].status == "skipped" and "TensorRT" in by_stage["tensorrt"].reason
    assert math.isnan(by_stage["tensorrt"].latency_ms)
    # the final float model is exported with what a deployer needs
    final = tmp_path / "models" / "trial_0" / "model.onnx"
    onnx.checker.check_model(onnx.load(final))
    meta = read_metadata(final)
    assert meta["stage"] == "distilled" and meta["input_layout"] == "NCHW"
    assert meta["preprocessing"]["mean"] == list(data.normalization.mean)
    assert torch.load(tmp_path / "models" / "trial_0" / "model.pt", weights_only=True)
