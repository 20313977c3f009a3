"""Stage ``tensorrt``: an engine built with the TensorRT Python API, where it can be."""

from __future__ import annotations

from torch import nn

from compress._base import CompressionStage, ModelContext, StageOutput, StageSkipped
from compress._tensorrt import build_engine, tensorrt_unavailable_reason
from evaluators import export_onnx


class TensorRTStage(CompressionStage):
    """Builds ``model.engine`` (INT8 from the QDQ graph when there is one, else fp16)."""

    name = "tensorrt"

    def __init__(self, int8_onnx: bytes | None = None) -> None:
        self.int8_onnx = int8_onnx

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        """Returns the serialised engine.

        Raises:
            StageSkipped: tensorrt does not import here or there is no CUDA GPU.
        """
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise StageSkipped(f"TensorRT engine not built: {reason}")
        if self.int8_onnx is not None:
            engine, precision = build_engine(self.int8_onnx, precision="int8"), "int8"
        else:
            onnx = export_onnx(model, ctx.input_shape, metadata={**ctx.metadata, "stage": "tensorrt"})
            engine, precision = build_engine(onnx, precision="fp16"), "fp16"
        return StageOutput(
            files={"model.engine": engine}, artifact="model.engine", info={"precision": precision}
        )
