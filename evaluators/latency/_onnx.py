"""Turning a model into the serialised ONNX an ONNX-based backend times.

A module goes through the same exporter and, for INT8 profiles, the same onnxruntime
quantiser as the compression chain (``evaluators.export_onnx``,
``evaluators.quantize_onnxruntime``), so what is timed is the graph that ships.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from evaluators.latency._base import ModelLike

__all__ = ["to_onnx"]

# Without calibration data, INT8 graphs are calibrated on this many seeded random batches:
# scales and zero points change values, never the graph or its speed.
_RANDOM_CALIBRATION_BATCHES = 4


def to_onnx(
    model: ModelLike,
    input_shape: tuple[int, ...],
    *,
    int8: bool = False,
    symmetric: bool = False,
    calibration: np.ndarray | None = None,
) -> bytes:
    """Returns a serialised ONNX model with a static input shape.

    A torch module is exported with ``evaluators.export_onnx`` and, when ``int8`` is set,
    quantised with ``evaluators.quantize_onnxruntime``. ONNX bytes or a path to a
    ``.onnx`` file are returned as given: they are assumed to be in their final precision.

    Args:
        model: A torch module in eval mode, ONNX bytes, or the path of an ONNX file.
        input_shape: Input shape, batch included, used for export and calibration.
        int8: Quantise an exported module to INT8 (QDQ format, per-channel weights).
        symmetric: Signed activations with zero points of 0, as TensorRT requires;
            otherwise onnxruntime's fastest U8S8 form.
        calibration: Representative inputs (N, C, H, W) for ``int8``; seeded random
            normal batches when None.

    Returns:
        The ONNX model as bytes.

    Raises:
        TypeError: ``model`` is none of the accepted kinds.
    """
    if isinstance(model, bytes):
        return model
    if isinstance(model, (str, os.PathLike)):
        return Path(model).read_bytes()

    import numpy as np
    from torch import nn

    from evaluators._export import export_onnx
    from evaluators._quantize import quantize_onnxruntime

    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model: expected a torch.nn.Module, ONNX bytes or a path, got {type(model).__name__}"
        )
    onnx_bytes = export_onnx(model, input_shape)
    if not int8:
        return onnx_bytes
    if calibration is None:
        rng = np.random.default_rng(0)
        shape = (_RANDOM_CALIBRATION_BATCHES * input_shape[0], *input_shape[1:])
        calibration = rng.standard_normal(shape).astype(np.float32)
    return quantize_onnxruntime(onnx_bytes, calibration, symmetric=symmetric)
