"""Stage ``pruned``: dependency-aware channel pruning to a measured speed-up (the default), an
absolute latency or a MACs ratio."""

from __future__ import annotations

import json

import torch
from torch import nn

from compress._base import (
    CompressionStage,
    ModelContext,
    StageOutput,
    StageSkipped,
    refresh_batchnorm,
)
from compress._distill import DistillConfig, distill
from compress._pruning import LatencyTarget, MacsTarget, prune
from compress._structure import save_pruned
from evaluators import OptimConfig, accuracy


class PrunedStage(CompressionStage):
    """Prunes iteratively; after each step the student is fine-tuned with distillation.

    A latency target chooses the channels by their measured cost on the profile; a step that
    loses more validation accuracy than ``compress.max_accuracy_drop`` is undone.
    """

    name = "pruned"
    recoverable = True  # distillation, next, may win back what pruning cost

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        """Returns the pruned model and its pruning plan (``prune_plan.json``).

        Raises:
            StageSkipped: no cut of any channel group saves time on the profile.
        """
        s = ctx.settings
        p = s.prune
        target: MacsTarget | LatencyTarget
        if p.macs_ratio is not None:
            target = MacsTarget(ratio=float(p.macs_ratio))
        else:
            target = LatencyTarget(
                meter=ctx.meter, input_shape=ctx.input_shape, table=ctx.latency_table,
                speedup=p.speedup if p.latency_ms is None else None, latency_ms=p.latency_ms,
            )
        kd = DistillConfig(temperature=s.distill.temperature, alpha=s.distill.alpha)

        def finetune(student: nn.Module, step: int) -> None:
            with ctx.compute_guard():
                distill(
                    student, ctx.teacher, ctx.data, epochs=p.finetune_epochs,
                    batch_size=s.batch_size, seed=s.seed + step, optim=OptimConfig(lr=s.lr),
                    config=kd, in_place=True,
                )
            refresh_batchnorm(ctx, student)

        def validate(candidate: nn.Module) -> float:
            with ctx.compute_guard():
                return accuracy(candidate, ctx.data.loader("val", 512))

        example = torch.zeros(ctx.input_shape)
        calibration = (ctx.data.x_train[: s.batch_size], ctx.data.y_train[: s.batch_size])
        result = prune(
            model, example, target=target, importance=p.importance, iterations=p.iterations,
            finetune=finetune if p.finetune_epochs else None,
            round_to=ctx.profile.channel_multiple, calibration=calibration,
            validate=validate, max_accuracy_drop=s.max_accuracy_drop,
        )
        if not result.steps:
            raise StageSkipped(f"nothing pruned: {result.note}")
        refresh_batchnorm(ctx, result.model)
        plan = json.dumps(result.plan, indent=2, default=str).encode()
        info: dict[str, object] = {
            "macs_before": result.macs_before, "macs_after": result.macs_after,
            "macs_ratio": round(result.macs_before / max(1, result.macs_after), 3),
        }
        if result.latency_before_ms is not None and result.latency_after_ms:
            info["pruning_speedup"] = round(result.latency_before_ms / result.latency_after_ms, 3)
        if result.speedup_side_by_side is not None:
            info["speedup_side_by_side"] = round(result.speedup_side_by_side, 3)
        if result.note:
            info["note"] = result.note
        return StageOutput(
            model=result.model,
            files={"pruned.pt": save_pruned(result.model), "prune_plan.json": plan},
            info=info,
        )
