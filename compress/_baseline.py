"""Stage ``baseline``: the extracted subnet, fine-tuned with distillation from the supernet."""

from __future__ import annotations

import copy

from torch import nn

from compress._base import CompressionStage, ModelContext, StageOutput, refresh_batchnorm
from compress._distill import DistillConfig, distill
from compress._structure import save_pruned
from evaluators import OptimConfig, recalibrate_batchnorm


class BaselineStage(CompressionStage):
    """Recalibrates BatchNorm and fine-tunes the inherited weights (in-place KD teacher)."""

    name = "baseline"

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        """Returns the fine-tuned candidate; it is the accuracy reference of the budget."""
        s = ctx.settings
        student = copy.deepcopy(model)
        with ctx.compute_guard():
            recalibrate_batchnorm(student, ctx.data.loader("train", s.batch_size, shuffle=True, seed=s.seed), 8)
            if s.finetune_epochs > 0:
                student = distill(
                    student, ctx.teacher, ctx.data, epochs=s.finetune_epochs,
                    batch_size=s.batch_size, seed=s.seed, optim=OptimConfig(lr=s.lr),
                    config=DistillConfig(
                        temperature=s.distill.temperature, alpha=s.distill.alpha, feature_weight=0.0
                    ),
                ).model
        refresh_batchnorm(ctx, student)
        return StageOutput(model=student, files={"baseline.pt": save_pruned(student)})
