"""Stage ``int8``: post-training INT8 calibration, on the path the hardware profile deploys.

* onnxruntime profiles: onnxruntime's static QDQ quantisation (per-channel, calibrated),
  ``model.int8.onnx``; the same quantiser the search's latency meter uses.
* openvino profiles: NNCF post-training quantisation of the OpenVINO model, saved as
  OpenVINO IR (``model.int8.xml`` / ``model.int8.bin``).
* TensorRT and torch (GPU) profiles: NVIDIA ModelOpt's INT8 quantisation exported as a QDQ
  graph for TensorRT, ``model.int8.onnx``.

Whether INT8 ships is the pipeline's decision, by measurement: on a CPU where integer
kernels do not pay (depthwise convolutions, hard-swish), the INT8 artifact is slower than
its fp32 input and the model ships fp32.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from compress._base import CompressionStage, ModelContext, StageOutput
from compress._int8 import export_modelopt_onnx, quantize_modelopt
from evaluators import export_onnx, onnx_accuracy, quantize_onnxruntime


def calibration_batches(ctx: ModelContext) -> list[torch.Tensor]:
    """Returns ``compress.calibration_batches`` seeded batches of training data (the set the
    search's latency meter calibrates INT8 profiles with)."""
    s = ctx.settings
    inputs = ctx.data.calibration_inputs(s.calibration_batches, s.batch_size, seed=s.seed + 1)
    return list(torch.split(inputs, s.batch_size))


class Int8Stage(CompressionStage):
    """Calibrates and exports the INT8 artifact of the profile's runtime."""

    name = "int8"

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        """Returns the INT8 artifact, what the meter times and how it is scored."""
        batches = calibration_batches(ctx)
        metadata = {**ctx.metadata, "stage": "int8"}
        backend = ctx.profile.backend
        with ctx.compute_guard():
            if backend in ("onnxruntime", "openvino"):
                fp32 = export_onnx(model, ctx.input_shape, metadata=metadata)
                calibration = torch.cat(batches).numpy().astype(np.float32)
            if backend == "onnxruntime":
                onnx = quantize_onnxruntime(
                    fp32, calibration, per_channel=True, calibrate_method=ctx.settings.calibrator
                )
                return StageOutput(
                    onnx=onnx, timed=onnx, score=functools.partial(onnx_accuracy, onnx),
                    files={"model.int8.onnx": onnx}, artifact="model.int8.onnx",
                    info={"path": "onnxruntime static QDQ"},
                )
            if backend == "openvino":
                from compress._openvino import openvino_accuracy, quantize_nncf

                ir = quantize_nncf(fp32, calibration)
                return StageOutput(
                    timed=ir, score=functools.partial(openvino_accuracy, ir),
                    files={"model.int8.xml": ir.xml, "model.int8.bin": ir.weights},
                    artifact="model.int8.xml", info={"path": "NNCF post-training INT8"},
                )
            # ModelOpt calibrates with the max (like minmax) or a histogram method
            qmodel = quantize_modelopt(
                model, batches, calibrator="max" if ctx.settings.calibrator == "minmax" else "histogram"
            )
            onnx = export_modelopt_onnx(qmodel, ctx.input_shape, metadata=metadata)
        return StageOutput(
            onnx=onnx, timed=qmodel if backend == "torch" else onnx,
            score=functools.partial(onnx_accuracy, onnx), files={"model.int8.onnx": onnx},
            artifact="model.int8.onnx", info={"path": "ModelOpt QDQ"},
        )
