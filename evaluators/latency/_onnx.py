"""Turning a model into serialised ONNX for the ONNX-based backends."""

from __future__ import annotations

import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evaluators.latency._base import ModelLike

__all__ = ["to_onnx"]

logger = logging.getLogger(__name__)

OPSET = 17
_CALIBRATION_BATCHES = 4


def to_onnx(
    model: ModelLike,
    input_shape: tuple[int, ...],
    *,
    int8: bool = False,
    symmetric: bool = False,
) -> bytes:
    """Returns a serialised ONNX model with a static input shape.

    A torch module is exported with the TorchScript exporter at opset 17 and, when
    ``int8`` is set, quantised to a QDQ INT8 graph. ONNX bytes or a path to a ``.onnx``
    file are returned as given: they are assumed to be in their final precision.

    Args:
        model: A torch module in eval mode, ONNX bytes, or the path of an ONNX file.
        input_shape: Input shape, batch included, used for export and calibration.
        int8: Quantise an exported module to INT8 (QDQ format, per-channel weights).
        symmetric: Quantise activations to signed INT8 with zero points of 0, as
            TensorRT requires. Otherwise activations are unsigned and asymmetric, the
            fastest form for onnxruntime on x86 CPUs (U8S8).

    Returns:
        The ONNX model as bytes.

    Raises:
        TypeError: ``model`` is none of the accepted kinds.
    """
    if isinstance(model, bytes):
        return model
    if isinstance(model, (str, os.PathLike)):
        return Path(model).read_bytes()

    import torch
    from torch import nn

    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model: expected a torch.nn.Module, ONNX bytes or a path, got {type(model).__name__}"
        )
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    example = torch.randn(input_shape, device=device, dtype=dtype)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated upstream but exports every module
        # shape-statically and quickly; its deprecation notices are not actionable here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(  # the stubs omit file objects, which the exporter accepts
            model, (example,), buffer, dynamo=False, opset_version=OPSET  # type: ignore[arg-type]
        )
    onnx_bytes = buffer.getvalue()
    return _quantize_int8(onnx_bytes, input_shape, symmetric=symmetric) if int8 else onnx_bytes


def _quantize_int8(onnx_bytes: bytes, input_shape: tuple[int, ...], *, symmetric: bool) -> bytes:
    """Static INT8 quantisation (QDQ, per-channel weights) with random calibration data.

    Latency depends on the graph, not on the values of scales and zero points, so
    random calibration inputs give the same timing as real data would.
    """
    import numpy as np
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _RandomReader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self, input_name: str) -> None:
            rng = np.random.default_rng(0)
            self._batches: Iterator[dict[str, Any]] = iter(
                {input_name: rng.standard_normal(input_shape).astype(np.float32)}
                for _ in range(_CALIBRATION_BATCHES)
            )

        def get_next(self) -> dict[str, Any] | None:
            return next(self._batches, None)

    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    input_name = proto.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="hwnas-int8-") as tmp:
        source, prepared = Path(tmp) / "fp32.onnx", Path(tmp) / "prepared.onnx"
        target = Path(tmp) / "int8.onnx"
        source.write_bytes(onnx_bytes)
        # Shape inference and graph folding first, as onnxruntime's quantiser recommends.
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared),
            str(target),
            _RandomReader(input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
        )
        logger.debug("quantised model to INT8 QDQ (%d bytes)", target.stat().st_size)
        return target.read_bytes()
