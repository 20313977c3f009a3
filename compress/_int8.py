"""Post-training INT8 quantisation for TensorRT with NVIDIA ModelOpt, exported to QDQ ONNX.

(onnxruntime's static quantiser, the path of onnxruntime profiles, is
``evaluators.quantize_onnxruntime``: the latency meter uses the same one.)

* :func:`quantize_modelopt` inserts NVIDIA ModelOpt fake quantisers into a copy of a torch
  module and calibrates them; :func:`export_modelopt_onnx` exports that copy. All scales
  are signed and symmetric (zero points of 0), as TensorRT's explicit quantisation wants.

Example:
    >>> splits = load_dataset("digits", path=None, image_size=16, val_fraction=0.2,
    ...                       test_fraction=0.2, seed=0)  # doctest: +SKIP
    >>> qmodel = quantize_modelopt(model, splits.loader("train", 64))  # doctest: +SKIP
    >>> qdq = export_modelopt_onnx(qmodel, splits.input_shape)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from evaluators import DEFAULT_OPSET, export_onnx, log_stdout

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["export_modelopt_onnx", "quantize_modelopt"]

logger = logging.getLogger(__name__)

# Share of activation values that the histogram calibrator keeps inside the INT8 range.
_PERCENTILE = 99.99


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
def _quiet_modelopt() -> Iterator[None]:
    """Logs what ModelOpt prints and drops its warning about transformers."""
    with log_stdout("modelopt", logger), warnings.catch_warnings():
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
