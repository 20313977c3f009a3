"""Stage ``pruned``: dependency-aware channel pruning to a MACs ratio or a measured latency."""

from __future__ import annotations

import json

import torch
from torch import nn

from compress._base import CompressionStage, ModelContext, StageOutput, refresh_batchnorm
from compress._distill import DistillConfig, distill
from compress._pruning import LatencyTarget, MacsTarget, prune
from compress._structure import save_pruned
from evaluators import OptimConfig


class PrunedStage(CompressionStage):
    """Prunes iteratively; after each step the student is fine-tuned with distillation."""

    name = "pruned"

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        """Returns the pruned model and its pruning plan (``prune_plan.json``)."""
        s = ctx.settings
        p = s.prune
        target: MacsTarget | LatencyTarget
        if p.latency_ms is not None:
            target = LatencyTarget(latency_ms=p.latency_ms, meter=ctx.meter, input_shape=ctx.input_shape)
        else:
            target = MacsTarget(ratio=float(p.macs_ratio or 2.0))
        kd = DistillConfig(temperature=s.distill.temperature, alpha=s.distill.alpha)

        def finetune(student: nn.Module, step: int) -> None:
            with ctx.compute_guard():
                distill(
                    student, ctx.teacher, ctx.data, epochs=p.finetune_epochs,
                    batch_size=s.batch_size, seed=s.seed + step, optim=OptimConfig(lr=s.lr),
                    config=kd, in_place=True,
                )

        example = torch.zeros(ctx.input_shape)
        calibration = (ctx.data.x_train[: s.batch_size], ctx.data.y_train[: s.batch_size])
        # channel counts stay multiples of 8: onnxruntime's kernels run odd widths (63, 45)
        # slower than the wider multiple of 8, so fewer MACs could cost latency
        result = prune(
            model, example, target=target, importance=p.importance, iterations=p.iterations,
            finetune=finetune if p.finetune_epochs else None, round_to=8, calibration=calibration,
        )
        refresh_batchnorm(ctx, result.model)
        plan = json.dumps(result.plan, indent=2, default=str).encode()
        return StageOutput(
            model=result.model,
            files={"pruned.pt": save_pruned(result.model), "prune_plan.json": plan},
            artifact="pruned.pt",
            info={"macs_before": result.macs_before, "macs_after": result.macs_after},
        )
