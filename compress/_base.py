"""The contract of a compression stage and what the pipeline records about it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from compress._settings import CompressSettings
from evaluators import DataSplits, recalibrate_batchnorm
from evaluators.latency import LatencyMeter
from hwprofiles import HardwareProfile


class StageSkipped(Exception):
    """A stage that cannot run here (e.g. TensorRT without a GPU); the message says why."""


@dataclass
class ModelContext:
    """Everything the stages of one model share."""

    model_id: str
    arch_json: str
    build_unpruned: Callable[[], nn.Module]  # a fresh static network of the arch
    teacher: nn.Module  # the supernet's largest subnet, for distillation
    data: DataSplits
    profile: HardwareProfile
    meter: LatencyMeter
    settings: CompressSettings
    out_dir: Path
    metadata: dict[str, Any]  # what every exported ONNX file carries
    compute_guard: Callable[[], AbstractContextManager[object]]
    baseline: nn.Module | None = None  # set after the baseline stage (the "candidate")

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Returns the model input shape for batch 1."""
        return self.data.input_shape


@dataclass
class StageOutput:
    """A stage's result: a float model, or a deployable ONNX graph (and how to time it)."""

    model: nn.Module | None = None  # the float model the next stage starts from
    onnx: bytes | None = None  # a final graph (int8): accuracy is taken with onnxruntime
    timed: Any = None  # what the latency meter times, when not ``model``
    files: dict[str, bytes] = field(default_factory=dict)  # artifacts, by file name
    artifact: str = ""  # the file that is this stage's model
    info: dict[str, Any] = field(default_factory=dict)


def refresh_batchnorm(ctx: ModelContext, model: nn.Module) -> None:
    """Re-estimates ``model``'s BatchNorm statistics on training batches after it trained.

    Running statistics lag weights that moved during fine-tuning (and pruning removes the
    channels they described); evaluated as they are, a good model can look much worse.
    """
    s = ctx.settings
    with ctx.compute_guard():
        recalibrate_batchnorm(model, ctx.data.loader("train", s.batch_size, shuffle=True, seed=s.seed), 8)


class CompressionStage(ABC):
    """One step of the per-model pipeline; it never mutates its input model."""

    name: str = ""

    @abstractmethod
    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        """Returns the stage's result for ``model`` (the last accepted stage's).

        Raises:
            StageSkipped: the stage cannot run here; the pipeline records why.
        """
