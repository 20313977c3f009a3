"""Stage ``int8``: post-training INT8 calibration, on the path the hardware profile deploys.

onnxruntime profiles get onnxruntime's static QDQ quantization (per-channel, calibrated):
ModelOpt's QDQ layout runs slower than fp32 in onnxruntime on a CPU. TensorRT and torch
(GPU) profiles get NVIDIA ModelOpt's INT8 quantization exported as a QDQ graph for TensorRT.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from compress._base import CompressionStage, ModelContext, StageOutput
from compress._export import export_onnx
from compress._int8 import export_modelopt_onnx, quantize_modelopt, quantize_onnxruntime


def calibration_batches(ctx: ModelContext) -> list[torch.Tensor]:
    """Returns ``compress.calibration_batches`` seeded batches of training data."""
    s = ctx.settings
    loader = ctx.data.loader("train", s.batch_size, shuffle=True, seed=s.seed + 1)
    return [x for (x, _), _ in zip(loader, range(s.calibration_batches))]


class Int8Stage(CompressionStage):
    """Calibrates and exports ``model.int8.onnx``."""

    name = "int8"

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        """Returns the INT8 QDQ graph; for torch profiles the fake-quant module is what is timed."""
        batches = calibration_batches(ctx)
        metadata = {**ctx.metadata, "stage": "int8"}
        with ctx.compute_guard():
            if ctx.profile.backend == "onnxruntime":
                fp32 = export_onnx(model, ctx.input_shape, metadata=metadata)
                calibration = torch.cat(batches).numpy().astype(np.float32)
                onnx = quantize_onnxruntime(
                    fp32, calibration, per_channel=True, calibrate_method=ctx.settings.calibrator
                )
                timed: object = onnx
                path = "onnxruntime static QDQ"
            else:
                # ModelOpt calibrates with the max (like minmax) or a histogram method
                qmodel = quantize_modelopt(
                    model, batches, calibrator="max" if ctx.settings.calibrator == "minmax" else "histogram"
                )
                onnx = export_modelopt_onnx(qmodel, ctx.input_shape, metadata=metadata)
                timed = qmodel if ctx.profile.backend == "torch" else onnx
                path = "ModelOpt QDQ"
        return StageOutput(
            onnx=onnx, timed=timed, files={"model.int8.onnx": onnx}, artifact="model.int8.onnx",
            info={"path": path},
        )
