"""The per-model pipeline: stages in order, each measured on the profile, what ships decided by
measurement.

Every stage's result is timed on the hardware profile and scored on the test split. A stage
is *rejected* when it loses more accuracy than the budget allows, and recorded as *slower*
when it runs slower than the model it started from; either way the next stage starts from
the last accepted model. When the chain is done, every accepted stage's artifact is timed
again side by side (interleaved rounds, so the machine's state touches all alike), and the
model ships the fastest of them that is no slower than the baseline (ties: the most
accurate): ``pareto.choose_deployed``.

A figure the device flags unreliable (too noisy, or taken while other processes used its
cores) is measured again, and a comparison taken again (``UNRELIABLE_RETAKES``). Every record
says whether its latency was measured reliably. A stage whose comparison with its input or
the baseline stayed unreliable is *unconfirmed*: not shown to be no slower, so it never ships
and the chain goes on from the last accepted model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
from torch import nn

from compress._base import CompressionStage, ModelContext, StageOutput, StageSkipped
from compress._baseline import BaselineStage
from compress._distilled import DistilledStage
from compress._int8_stage import Int8Stage
from compress._pruned import PrunedStage
from compress._structure import save_pruned, structure_key
from compress._tensorrt_stage import TensorRTStage
from evaluators import accuracy, atomic_write_bytes, count_macs, count_params, export_onnx
from evaluators.latency import UNRELIABLE_RETAKES, Latency
from pareto import choose_deployed

__all__ = ["CompressionPipeline", "StageRecord", "deployed_summary"]

logger = logging.getLogger(__name__)

#: Interleaved measurements of each accepted artifact before the deployed one is chosen.
SIDE_BY_SIDE_ROUNDS = 3
FLOAT_STAGES = ("baseline", "pruned", "distilled")
LATENCY_FIELDS = ("latency_ms", "latency_cv", "latency_samples_ms", "latency_reliable",
                  "latency_note")


@dataclass(frozen=True)
class StageRecord:
    """One row of ``compression.parquet``."""

    model_id: str
    stage: str
    accuracy: float  # fraction of the test split
    latency_ms: float
    latency_cv: float
    params: float
    macs: float
    size_bytes: float
    artifact: str  # the deployable file, relative to the run directory's models/
    status: str  # ok | rejected | slower | unconfirmed | skipped
    reason: str
    latency_samples_ms: str = "[]"  # JSON list of the timed runs behind latency_ms
    input_stage: str = ""  # the stage whose model this one started from
    speedup: float = math.nan  # the baseline's latency over this one's
    deployed: bool = False  # the artifact this model ships
    latency_reliable: bool = True  # whether the device measured latency_ms reliably
    latency_note: str = ""  # why not, when not

    def to_dict(self) -> dict[str, object]:
        """Returns the row as a dict."""
        return asdict(self)


@dataclass
class _Timed:
    """What an accepted stage ships and how it is timed."""

    record: StageRecord
    timed: Any
    key: str  # equal keys: the same graph, one measurement
    files: tuple[str, ...] = ()  # what it wrote to the model's directory
    model: nn.Module | None = None  # the float model, for a float stage


class CompressionPipeline:
    """Runs baseline -> pruned -> distilled -> int8 -> tensorrt on one model.

    Args:
        stages: The stages before ``tensorrt`` (which always runs last, or says why not);
            the default chain when None.
    """

    def __init__(self, stages: Sequence[CompressionStage] | None = None) -> None:
        self.stages = list(stages) if stages is not None else [
            BaselineStage(), PrunedStage(), DistilledStage(), Int8Stage()
        ]

    def run(
        self, ctx: ModelContext, model: nn.Module, on_stage: Callable[[StageRecord], None] | None = None
    ) -> list[StageRecord]:
        """Compresses ``model`` and returns one record per stage (tensorrt included), the
        shipped one marked ``deployed``.

        Raises:
            Exception: a stage failed in a way that is not a skip; nothing is recorded for it.
        """
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        records: list[StageRecord] = []
        accepted: dict[str, _Timed] = {}
        current, parent = model, None
        last_ok: tuple[nn.Module, StageRecord | None] = (model, None)
        baseline: StageRecord | None = None
        int8_onnx: bytes | None = None
        # one measurement per structure in a chain, even one the cache does not keep
        measured: dict[str, Latency] = {}
        timed_of: dict[str, Any] = {}  # what each measured stage timed, to compare again
        key_of: dict[str, str] = {}  # each measured stage's structure
        for stage in [*self.stages, TensorRTStage()]:
            if isinstance(stage, TensorRTStage):
                stage.int8_onnx = int8_onnx
            try:
                out = stage.apply(ctx, current)
            except StageSkipped as skip:
                records.append(self._skipped(ctx, stage.name, str(skip)))
                if on_stage is not None:
                    on_stage(records[-1])
                continue
            if out.model is not None:  # a float stage ships its ONNX export
                onnx = export_onnx(out.model, ctx.input_shape,
                                   metadata={**ctx.metadata, "stage": stage.name})
                out = dataclasses.replace(out, files={**out.files, f"{stage.name}.onnx": onnx},
                                          artifact=f"{stage.name}.onnx")
            timed, key = self._what_to_time(ctx, stage.name, out)
            record = self._measure(ctx, stage.name, out, timed, key, measured)
            if out.model is None and parent is not None and math.isfinite(record.accuracy):
                # a quantized export of its input's graph: the same weights count and MACs
                record = dataclasses.replace(record, params=parent.params, macs=parent.macs)
            if baseline is None:
                baseline, ctx.baseline = record, out.model
            if timed is not None:
                timed_of[stage.name], key_of[stage.name] = timed, key
            input_timed = timed_of.get(parent.stage) if parent is not None else None
            if parent is not None and key_of.get(parent.stage) == key:
                # its input's graph with new weights (distillation): its input's latency, as
                # judged, is its own; timing one graph against itself would judge noise
                record = dataclasses.replace(
                    record, **{f: getattr(parent, f) for f in LATENCY_FIELDS})
                input_timed = None
            record = self._judge(ctx, record, baseline, parent, last_ok[1],
                                 (input_timed, timed) if input_timed is not None else None)
            if record.status == "ok":
                for name, data in out.files.items():
                    atomic_write_bytes(ctx.out_dir / name, data)
                if timed is not None and math.isfinite(record.accuracy):
                    accepted[stage.name] = _Timed(record, timed, key, tuple(out.files),
                                                  out.model)
                if out.model is not None:
                    current, parent = out.model, record
                    last_ok = (current, parent)
                if out.onnx is not None:
                    int8_onnx = out.onnx
            elif record.status == "rejected" and stage.recoverable and out.model is not None:
                # the next stage trains on: it starts from this model, which never ships
                for name, data in out.files.items():
                    if name != out.artifact:
                        atomic_write_bytes(ctx.out_dir / name, data)
                current, parent = out.model, record
                record = dataclasses.replace(record, reason=record.reason.replace(
                    "the next stage starts from the", "the next stage trains on from it; "
                    "if it cannot win the accuracy back, the chain goes on from the", 1))
            else:  # over the budget or slower: go on from the last accepted model
                current, parent = last_ok
            records.append(record)
            if on_stage is not None:
                on_stage(record)
        records = self._side_by_side(ctx, records, accepted)
        records = self._mark_deployed(records)
        final = [t.model for t in accepted.values() if t.model is not None
                 and next(r for r in records if r.stage == t.record.stage).status == "ok"]
        self._write_final(ctx, final[-1] if final else model, records)
        return records

    # -- measuring --------------------------------------------------------------------------

    @staticmethod
    def _what_to_time(ctx: ModelContext, stage: str, out: StageOutput) -> tuple[Any, str]:
        """Returns what the meter times for ``out`` and the key its measurement is shared by."""
        if out.model is None:
            return out.timed, f"{ctx.model_id}:{stage}"
        key = structure_key(out.model)
        if ctx.meter.backend.accepts_onnx:  # time the very file that ships
            return out.files[f"{stage}.onnx"], key
        return out.model, key

    def _measure(
        self, ctx: ModelContext, stage: str, out: StageOutput, timed: Any, key: str,
        measured: dict[str, Latency],
    ) -> StageRecord:
        artifact = f"{ctx.out_dir.name}/{out.artifact}" if out.artifact else ""
        size = float(len(out.files.get(out.artifact, b""))) if out.artifact else math.nan
        params = macs = math.nan
        if out.model is not None:
            with ctx.compute_guard():
                acc = accuracy(out.model, ctx.data.loader("test", 512))
                params = float(count_params(out.model))
                macs = float(count_macs(out.model, ctx.input_shape))
        elif timed is not None and out.score is not None:
            with ctx.compute_guard():
                acc = out.score(ctx.data.x_test, ctx.data.y_test)
        else:  # an engine: measured by a TensorRT profile, no accuracy of its own here
            return StageRecord(ctx.model_id, stage, math.nan, math.nan, math.nan, math.nan,
                               math.nan, size, artifact, "ok", f"built ({out.info})")
        # a stage that changes weights only (distillation) runs its input's graph: one key
        if key not in measured:
            measured[key] = ctx.meter.measure(timed, ctx.input_shape, key=key,
                                              retakes=UNRELIABLE_RETAKES)
        latency = measured[key]
        return _with_latency(StageRecord(
            model_id=ctx.model_id, stage=stage, accuracy=acc, latency_ms=latency.median_ms,
            latency_cv=latency.cv, params=params, macs=macs, size_bytes=size,
            artifact=artifact, status="ok", reason=", ".join(
                f"{k}={v}" for k, v in out.info.items() if not isinstance(v, (list, tuple, dict))),
        ), latency)

    def _side_by_side(
        self, ctx: ModelContext, records: list[StageRecord], accepted: dict[str, _Timed]
    ) -> list[StageRecord]:
        """Times every accepted artifact again in interleaved rounds and judges them on those
        figures: the deployed choice compares measurements taken under the same conditions."""
        if not accepted:
            return records
        keys = list(dict.fromkeys(t.key for t in accepted.values()))
        first = {key: next(t.timed for t in accepted.values() if t.key == key) for key in keys}
        taken = ctx.meter.compare_side_by_side(
            [first[k] for k in keys], ctx.input_shape, rounds=SIDE_BY_SIDE_ROUNDS)
        latency = dict(zip(keys, taken[-1]))  # the last comparison decides
        by_stage = {stage: latency[t.key] for stage, t in accepted.items()}
        base = by_stage.get("baseline")
        result = []
        for record in records:
            lat = by_stage.get(record.stage)
            if lat is None or record.status != "ok":
                result.append(record)
                continue
            record = dataclasses.replace(
                _with_latency(record, lat),
                speedup=base.median_ms / lat.median_ms if base is not None else math.nan)
            parent = by_stage.get(record.input_stage)
            refs = [(name, ref) for name, ref in (("its input", parent), ("the baseline", base))
                    if ref is not None and record.stage != "baseline"]
            # the baseline is the model itself: its figure is kept, flagged if need be
            doubtful = ([m for m in (lat, *(ref for _, ref in refs)) if not m.reliable]
                        if refs else [])
            slower = [(name, ref) for name, ref in refs if lat.median_ms > ref.median_ms]
            if doubtful:
                name, ref = (slower or refs)[0]
                record = _verdict(record, "unconfirmed", (
                    f"measured side by side {len(taken)} times, last {lat.median_ms:.4f} ms "
                    f"against {name}'s {ref.median_ms:.4f} ms on profile "
                    f"{ctx.profile.name!r}, but never reliably ({doubtful[0].unreliable_reason})"
                    f": not shown to be no slower, so not shipped"))
            elif slower:
                name, ref = slower[0]
                record = _verdict(record, "slower", (
                    f"measured side by side, {lat.median_ms:.4f} ms is "
                    f"{lat.median_ms / ref.median_ms:.2f}x {name}'s {ref.median_ms:.4f} ms on "
                    f"profile {ctx.profile.name!r}: not shipped"))
            if record.status != "ok":
                for file in accepted[record.stage].files:  # never left where a deployer looks
                    (ctx.out_dir / file).unlink(missing_ok=True)
            result.append(record)
        return result

    # -- deciding ---------------------------------------------------------------------------

    @staticmethod
    def _judge(
        ctx: ModelContext, record: StageRecord, baseline: StageRecord,
        parent: StageRecord | None, fallback: StageRecord | None,
        pair: tuple[Any, Any] | None = None,
    ) -> StageRecord:
        """Returns ``record`` rejected (over the accuracy budget), slower (than ``parent``, the
        model it started from) or accepted; ``fallback`` is the last accepted stage, where the
        chain goes on from when it is not.

        ``pair`` is what ``parent`` and this stage timed: a stage whose own measurement says
        it is slower than its input, or that the device could not measure reliably (its own
        or its input's), is timed again beside it in interleaved rounds, and the verdict
        follows that comparison; one that stays unreliable is *unconfirmed*. Two measurements
        taken minutes apart differ by the machine's state as much as by the models (on a
        shared VM, by 10-30%)."""
        record = dataclasses.replace(record, input_stage=parent.stage if parent else "")
        if not math.isfinite(record.accuracy):
            return record
        budget = ctx.settings.max_accuracy_drop
        drop = 100.0 * (baseline.accuracy - record.accuracy)
        back = fallback.stage if fallback else "baseline"
        if drop > budget:
            return _verdict(record, "rejected", (
                f"test accuracy {record.accuracy:.4f} is {drop:.2f} points below the "
                f"baseline's {baseline.accuracy:.4f} (budget {budget:g}); the next stage "
                f"starts from the {back} model"))
        if parent is None:
            return record
        reliable = record.latency_reliable and parent.latency_reliable
        if record.latency_ms <= parent.latency_ms and (reliable or pair is None):
            return record
        first, theirs, ours, how = record.latency_ms, parent.latency_ms, record.latency_ms, ""
        if pair is not None:
            taken = ctx.meter.compare_side_by_side(
                list(pair), ctx.input_shape, rounds=SIDE_BY_SIDE_ROUNDS)
            before, after = taken[-1]
            theirs, ours = before.median_ms, after.median_ms
            how = "measured side by side, "
            record = _with_latency(record, after)
            if not (before.reliable and after.reliable):
                return _verdict(record, "unconfirmed", (
                    f"first measured at {first:.4f} ms against the {parent.stage} model's "
                    f"{parent.latency_ms:.4f} ms; side by side {len(taken)} times, last "
                    f"{ours:.4f} ms against {theirs:.4f} ms, but never reliably "
                    f"({before.unreliable_reason or after.unreliable_reason}): not shown to be "
                    f"no slower than its input, so the next stage starts from the {back} model"))
            if ours <= theirs:
                note = (f"first measured at {first:.4f} ms against the {parent.stage} model's "
                        f"{parent.latency_ms:.4f} ms; side by side {ours:.4f} ms against "
                        f"{theirs:.4f} ms, so not slower")
                return dataclasses.replace(
                    record, reason=note + (f"; {record.reason}" if record.reason else ""))
        return _verdict(record, "slower", (
            f"{how}{ours:.4f} ms is {ours / theirs:.2f}x the {parent.stage} model's "
            f"{theirs:.4f} ms on profile {ctx.profile.name!r}: slower than its input, so the "
            f"next stage starts from the {back} model"))

    @staticmethod
    def _mark_deployed(records: list[StageRecord]) -> list[StageRecord]:
        """Marks the record ``pareto.choose_deployed`` picks."""
        frame = pd.DataFrame([r.to_dict() for r in records])
        chosen = choose_deployed(frame)
        return [dataclasses.replace(r, deployed=i == chosen) for i, r in enumerate(records)]

    @staticmethod
    def _skipped(ctx: ModelContext, stage: str, reason: str) -> StageRecord:
        nan = math.nan
        return StageRecord(ctx.model_id, stage, nan, nan, nan, nan, nan, nan, "", "skipped", reason)

    @staticmethod
    def _write_final(ctx: ModelContext, model: nn.Module, records: list[StageRecord]) -> None:
        """Writes ``model.onnx`` and ``model.pt`` of the last accepted float stage, and
        ``deployed.json``: what this model ships and why."""
        last = [r for r in records if r.status == "ok" and r.stage in FLOAT_STAGES]
        stage = last[-1].stage if last else "baseline"
        onnx = export_onnx(model, ctx.input_shape, metadata={**ctx.metadata, "stage": stage})
        atomic_write_bytes(ctx.out_dir / "model.onnx", onnx)
        atomic_write_bytes(ctx.out_dir / "model.pt", save_pruned(model))
        atomic_write_bytes(ctx.out_dir / "deployed.json",
                           json.dumps(deployed_summary(records), indent=2).encode())


def deployed_summary(records: Sequence[StageRecord]) -> dict[str, Any]:
    """Returns what a model ships (stage, file, test accuracy, latency, speed-up) and why."""
    chosen = next((r for r in records if r.deployed), None)
    if chosen is None:
        return {"model_id": records[0].model_id if records else "", "stage": None,
                "why": "no stage has a measured accuracy and latency"}
    why = ("the fastest stage within the accuracy budget, no slower than the baseline"
           if chosen.stage != "baseline" else
           "no later stage was both within the accuracy budget and faster than the baseline")
    for r in records:
        if r.status == "slower":
            why += f"; {r.stage} was slower ({r.reason})"
        elif r.status == "unconfirmed":
            why += f"; {r.stage} could not be measured reliably ({r.reason})"
    if not chosen.latency_reliable:
        why += (f"; its own latency could not be measured reliably ({chosen.latency_note}): "
                "measure it again on a quieter device")
    return {"model_id": chosen.model_id, "stage": chosen.stage, "artifact": chosen.artifact,
            "accuracy": chosen.accuracy, "latency_ms": chosen.latency_ms,
            "latency_reliable": chosen.latency_reliable, "speedup": chosen.speedup, "why": why}


def _verdict(record: StageRecord, status: str, why: str) -> StageRecord:
    """Returns ``record`` with ``status``, its reason ``why`` followed by what the stage said."""
    return dataclasses.replace(record, status=status,
                               reason=why + (f" [{record.reason}]" if record.reason else ""))


def _with_latency(record: StageRecord, latency: Latency) -> StageRecord:
    """Returns ``record`` with ``latency``'s median, CV, samples and reliability."""
    return dataclasses.replace(
        record, latency_ms=latency.median_ms, latency_cv=latency.cv,
        latency_samples_ms=_samples_json(latency), latency_reliable=latency.reliable,
        latency_note=latency.unreliable_reason)


def _samples_json(latency: Latency) -> str:
    return json.dumps([round(s, 6) for s in latency.samples_ms])
