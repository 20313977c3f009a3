"""Post-training INT8 quantisation to an OpenVINO IR with NNCF, for OpenVINO CPU deployment.

:func:`quantize_nncf` converts an fp32 ONNX model with ``openvino.convert_model`` and
quantises it with ``nncf.quantize`` for the CPU target: ``FakeQuantize`` nodes (INT8,
per-channel symmetric weights, per-tensor activations) that OpenVINO's CPU plugin executes
with INT8 kernels. The ONNX ``metadata_props`` (preprocessing, classes, input shape and
layout) travel in the IR's ``rt_info`` under ``hwnas``, so a deployer reading
``model.int8.xml`` alone finds them (:func:`read_openvino_metadata`).

Example:
    >>> splits = load_dataset("digits", path=None, image_size=16, val_fraction=0.2,
    ...                       test_fraction=0.2, seed=0)  # doctest: +SKIP
    >>> meta = {"preprocessing": splits.normalization.to_dict()}  # doctest: +SKIP
    >>> fp32 = export_onnx(model, splits.input_shape, metadata=meta)  # doctest: +SKIP
    >>> ir = quantize_nncf(fp32, splits.x_train[:300].numpy())  # doctest: +SKIP
    >>> ir.save("out/model.int8.xml")  # doctest: +SKIP
    >>> openvino_accuracy(ir, splits.x_test, splits.y_test)  # doctest: +SKIP
    0.97
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from evaluators.latency._openvino import OpenVINOIR, import_openvino, telemetry_disabled

if TYPE_CHECKING:
    import torch

__all__ = ["openvino_accuracy", "quantize_nncf", "read_openvino_metadata"]

logger = logging.getLogger(__name__)

#: The ``rt_info`` section of an IR that holds the ONNX model's metadata.
RT_INFO_KEY = "hwnas"
_PRESETS = ("performance", "mixed")

NNCFPreset = Literal["performance", "mixed"]


def quantize_nncf(
    fp32_onnx: bytes,
    calibration: np.ndarray,
    *,
    subset_size: int | None = None,
    preset: NNCFPreset = "performance",
) -> OpenVINOIR:
    """Quantises an fp32 ONNX model to an INT8 OpenVINO IR with NNCF post-training quantisation.

    ``nncf.quantize`` runs with ``target_device=CPU`` and fast bias correction. Preset
    ``performance`` quantises activations symmetrically (zero points of 0): the CPU plugin's
    INT8 kernels then need no zero-point compensation, and for post-ReLU activations NNCF
    picks an unsigned range, so no resolution is lost. ``mixed`` makes activations
    asymmetric, which helps layers fed by signed, skewed activations at a small cost in
    speed. Fast bias correction shifts each quantised layer's bias by the mean output error
    on the calibration set; NNCF's full bias correction is slower to run and gives the same
    latency (only bias values change), so it is not used. Weights are written without fp16
    compression; those behind ``FakeQuantize`` are stored as INT8.

    Args:
        fp32_onnx: A serialised fp32 ONNX model with one input.
        calibration: Representative inputs, ``(N, C, H, W)`` float32, normalised like the
            model's input. A few hundred samples are plenty.
        subset_size: Calibration samples NNCF uses (the first ones); all when None.
        preset: ``"performance"`` or ``"mixed"`` (see above).

    Returns:
        The quantised IR; its ``rt_info`` holds the ONNX metadata under ``hwnas``.

    Raises:
        ValueError: ``preset`` is unknown, ``subset_size`` is below 1, the model has not
            exactly one input, or ``calibration`` has too few samples or the wrong shape.
    """
    import onnx

    if preset not in _PRESETS:
        raise ValueError(f"preset: must be one of {list(_PRESETS)}, got {preset!r}")
    if subset_size is not None and subset_size < 1:
        raise ValueError(f"subset_size: must be >= 1, got {subset_size}")
    proto = onnx.load_from_string(fp32_onnx)
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    ov = import_openvino()
    with telemetry_disabled(), _nncf_output_to_log():
        import nncf

        model = ov.convert_model(io.BytesIO(fp32_onnx))
        items = _calibration_items(model, np.asarray(calibration, dtype=np.float32))
        count = len(items) if subset_size is None else min(subset_size, len(items))
        quantized = nncf.quantize(
            model,
            nncf.Dataset(items),
            preset=nncf.QuantizationPreset(preset),
            target_device=nncf.TargetDevice.CPU,
            subset_size=count,
            fast_bias_correction=True,
        )
    for key, text in metadata.items():
        quantized.set_rt_info(text, [RT_INFO_KEY, key])
    logger.info("quantised to INT8 with NNCF (%s preset, %d calibration inputs)", preset, count)
    return OpenVINOIR.from_model(quantized)


def _calibration_items(model: Any, calibration: np.ndarray) -> list[np.ndarray]:
    """Splits ``calibration`` into inputs of the model's batch size (1 when it is dynamic)."""
    if len(model.inputs) != 1:
        raise ValueError(f"fp32_onnx: expected one input, got {len(model.inputs)}")
    dims = [d.get_length() if d.is_static else None for d in model.input(0).get_partial_shape()]
    if calibration.ndim != len(dims) or any(
        f is not None and f != c for f, c in zip(dims[1:], calibration.shape[1:], strict=True)
    ):
        raise ValueError(
            f"calibration: shape {calibration.shape} does not fit the model input {dims}"
        )
    batch = dims[0] or 1
    count = len(calibration) // batch * batch
    if count == 0:
        raise ValueError(f"calibration: needs at least {batch} samples, got {len(calibration)}")
    return [calibration[i : i + batch] for i in range(0, count, batch)]


def openvino_accuracy(
    model: OpenVINOIR | bytes, x: torch.Tensor, y: torch.Tensor, batch: int = 256
) -> float:
    """Returns the top-1 accuracy of a classifier run by OpenVINO on the CPU in f32.

    A fixed batch dimension (batch-1 exports) is fed in chunks of that size, the last one
    padded with zeros and the padding's predictions dropped; a dynamic one in ``batch``s.

    Args:
        model: An IR, or fp32 ONNX bytes.
        x: Inputs, ``(N, C, H, W)``, normalised like the model's input.
        y: Integer labels, ``(N,)``.
        batch: Inputs per inference when the batch dimension is dynamic.

    Returns:
        The share of correct predictions, in [0, 1].
    """
    ov = import_openvino()
    import openvino.properties.hint as hints

    core = ov.Core()
    ov_model = model.read(core) if isinstance(model, OpenVINOIR) else core.read_model(model)
    # f32, not the bf16 that the CPU plugin defaults to on CPUs with AVX-512 BF16 or AMX.
    compiled = core.compile_model(ov_model, "CPU", {hints.inference_precision(): ov.Type.f32})
    first = compiled.input(0).get_partial_shape()[0]
    size = first.get_length() if first.is_static else batch
    request = compiled.create_infer_request()
    xs = x.detach().cpu().numpy().astype(np.float32)
    labels = y.detach().cpu().numpy()
    correct = 0
    for i in range(0, len(xs), size):
        chunk = xs[i : i + size]
        n = len(chunk)
        if first.is_static and n < size:  # pad, then drop the padding's predictions
            chunk = np.concatenate([chunk, np.zeros((size - n, *chunk.shape[1:]), np.float32)])
        logits = request.infer(chunk)[0][:n]
        correct += int((logits.argmax(1) == labels[i : i + n]).sum())
    return correct / len(xs)


def read_openvino_metadata(ir: OpenVINOIR | str | os.PathLike[str]) -> dict[str, Any]:
    """Returns the metadata an IR carries under ``rt_info/hwnas``, each value decoded from JSON.

    Values that are not JSON are returned as strings; an IR without the section gives ``{}``.

    Args:
        ir: An IR, or the path of its ``.xml`` file (the ``.bin`` beside it).
    """
    core = import_openvino().Core()
    model = ir.read(core) if isinstance(ir, OpenVINOIR) else core.read_model(os.fspath(ir))
    if not model.has_rt_info([RT_INFO_KEY]):
        return {}
    result: dict[str, Any] = {}
    for key, value in model.get_rt_info()[RT_INFO_KEY].items():
        text = value.astype(str)
        try:
            result[key] = json.loads(text)
        except json.JSONDecodeError:
            result[key] = text
    return result


class _ToLogger(logging.Handler):
    """Re-emits NNCF's records on this module's logger: debug below WARNING, else as is."""

    def emit(self, record: logging.LogRecord) -> None:
        level = logging.DEBUG if record.levelno < logging.WARNING else record.levelno
        logger.log(level, "nncf: %s", record.getMessage())


@contextlib.contextmanager
def _nncf_output_to_log() -> Iterator[None]:
    """Sends NNCF's log records and its progress bars (rich, on stdout) to our logger.

    Imports NNCF: enter :func:`telemetry_disabled` first.
    """
    # Imported before stdout is redirected: NNCF's own handler binds sys.stdout at import.
    from nncf.common.logging import nncf_logger

    from evaluators import log_stdout

    handlers = list(nncf_logger.handlers)
    nncf_logger.handlers = [_ToLogger()]
    try:
        with log_stdout("nncf", logger):
            yield
    finally:
        nncf_logger.handlers = handlers
