"""What the compression pipeline does to each model: one frozen settings object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

STAGES = ("baseline", "pruned", "distilled", "int8", "tensorrt")


@dataclass(frozen=True)
class PruneSettings:
    """Structured pruning to one target: a measured ``speedup`` on the profile (1.5: two
    thirds of the latency), an absolute measured ``latency_ms``, or a ``macs_ratio``
    (2.0 = half the MACs); the first one set of ``macs_ratio``, ``latency_ms``, ``speedup``
    wins."""

    speedup: float | None = 1.5
    macs_ratio: float | None = None
    latency_ms: float | None = None
    importance: str = "magnitude"
    iterations: int = 3
    finetune_epochs: int = 3  # after each pruning step, with distillation from the teacher


@dataclass(frozen=True)
class DistillSettings:
    """Knowledge distillation into the pruned student."""

    epochs: int = 6
    temperature: float = 4.0
    alpha: float = 0.7
    feature_weight: float = 0.0
    teacher: Literal["supernet", "candidate"] = "supernet"


@dataclass(frozen=True)
class CompressSettings:
    """The whole per-model pipeline; mirrors the ``compress:`` section of a run's config."""

    finetune_epochs: int = 4
    max_accuracy_drop: float = 1.0  # points of test accuracy against the baseline
    calibration_batches: int = 8
    calibrator: Literal["minmax", "entropy", "percentile"] = "minmax"
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    prune: PruneSettings = field(default_factory=PruneSettings)
    distill: DistillSettings = field(default_factory=DistillSettings)
