"""The per-model pipeline: the accuracy budget, fallbacks, skips and artifacts."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
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
    StageSkipped,
    read_metadata,
    save_pruned,
)
from evaluators.latency import DeviceLock, Latency, LatencyMeter
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
    # neither noise nor another process's load flags a figure: the verdicts follow the
    # models (what an unreliable figure changes is tested with a meter that flags them)
    base = load_profile("cpu")
    profile = HardwareProfile(**{**base.model_dump(), "warmup": 2, "repeats": 10, "max_cv": None,
                                 "max_load": None})
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


class Heavy(nn.Module):
    """``model`` plus a large convolution whose output adds ~1e-9 to the logits: the same
    predictions, several times the latency."""

    def __init__(self, model: nn.Module, channels: int) -> None:
        super().__init__()
        self.model = model
        self.heavy = nn.Sequential(nn.Conv2d(channels, 192, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(192, 192, 3, padding=1))
        self.scale = nn.Parameter(torch.tensor(1e-9), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + self.scale * self.heavy(x).mean()


class Slower(CompressionStage):
    """A float stage as accurate as its input and much slower."""

    name = "pruned"

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        slow = Heavy(copy.deepcopy(model), ctx.input_shape[1]).eval()
        return StageOutput(model=slow, files={"pruned.pt": save_pruned(slow)})


class SlowerInt8(CompressionStage):
    """An artifact stage scored more accurate than the baseline, and slower."""

    name = "int8"

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        from evaluators import export_onnx

        onnx_bytes = export_onnx(Heavy(copy.deepcopy(model), ctx.input_shape[1]).eval(),
                                 ctx.input_shape)
        return StageOutput(timed=onnx_bytes, score=lambda x, y: 1.0,
                           files={"model.int8.onnx": onnx_bytes}, artifact="model.int8.onnx")


def test_a_slower_stage_is_recorded_never_shipped_and_the_chain_goes_on_from_the_faster(
    data, trained, tmp_path: Path
) -> None:
    recorder = Record()
    pipeline = CompressionPipeline([Keep(), Slower(), recorder, SlowerInt8()])
    records = pipeline.run(context(data, tmp_path, trained), trained)
    by_stage = {r.stage: r for r in records}
    base, slow, int8 = by_stage["baseline"], by_stage["pruned"], by_stage["int8"]
    assert slow.status == "slower" and "slower than its input" in slow.reason
    assert slow.latency_ms > base.latency_ms and slow.input_stage == "baseline"
    # the next stage started from the faster model, and the slower one left no file behind
    assert recorder.seen is not None and not isinstance(recorder.seen, Heavy)
    folder = tmp_path / "models" / "trial_0"
    assert not (folder / "pruned.pt").exists() and not (folder / "pruned.onnx").exists()
    assert by_stage["distilled"].input_stage == "baseline"
    # more accurate, but slower than its input: recorded, never shipped
    assert int8.status == "slower" and int8.accuracy == 1.0
    assert not (folder / "model.int8.onnx").exists()
    shipped = [r for r in records if r.deployed]
    assert len(shipped) == 1 and shipped[0].stage in ("baseline", "distilled")
    assert shipped[0].latency_ms <= base.latency_ms * 1.0000001 or shipped[0].stage == "baseline"
    assert shipped[0].artifact.endswith(f"{shipped[0].stage}.onnx")
    summary = json.loads((folder / "deployed.json").read_text())
    assert summary["stage"] == shipped[0].stage and "slower" in summary["why"]
    # every accepted float stage is a deployable ONNX file
    for r in records:
        if r.status == "ok" and r.stage in ("baseline", "distilled"):
            onnx.checker.check_model(onnx.load(tmp_path / "models" / r.artifact))


class HeavyBaseline(CompressionStage):
    """A baseline that carries ``Heavy``'s extra convolution: slow, as accurate as its input."""

    name = "baseline"

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        slow = Heavy(copy.deepcopy(model), ctx.input_shape[1]).eval()
        return StageOutput(model=slow, files={"baseline.pt": save_pruned(slow)})


class Unwrap(CompressionStage):
    """Drops ``Heavy``'s extra convolution again: the same predictions, far faster."""

    name = "pruned"

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        assert isinstance(model, Heavy)
        fast = copy.deepcopy(model.model).eval()
        return StageOutput(model=fast, files={"pruned.pt": save_pruned(fast)})


def test_a_stage_measured_slower_on_its_own_is_timed_again_beside_its_input(
    data, trained, tmp_path: Path
) -> None:
    from evaluators import structure_key

    ctx = context(data, tmp_path, trained)
    # the faster stage's figure, taken earlier on a disturbed machine, says it is slower
    disturbed = Latency.from_samples([50.0] * 10)
    ctx.meter.cache.put(structure_key(trained), ctx.profile.fingerprint(),
                        ctx.meter.input_shape(ctx.input_shape), disturbed)
    records = CompressionPipeline([HeavyBaseline(), Unwrap(), Record()]).run(ctx, trained)
    base, pruned, distilled = records[0], records[1], records[2]
    assert pruned.status == "ok" and "side by side" in pruned.reason
    assert "first measured at 50.0000 ms" in pruned.reason
    assert pruned.latency_ms < base.latency_ms < 50.0
    # distillation keeps the pruned graph: the pruned model's figure as judged is its own,
    # never the disturbed one they share, and it is not timed against its own graph
    assert distilled.status == "ok" and "first measured" not in distilled.reason
    assert distilled.latency_ms == pruned.latency_ms and distilled.input_stage == "pruned"
    shipped = next(r for r in records if r.deployed)
    assert shipped.stage in ("pruned", "distilled")
    assert (tmp_path / "models" / "trial_0" / f"{shipped.stage}.onnx").is_file()


class FlaggingMeter(LatencyMeter):
    """A meter on a machine too busy for a comparison in interleaved rounds to count: the
    first ``flagged`` comparisons (all, when None) are flagged unreliable."""

    def __init__(self, *args, flagged: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.flagged, self.comparisons = flagged, 0

    def measure_side_by_side(self, models, input_shape, *, rounds: int = 3) -> list[Latency]:
        measured = super().measure_side_by_side(models, input_shape, rounds=rounds)
        self.comparisons += 1
        if self.flagged is not None and self.comparisons > self.flagged:
            return measured
        return [m.flagged("busy device: other processes used 1.50 of 2 cores") for m in measured]


def _flagging(ctx: ModelContext, flagged: int | None = None) -> ModelContext:
    return dataclasses.replace(ctx, meter=FlaggingMeter(ctx.profile, lock=ctx.meter.lock,
                                                        flagged=flagged))


def test_a_stage_never_compared_reliably_is_unconfirmed_and_never_ships(
    data, trained, tmp_path: Path
) -> None:
    # the pruned model is far faster than its input, but the device cannot confirm it
    ctx = _flagging(context(data, tmp_path, trained))
    records = CompressionPipeline([HeavyBaseline(), Unwrap()]).run(ctx, trained)
    base, pruned = records[0], records[1]
    assert ctx.meter.comparisons == 3  # the final comparison, taken again twice
    assert pruned.status == "unconfirmed" and "side by side 3 times" in pruned.reason
    assert "never reliably (busy device: other processes used 1.50 of 2 cores" in pruned.reason
    assert not pruned.latency_reliable and "busy device" in pruned.latency_note
    assert pruned.latency_ms < base.latency_ms  # the figures are kept, as measured
    # only the model itself ships, its own figure flagged for what it is
    assert base.deployed and not pruned.deployed and not base.latency_reliable
    folder = tmp_path / "models" / "trial_0"
    assert not (folder / "pruned.onnx").exists() and (folder / "baseline.onnx").is_file()
    summary = json.loads((folder / "deployed.json").read_text())
    assert summary["stage"] == "baseline" and summary["latency_reliable"] is False
    assert "pruned could not be measured reliably" in summary["why"]
    assert "measure it again on a quieter device" in summary["why"]


def test_an_unreliable_comparison_taken_again_reliably_decides(
    data, trained, tmp_path: Path
) -> None:
    ctx = _flagging(context(data, tmp_path, trained), flagged=1)
    records = CompressionPipeline([HeavyBaseline(), Unwrap()]).run(ctx, trained)
    base, pruned = records[0], records[1]
    assert ctx.meter.comparisons == 2
    assert pruned.status == "ok" and pruned.deployed and pruned.speedup > 1
    assert pruned.latency_reliable and base.latency_reliable and not pruned.latency_note


def test_a_stage_measured_slower_and_never_compared_reliably_is_not_taken_on(
    data, trained, tmp_path: Path
) -> None:
    from evaluators import structure_key

    recorder = Record()
    ctx = _flagging(context(data, tmp_path, trained))
    # the faster stage's own figure, taken on a disturbed machine, says it is slower
    ctx.meter.cache.put(structure_key(trained), ctx.profile.fingerprint(),
                        ctx.meter.input_shape(ctx.input_shape), Latency.from_samples([50.0] * 10))
    records = CompressionPipeline([HeavyBaseline(), Unwrap(), recorder]).run(ctx, trained)
    pruned = records[1]
    assert pruned.status == "unconfirmed" and "first measured at 50.0000 ms" in pruned.reason
    assert "so the next stage starts from the baseline model" in pruned.reason
    # the chain went on from the last accepted model, the slow baseline
    assert isinstance(recorder.seen, Heavy) and records[2].input_stage == "baseline"
    assert not (tmp_path / "models" / "trial_0" / "pruned.onnx").exists()
    assert next(r for r in records if r.deployed).stage in ("baseline", "distilled")


class Tiny(nn.Module):
    """Pools the image to one value per class: a graph far faster than any real model."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))


class TimedFromFile(CompressionStage):
    """An artifact stage timed from a file on disk, which starts as a far faster graph."""

    name = "int8"

    def __init__(self, path: Path) -> None:
        self.path = path

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        from evaluators import export_onnx

        self.path.write_bytes(export_onnx(Tiny(ctx.input_shape[1], 10).eval(), ctx.input_shape))
        return StageOutput(timed=self.path, score=lambda x, y: 1.0,
                           files={"model.int8.onnx": self.path.read_bytes()},
                           artifact="model.int8.onnx")


def test_a_stage_found_slower_side_by_side_leaves_no_file_behind(
    data, trained, tmp_path: Path
) -> None:
    from evaluators import export_onnx

    timed = tmp_path / "timed.onnx"
    ctx = context(data, tmp_path, trained)

    def swap(record) -> None:  # once accepted, the graph becomes much slower than its input
        if record.stage == "int8":
            assert record.status == "ok"
            timed.write_bytes(export_onnx(Heavy(copy.deepcopy(trained), ctx.input_shape[1]).eval(),
                                          ctx.input_shape))

    records = CompressionPipeline([Keep(), TimedFromFile(timed)]).run(ctx, trained, on_stage=swap)
    int8 = next(r for r in records if r.stage == "int8")
    assert int8.status == "slower" and "measured side by side" in int8.reason
    assert not int8.deployed and next(r for r in records if r.deployed).stage == "baseline"
    folder = tmp_path / "models" / "trial_0"
    assert not (folder / "model.int8.onnx").exists() and (folder / "baseline.onnx").is_file()


def test_stages_of_one_structure_share_one_latency(data, trained, tmp_path: Path) -> None:
    # distillation changes weights only: its latency is its input's measurement
    records = CompressionPipeline([Keep(), Record()]).run(context(data, tmp_path, trained), trained)
    by_stage = {r.stage: r for r in records}
    assert by_stage["distilled"].latency_ms == by_stage["baseline"].latency_ms
    assert by_stage["distilled"].status == "ok"
    # equally fast: the most accurate ships (ties: the earlier stage)
    shipped = next(r for r in records if r.deployed)
    best = max(by_stage["baseline"].accuracy, by_stage["distilled"].accuracy)
    assert shipped.accuracy == best and shipped.speedup == pytest.approx(1.0)


def test_openvino_profiles_quantise_with_nncf_and_ship_by_measurement(
    data, trained, tmp_path: Path
) -> None:
    from compress._int8_stage import Int8Stage
    from evaluators.latency import OpenVINOIR

    profile = HardwareProfile(**{**load_profile("cpu-openvino").model_dump(), "warmup": 2,
                                 "repeats": 10, "max_cv": None, "max_load": None})
    ctx = context(data, tmp_path, trained)
    ctx = dataclasses.replace(ctx, profile=profile, meter=LatencyMeter(
        profile, lock=DeviceLock("cpu", lock_dir=tmp_path)))
    records = CompressionPipeline([Keep(), Int8Stage()]).run(ctx, trained)
    int8 = next(r for r in records if r.stage == "int8")
    assert int8.artifact == "trial_0/model.int8.xml" and "path=NNCF" in int8.reason
    assert int8.status in ("ok", "slower")
    assert abs(int8.accuracy - records[0].accuracy) <= 0.05
    # the quantized graph counts the weights and MACs of the model it quantized
    assert (int8.params, int8.macs) == (records[0].params, records[0].macs)
    shipped = next(r for r in records if r.deployed)
    assert shipped.latency_ms <= records[0].latency_ms
    folder = tmp_path / "models" / "trial_0"
    if int8.status == "ok":  # the IR is written beside the ONNX files and loads
        ir = OpenVINOIR.load(folder / "model.int8.xml")
        assert b"FakeQuantize" in ir.xml and (folder / "model.int8.bin").exists()
    else:
        assert not (folder / "model.int8.xml").exists()


class RecoverableBreak(Break):
    """Pruning that lost too much accuracy: the next stage may win it back."""

    recoverable = True


class Heal(CompressionStage):
    """Distillation that wins the accuracy back (here: the baseline's weights again)."""

    name = "distilled"

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        assert ctx.baseline is not None
        healed = copy.deepcopy(ctx.baseline)
        return StageOutput(model=healed, files={"distilled.pt": save_pruned(healed)})


class Seen(CompressionStage):
    """Records the model it was given (as the INT8 stage would start from it)."""

    name = "int8"

    def __init__(self) -> None:
        self.seen: nn.Module | None = None

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        self.seen = model
        raise StageSkipped("recording only")


def _zeroed(model: nn.Module) -> bool:
    return all(float(m.weight.detach().abs().sum()) == 0 for m in model.modules()
               if isinstance(m, nn.Linear))


def test_an_over_budget_recoverable_stage_feeds_the_next_and_never_ships(
    data, trained, tmp_path: Path
) -> None:
    seen = Seen()
    records = CompressionPipeline([Keep(), RecoverableBreak(), Heal(), seen]).run(
        context(data, tmp_path, trained), trained)
    by_stage = {r.stage: r for r in records}
    assert by_stage["pruned"].status == "rejected" and "trains on from it" in by_stage["pruned"].reason
    assert by_stage["distilled"].status == "ok" and by_stage["distilled"].input_stage == "pruned"
    folder = tmp_path / "models" / "trial_0"
    assert (folder / "pruned.pt").exists() and not (folder / "pruned.onnx").exists()
    assert not by_stage["pruned"].deployed
    assert seen.seen is not None and not _zeroed(seen.seen)  # the healed model went on

    # when the next stage cannot win it back, the chain goes on from the last accepted model
    seen = Seen()
    records = CompressionPipeline([Keep(), RecoverableBreak(), Record(), seen]).run(
        context(data, tmp_path / "again", trained), trained)
    by_stage = {r.stage: r for r in records}
    assert by_stage["distilled"].status == "rejected"
    assert "starts from the baseline model" in by_stage["distilled"].reason
    assert seen.seen is not None and not _zeroed(seen.seen)
    assert next(r for r in records if r.deployed).stage == "baseline"
