"""The contract of a compression stage and what the pipeline records about it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from compress._latency_table import LayerLatencyTable
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
    latency_table: LayerLatencyTable | None = None  # shared by the models of one run

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Returns the model input shape for batch 1."""
        return self.data.input_shape


@dataclass
class StageOutput:
    """A stage's result: a float model, or a deployable artifact (and how to time and score it).

    A float stage returns ``model``: the pipeline exports it as ``<stage>.onnx``, times what
    the profile's backend runs and takes its accuracy with torch. Any other stage returns
    ``timed`` (what the latency meter times: an INT8 graph, an OpenVINO IR, a fake-quant
    module) and ``score`` (its test accuracy), or neither for an artifact that cannot be
    run here (a TensorRT engine).
    """

    model: nn.Module | None = None  # the float model the next stage may start from
    onnx: bytes | None = None  # an INT8 QDQ graph a later stage (TensorRT) builds from
    timed: Any = None  # what the latency meter times, when not ``model``
    score: Callable[[Tensor, Tensor], float] | None = None  # accuracy of ``timed``'s artifact
    files: dict[str, bytes] = field(default_factory=dict)  # artifacts, by file name
    artifact: str = ""  # the file that is this stage's deployable model
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
    """One step of the per-model pipeline; it never mutates its input model.

    Attributes:
        name: The stage's name in ``compression.parquet``.
        recoverable: An over-budget result still goes on to the next stage, whose training
            may win the accuracy back (pruning before distillation); it never ships itself.
    """

    name: str = ""
    recoverable: bool = False

    @abstractmethod
    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        """Returns the stage's result for ``model`` (the last accepted stage's).

        Raises:
            StageSkipped: the stage cannot run here; the pipeline records why.
        """
