"""onnxruntime's static INT8 quantisation to QDQ ONNX: the one quantiser of onnxruntime
profiles, used by the compression chain and by the latency meter alike.

Activations are unsigned and asymmetric, weights signed and symmetric (U8S8), per-channel:
the fastest form for onnxruntime's x86 kernels (signed activations or S8S8 run at 0.15-0.5x
of it there). ``symmetric=True`` gives signed activations with zero points of 0, the form
TensorRT's explicit quantisation wants.

Example:
    >>> import numpy as np
    >>> from torch import nn
    >>> from evaluators import export_onnx
    >>> fp32 = export_onnx(nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU()), (1, 1, 8, 8))
    >>> int8 = quantize_onnxruntime(fp32, np.random.default_rng(0).normal(size=(4, 1, 8, 8)))
    >>> len(int8) > 0
    True
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from evaluators._export import set_props
from evaluators._io import log_stdout

__all__ = ["OrtCalibrateMethod", "needs_reduced_range", "quantize_onnxruntime"]

logger = logging.getLogger(__name__)

# Inputs per calibration run when the graph's batch dimension is dynamic.
_DYNAMIC_CALIBRATION_BATCH = 32

OrtCalibrateMethod = Literal["minmax", "entropy", "percentile"]


def quantize_onnxruntime(
    fp32_onnx: bytes,
    calibration: np.ndarray,
    *,
    per_channel: bool = True,
    calibrate_method: OrtCalibrateMethod = "minmax",
    symmetric: bool = False,
    reduce_range: bool | None = None,
) -> bytes:
    """Quantises an fp32 ONNX model to INT8 QDQ with onnxruntime's static quantiser.

    The model first goes through ``quant_pre_process`` (shape inference and graph
    optimisation), then ``quantize_static`` in QDQ format with QUInt8 asymmetric
    activations and QInt8 symmetric weights (or QInt8 symmetric activations with
    ``symmetric``). ``metadata_props`` are copied over.

    Args:
        fp32_onnx: A serialised fp32 ONNX model with one input.
        calibration: Representative inputs, ``(N, C, H, W)`` float32, already normalised
            like the model's input. A few hundred samples are plenty.
        per_channel: One weight scale per output channel rather than per tensor.
        calibrate_method: How activation ranges are chosen: ``"minmax"`` (observed
            extremes), ``"entropy"`` (KL divergence) or ``"percentile"`` (99.999th).
        symmetric: Signed activations with zero points of 0 (TensorRT's form) instead of
            onnxruntime's fastest U8S8.
        reduce_range: 7-bit weights; ``None`` decides by the CPU (see
            :func:`needs_reduced_range`).

    Returns:
        The quantised model as bytes.

    Raises:
        ValueError: ``calibrate_method`` is unknown, the model has not exactly one input,
            or ``calibration`` has too few samples or the wrong shape.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if calibrate_method not in methods:
        raise ValueError(
            f"calibrate_method: must be one of {sorted(methods)}, got {calibrate_method!r}"
        )
    proto = onnx.load_from_string(fp32_onnx)
    batches = _calibration_batches(proto, np.asarray(calibration, dtype=np.float32))
    input_name = proto.graph.input[0].name

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._feeds: Iterator[dict[str, np.ndarray]] = (
                {input_name: batch} for batch in batches
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory(prefix="hwnas-int8-") as tmp:
        source, prepared = Path(tmp) / "fp32.onnx", Path(tmp) / "prepared.onnx"
        target = Path(tmp) / "int8.onnx"
        source.write_bytes(fp32_onnx)
        quant_pre_process(str(source), str(prepared))
        with log_stdout("onnxruntime", logger):  # the histogram calibrators print progress
            quantize_static(
                str(prepared),
                str(target),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=needs_reduced_range() if reduce_range is None else reduce_range,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[calibrate_method],
                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
            )
        quantized = onnx.load(str(target))
    set_props(quantized, {p.key: p.value for p in proto.metadata_props})
    logger.info(
        "quantised to INT8 QDQ with onnxruntime (%s calibration on %d samples)",
        calibrate_method, sum(len(b) for b in batches),
    )
    return bytes(quantized.SerializeToString())


def needs_reduced_range(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Returns whether U8S8 weights must be 7-bit on this CPU: an x86 CPU without VNNI
    (``avx512_vnni``, ``avx_vnni`` or AMX) multiplies with ``vpmaddubsw``, whose 16-bit sums
    of two u8*s8 products saturate, and onnxruntime asks for ``reduce_range`` there (without
    it a MobileNet subnet agreed with fp32 on 93% of digits, with it on over 95%). False
    where the flags cannot be read (not Linux, or not x86).
    """
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), None)
    if flags is None or "avx2" not in flags:
        return False
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags)


def _calibration_batches(proto: Any, calibration: np.ndarray) -> list[np.ndarray]:
    """Splits ``calibration`` into batches the graph's (possibly fixed) batch size accepts."""
    if len(proto.graph.input) != 1:
        raise ValueError(f"fp32_onnx: expected one input, got {len(proto.graph.input)}")
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if calibration.ndim != len(fixed) or any(
        f is not None and f != c for f, c in zip(fixed[1:], calibration.shape[1:], strict=True)
    ):
        raise ValueError(
            f"calibration: shape {calibration.shape} does not fit the model input {fixed}"
        )
    batch = fixed[0] or _DYNAMIC_CALIBRATION_BATCH
    count = len(calibration) // batch * batch if fixed[0] else len(calibration)
    if count == 0:
        raise ValueError(f"calibration: needs at least {batch} samples, got {len(calibration)}")
    return [calibration[i : i + batch] for i in range(0, count, batch)]
