"""Stage ``distilled``: knowledge distillation into the (pruned) student."""

from __future__ import annotations

import copy

from torch import nn

from compress._base import CompressionStage, ModelContext, StageOutput, refresh_batchnorm
from compress._distill import DistillConfig, distill
from compress._structure import save_pruned
from evaluators import OptimConfig


class DistilledStage(CompressionStage):
    """Response distillation (and optionally feature distillation) from the teacher.

    The teacher is the supernet's largest subnet by default, or the unpruned, fine-tuned
    candidate (``compress.distill.teacher: candidate``).
    """

    name = "distilled"

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        """Returns the distilled student."""
        s, d = ctx.settings, ctx.settings.distill
        teacher = ctx.baseline if d.teacher == "candidate" and ctx.baseline is not None else ctx.teacher
        with ctx.compute_guard():
            result = distill(
                copy.deepcopy(model), teacher, ctx.data, epochs=d.epochs, batch_size=s.batch_size,
                seed=s.seed, optim=OptimConfig(lr=s.lr),
                config=DistillConfig(
                    temperature=d.temperature, alpha=d.alpha, feature_weight=d.feature_weight
                ),
            )
        refresh_batchnorm(ctx, result.model)
        return StageOutput(
            model=result.model, files={"distilled.pt": save_pruned(result.model)},
            info={"kd_losses": result.losses},
        )
