"""Post-training INT8 quantisation to QDQ ONNX: onnxruntime for CPUs, ModelOpt for TensorRT.

Both paths produce ``QuantizeLinear``/``DequantizeLinear`` pairs around the inputs and
weights of convolutions and matrix products, with per-channel weight scales:

* :func:`quantize_onnxruntime` rewrites an fp32 ONNX graph with onnxruntime's static
  quantiser. Activations are unsigned and asymmetric, weights signed and symmetric
  (U8S8), the fastest form for onnxruntime's x86 kernels.
* :func:`quantize_modelopt` inserts NVIDIA ModelOpt fake quantisers into a copy of a torch
  module and calibrates them; :func:`export_modelopt_onnx` exports that copy. All scales
  are signed and symmetric (zero points of 0), as TensorRT's explicit quantisation wants.

Example:
    >>> splits = load_dataset("digits", path=None, image_size=16, val_fraction=0.2,
    ...                       test_fraction=0.2, seed=0)  # doctest: +SKIP
    >>> fp32 = export_onnx(model, splits.input_shape)  # doctest: +SKIP
    >>> int8 = quantize_onnxruntime(fp32, splits.x_train[:256].numpy())  # doctest: +SKIP
    >>> qmodel = quantize_modelopt(model, splits.loader("train", 64))  # doctest: +SKIP
    >>> qdq = export_modelopt_onnx(qmodel, splits.input_shape)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from compress._export import DEFAULT_OPSET, export_onnx, set_props

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["export_modelopt_onnx", "quantize_modelopt", "quantize_onnxruntime"]

logger = logging.getLogger(__name__)

# Inputs per calibration run when the graph's batch dimension is dynamic.
_DYNAMIC_CALIBRATION_BATCH = 32
# Share of activation values that the histogram calibrator keeps inside the INT8 range.
_PERCENTILE = 99.99

OrtCalibrateMethod = Literal["minmax", "entropy", "percentile"]


def quantize_onnxruntime(
    fp32_onnx: bytes,
    calibration: np.ndarray,
    *,
    per_channel: bool = True,
    calibrate_method: OrtCalibrateMethod = "minmax",
) -> bytes:
    """Quantises an fp32 ONNX model to INT8 QDQ with onnxruntime's static quantiser.

    The model first goes through ``quant_pre_process`` (shape inference and graph
    optimisation), then ``quantize_static`` in QDQ format with QUInt8 asymmetric
    activations and QInt8 symmetric weights. ``metadata_props`` are copied over.

    Args:
        fp32_onnx: A serialised fp32 ONNX model with one input.
        calibration: Representative inputs, ``(N, C, H, W)`` float32, already normalised
            like the model's input. A few hundred samples are plenty.
        per_channel: One weight scale per output channel rather than per tensor.
        calibrate_method: How activation ranges are chosen: ``"minmax"`` (observed
            extremes), ``"entropy"`` (KL divergence) or ``"percentile"`` (99.999th).

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
        with _stdout_to_log("onnxruntime"):  # the histogram calibrators print progress
            quantize_static(
                str(prepared),
                str(target),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[calibrate_method],
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
        quantized = onnx.load(str(target))
    set_props(quantized, {p.key: p.value for p in proto.metadata_props})
    logger.info(
        "quantised to INT8 QDQ with onnxruntime (%s calibration on %d samples)",
        calibrate_method, sum(len(b) for b in batches),
    )
    return bytes(quantized.SerializeToString())


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


def quantize_modelopt(
    model: nn.Module,
    calibration_batches: Iterable[torch.Tensor | Sequence[torch.Tensor]],
    *,
    calibrator: Literal["max", "histogram"] = "max",
) -> nn.Module:
    """Returns an INT8 fake-quantised copy of ``model`` calibrated with NVIDIA ModelOpt.

    The copy has BatchNorm folded into the preceding convolutions when ``torch.fx`` can
    trace the model (as TensorRT would fold it), then gets ModelOpt's
    ``INT8_DEFAULT_CFG``: per-channel weight scales (axis 0), per-tensor activation
    scales, all signed and symmetric. ``model`` itself is not modified.

    Args:
        model: The fp32 module to quantise.
        calibration_batches: Input batches (tensors, or ``(x, y)`` pairs as a DataLoader
            yields), iterated once; normalised like the model's training data.
        calibrator: ``"max"`` sets each activation range to the largest magnitude seen;
            ``"histogram"`` collects histograms and keeps the 99.99th percentile, which
            ignores rare outliers.

    Returns:
        The quantised copy, in eval mode, on the device of ``model``.

    Raises:
        ValueError: ``calibrator`` is unknown or ``calibration_batches`` is empty.
    """
    import torch

    mtq = _import_modelopt()
    from modelopt.torch.quantization.nn import TensorQuantizer

    if calibrator not in ("max", "histogram"):
        raise ValueError(f"calibrator: must be 'max' or 'histogram', got {calibrator!r}")
    qmodel = _fold_batchnorm(model)
    param = next(iter(qmodel.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    config = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    seen = 0

    @torch.no_grad()
    def forward_loop(module: nn.Module) -> None:
        nonlocal seen
        for batch in calibration_batches:
            x = batch if isinstance(batch, torch.Tensor) else batch[0]
            module(x.to(device))
            seen += len(x)
        if seen == 0:
            raise ValueError("calibration_batches: yielded no batches")

    with _quiet_modelopt():
        if calibrator == "max":
            qmodel = mtq.quantize(qmodel, config, forward_loop)
        else:
            # ModelOpt 0.47's "max" algorithm calls HistogramCalibrator.compute_amax()
            # without the method it requires, so histogram ranges are loaded here.
            for entry in config["quant_cfg"]:
                if entry.get("quantizer_name") == "*input_quantizer":
                    entry["cfg"] = {**entry["cfg"], "calibrator": "histogram"}
            config["algorithm"] = None  # insert quantisers only
            qmodel = mtq.quantize(qmodel, config)
            quantizers = [
                (name, q) for name, q in qmodel.named_modules()
                if isinstance(q, TensorQuantizer) and q.is_enabled
            ]
            for _, quantizer in quantizers:
                quantizer.disable_quant()
                quantizer.enable_calib()
            forward_loop(qmodel)
            for name, quantizer in quantizers:
                if name.endswith("input_quantizer"):
                    quantizer.load_calib_amax("percentile", percentile=_PERCENTILE)
                else:
                    quantizer.load_calib_amax()
                quantizer.enable_quant()
                quantizer.disable_calib()
    logger.info("quantised with ModelOpt INT8 (%s calibration on %d samples)", calibrator, seen)
    result: nn.Module = qmodel.eval()
    return result


def _import_modelopt() -> Any:
    """Imports ``modelopt.torch.quantization`` quietly."""
    with _quiet_modelopt():
        import modelopt.torch.quantization as mtq
    return mtq


def _fold_batchnorm(model: nn.Module) -> nn.Module:
    """Returns an eval-mode copy of ``model`` with Conv-BatchNorm pairs fused when traceable."""
    from torch.fx.experimental.optimization import fuse
    from torch.fx.proxy import TraceError

    from evaluators._modes import eval_mode

    with eval_mode(model):
        try:
            fused: nn.Module = fuse(model, inplace=False)  # fuse deep-copies first
        except (TraceError, TypeError, RuntimeError, AttributeError, NotImplementedError) as err:
            # Symbolic tracing fails on data-dependent control flow; BatchNorm then stays
            # and TensorRT folds it while building the engine.
            logger.debug("BatchNorm left unfused, torch.fx cannot trace the model: %s", err)
            fused = copy.deepcopy(model)
    return fused.eval()


@contextlib.contextmanager
def _stdout_to_log(source: str) -> Iterator[None]:
    """Sends what a library prints to the debug log instead of stdout."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            logger.debug("%s: %s", source, line)


@contextlib.contextmanager
def _quiet_modelopt() -> Iterator[None]:
    """Logs what ModelOpt prints and drops its warning about transformers."""
    with _stdout_to_log("modelopt"), warnings.catch_warnings():
        # Only ModelOpt's Hugging Face export needs transformers; it warns when first loaded.
        warnings.filterwarnings("ignore", message="Cannot find transformers package")
        yield


def export_modelopt_onnx(
    qmodel: nn.Module,
    input_shape: Sequence[int],
    *,
    metadata: Mapping[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
) -> bytes:
    """Exports a :func:`quantize_modelopt` model to QDQ ONNX for TensorRT.

    Each enabled ModelOpt quantiser becomes a ``QuantizeLinear``/``DequantizeLinear``
    pair with INT8 zero points of 0 (per-channel on weights), so TensorRT builds INT8
    kernels from the explicit scales. The graph also runs in onnxruntime.

    Args:
        qmodel: A module quantised by :func:`quantize_modelopt`.
        input_shape: Input shape, batch first.
        metadata: JSON-serialisable values to store; see :func:`set_metadata`.
        opset: ONNX opset version, at least 13 for per-channel QDQ.

    Returns:
        The serialised ONNX model.

    Raises:
        ValueError: ``qmodel`` has no enabled quantisers or ``opset`` is below 13.
    """
    _import_modelopt()
    from modelopt.torch.quantization.nn import TensorQuantizer

    if opset < 13:
        raise ValueError(f"opset: per-channel QDQ needs opset >= 13, got {opset}")
    if not any(isinstance(m, TensorQuantizer) and m.is_enabled for m in qmodel.modules()):
        raise ValueError("qmodel: has no enabled quantisers; quantise it with quantize_modelopt")
    with warnings.catch_warnings():
        # Quantisers branch on their (constant) scales while traced; the trace is correct.
        warnings.filterwarnings("ignore", module=r"modelopt\.")
        return export_onnx(qmodel, input_shape, metadata=metadata, opset=opset)
