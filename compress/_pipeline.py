"""The per-model pipeline: stages in order, each measured, the accuracy budget enforced."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from compress._base import CompressionStage, ModelContext, StageOutput, StageSkipped
from compress._baseline import BaselineStage
from compress._distilled import DistilledStage
from compress._export import export_onnx
from compress._int8_stage import Int8Stage
from compress._pruned import PrunedStage
from compress._structure import save_pruned
from compress._tensorrt_stage import TensorRTStage
from evaluators import accuracy, atomic_write_bytes, count_macs, count_params

logger = logging.getLogger(__name__)


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
    artifact: str  # path relative to the run directory
    status: str  # ok | rejected | skipped
    reason: str
    latency_samples_ms: str = "[]"  # JSON list of the timed runs behind latency_ms

    def to_dict(self) -> dict[str, object]:
        """Returns the row as a dict."""
        return asdict(self)


def onnx_accuracy(onnx: bytes, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    """Returns the top-1 accuracy of an ONNX classifier (fixed batch-1 or any batch input)."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    fixed = session.get_inputs()[0].shape[0]
    size = fixed if isinstance(fixed, int) and fixed > 0 else batch
    correct = 0
    xs = x.numpy().astype(np.float32)
    for i in range(0, len(xs), size):
        chunk = xs[i : i + size]
        if len(chunk) < size:  # a fixed batch: pad, then drop the padding's predictions
            chunk = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), np.float32)])
        logits = session.run(None, {name: chunk})[0][: len(xs[i : i + size])]
        correct += int((logits.argmax(1) == y[i : i + size].numpy()).sum())
    return correct / len(xs)


class CompressionPipeline:
    """Runs baseline -> pruned -> distilled -> int8 -> tensorrt on one model.

    A stage whose test accuracy falls more than ``max_accuracy_drop`` points below the
    baseline's is rejected: the next stage starts from the last accepted model. The final
    float model is exported as ``model.onnx`` and its weights as ``model.pt``.
    """

    def __init__(self, stages: Sequence[CompressionStage] | None = None) -> None:
        self.stages = list(stages) if stages is not None else [
            BaselineStage(), PrunedStage(), DistilledStage(), Int8Stage()
        ]

    def run(
        self, ctx: ModelContext, model: nn.Module, on_stage: Callable[[StageRecord], None] | None = None
    ) -> list[StageRecord]:
        """Compresses ``model`` and returns one record per stage (tensorrt included).

        Raises:
            Exception: a stage failed in a way that is not a skip; nothing is recorded for it.
        """
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        records: list[StageRecord] = []
        current = model
        reference: float | None = None
        int8_onnx: bytes | None = None
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
            record = self._measure(ctx, stage.name, out)
            if reference is None:
                reference = record.accuracy
                ctx.baseline = out.model
            drop = 100.0 * (reference - record.accuracy)
            if math.isfinite(record.accuracy) and drop > ctx.settings.max_accuracy_drop:
                record = dataclasses.replace(record, status="rejected", reason=(
                    f"test accuracy {record.accuracy:.4f} is {drop:.2f} points below the "
                    f"baseline's {reference:.4f} (budget {ctx.settings.max_accuracy_drop:g}); "
                    "kept the previous stage's model"
                ))
            else:
                for name, data in out.files.items():
                    atomic_write_bytes(ctx.out_dir / name, data)
                if out.model is not None:
                    current = out.model
                if stage.name == "int8":
                    int8_onnx = out.onnx
            records.append(record)
            if on_stage is not None:
                on_stage(record)
        self._write_final(ctx, current, records)
        return records

    def _measure(self, ctx: ModelContext, stage: str, out: StageOutput) -> StageRecord:
        artifact = f"{ctx.out_dir.name}/{out.artifact}" if out.artifact else ""
        size = float(len(out.files.get(out.artifact, b""))) if out.artifact else math.nan
        params: float
        macs: float
        if out.model is not None:
            with ctx.compute_guard():
                acc = accuracy(out.model, ctx.data.loader("test", 512))
                params, macs = count_params(out.model), count_macs(out.model, ctx.input_shape)
            latency = ctx.meter.measure(out.model, ctx.input_shape)
        elif out.onnx is not None:
            with ctx.compute_guard():
                acc = onnx_accuracy(out.onnx, ctx.data.x_test, ctx.data.y_test)
            latency = ctx.meter.measure(out.timed if out.timed is not None else out.onnx, ctx.input_shape)
            params = macs = math.nan
        else:  # an engine: measured by a TensorRT profile, no accuracy of its own here
            return StageRecord(ctx.model_id, stage, math.nan, math.nan, math.nan, math.nan,
                               math.nan, size, artifact, "ok", f"built ({out.info})")
        return StageRecord(
            model_id=ctx.model_id, stage=stage, accuracy=acc, latency_ms=latency.median_ms,
            latency_cv=latency.cv, params=float(params), macs=float(macs), size_bytes=size,
            artifact=artifact, status="ok", reason=", ".join(f"{k}={v}" for k, v in out.info.items()
                                                          if not isinstance(v, (list, tuple))),
            latency_samples_ms=json.dumps([round(s, 6) for s in latency.samples_ms]),
        )

    @staticmethod
    def _skipped(ctx: ModelContext, stage: str, reason: str) -> StageRecord:
        nan = math.nan
        return StageRecord(ctx.model_id, stage, nan, nan, nan, nan, nan, nan, "", "skipped", reason)

    @staticmethod
    def _write_final(ctx: ModelContext, model: nn.Module, records: list[StageRecord]) -> None:
        """Writes ``model.onnx`` and ``model.pt`` of the last accepted float stage."""
        last = [r for r in records if r.status == "ok" and r.stage in ("baseline", "pruned", "distilled")]
        stage = last[-1].stage if last else "baseline"
        onnx = export_onnx(model, ctx.input_shape, metadata={**ctx.metadata, "stage": stage})
        atomic_write_bytes(ctx.out_dir / "model.onnx", onnx)
        atomic_write_bytes(ctx.out_dir / "model.pt", save_pruned(model))

