"""Deployable ONNX: export with fixed names, metadata that travels in the file, preprocessing.

A deployer needs three things besides the graph: how raw pixels become the model input
(``preprocessing``), the memory layout (``input_layout``) and what the outputs mean
(``classes``). They are stored as JSON text in the model's ``metadata_props``, so one
``.onnx`` file is enough to classify raw images:

Example:
    >>> import numpy as np
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    >>> onnx_bytes = export_onnx(model, (1, 1, 8, 8), metadata={
    ...     "preprocessing": {"scale": 1 / 255, "mean": [0.5], "std": [0.25]},
    ...     "classes": ["no", "yes"]})
    >>> meta = read_metadata(onnx_bytes)
    >>> meta["input_layout"], meta["input_shape"]
    ('NCHW', [1, 1, 8, 8])
    >>> preprocess(np.zeros((3, 16, 16), np.uint8), meta).shape
    (3, 1, 8, 8)
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

__all__ = ["export_onnx", "preprocess", "read_metadata", "set_metadata"]

logger = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# Opset 17 is the newest the TorchScript exporter covers fully, and TensorRT 8.6+ parses it.
DEFAULT_OPSET = 17
_LAYOUT = "NCHW"


def export_onnx(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    metadata: Mapping[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
) -> bytes:
    """Exports ``model`` in eval mode to ONNX with a fixed input shape and metadata.

    The graph has one input named ``input`` and one output named ``logits``. It is
    exported with the TorchScript exporter (``dynamo=False``), which folds BatchNorm into
    the preceding convolutions. Besides ``metadata``, the file records ``input_shape`` and
    ``input_layout`` (``"NCHW"``) unless ``metadata`` sets them. The module's train/eval
    flags are restored afterwards.

    Args:
        model: The module to export.
        input_shape: Input shape, batch first, e.g. ``(1, 3, 224, 224)``.
        metadata: JSON-serialisable values to store; see :func:`set_metadata`.
        opset: ONNX opset version.

    Returns:
        The serialised ONNX model; it passes ``onnx.checker``.

    Raises:
        ValueError: ``input_shape`` has a dimension that is not a positive int.
        TypeError: A metadata value cannot be written as JSON.
    """
    import onnx
    import torch

    from evaluators._modes import eval_mode

    shape = tuple(input_shape)
    if not shape or any(not isinstance(d, int) or isinstance(d, bool) or d <= 0 for d in shape):
        raise ValueError(f"input_shape: must be positive ints with the batch first, got {shape}")
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    example = torch.zeros(shape, device=device, dtype=dtype)
    buffer = io.BytesIO()
    with eval_mode(model), warnings.catch_warnings():
        # The TorchScript exporter is deprecated upstream but exports every module
        # shape-statically; its deprecation notices are not actionable here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(  # the stubs omit file objects, which the exporter accepts
            model,
            (example,),
            buffer,  # type: ignore[arg-type]
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    values = {"input_shape": list(shape), "input_layout": _LAYOUT, **dict(metadata or {})}
    _write_props(proto, values)
    logger.debug("exported %s to ONNX opset %d, input %s", type(model).__name__, opset, shape)
    return bytes(proto.SerializeToString())


def set_metadata(onnx_bytes: bytes, metadata: Mapping[str, Any]) -> bytes:
    """Returns ``onnx_bytes`` with each ``metadata`` value stored as JSON in ``metadata_props``.

    Existing keys are replaced, others kept. Values may be JSON types, mappings (an
    ``Arch``), tuples, numpy scalars and arrays, or objects with a ``to_dict()`` method
    (``Normalization``). Conventional keys: ``preprocessing`` (``{"scale": s, "mean":
    [...], "std": [...]}``, meaning ``input = (raw * scale - mean) / std`` per channel),
    ``input_layout``, ``input_shape``, ``classes``, ``arch`` and ``stage``.

    Args:
        onnx_bytes: A serialised ONNX model.
        metadata: Keys (strings) and values to store.

    Returns:
        The serialised model with the metadata.

    Raises:
        TypeError: A key is not a string or a value cannot be written as JSON.
    """
    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    _write_props(proto, metadata)
    return bytes(proto.SerializeToString())


def read_metadata(onnx_model: bytes | str | os.PathLike[str]) -> dict[str, Any]:
    """Returns the ``metadata_props`` of an ONNX model, each value decoded from JSON.

    Values that are not JSON (written by other tools) are returned as strings.

    Args:
        onnx_model: ONNX bytes or the path of an ``.onnx`` file.

    Returns:
        The metadata as a dict.
    """
    import onnx

    if isinstance(onnx_model, bytes):
        proto = onnx.load_from_string(onnx_model)
    else:
        proto = onnx.load(os.fspath(onnx_model), load_external_data=False)
    result: dict[str, Any] = {}
    for prop in proto.metadata_props:
        try:
            result[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            result[prop.key] = prop.value
    return result


def preprocess(
    raw: np.ndarray, metadata: Mapping[str, Any], *, size: Sequence[int] | None = None
) -> np.ndarray:
    """Turns raw images into model inputs the way the model's metadata says.

    Applies ``raw * scale``, a bilinear resize to the model's input size (the same as
    ``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)``), then
    ``(x - mean) / std`` per channel: the preprocessing of ``evaluators.load_dataset``.

    Args:
        raw: Raw pixel values, ``(N, H, W)`` or ``(N, C, H, W)``, any numeric dtype.
        metadata: The model's metadata (:func:`read_metadata`); needs ``preprocessing``
            and, unless ``size`` is given, ``input_shape``.
        size: Output ``(H, W)``; defaults to the last two dims of ``input_shape``.

    Returns:
        A float32 ``(N, C, H, W)`` array ready to feed to the ``input`` of the graph.

    Raises:
        ValueError: The metadata lacks a key, names another layout, or its channel count
            does not match ``raw``.
    """
    if "preprocessing" not in metadata:
        raise ValueError(
            "metadata: has no 'preprocessing' entry ({'scale', 'mean', 'std'}); export the "
            "model with metadata={'preprocessing': splits.normalization.to_dict()}"
        )
    layout = metadata.get("input_layout", _LAYOUT)
    if layout != _LAYOUT:
        raise ValueError(f"metadata.input_layout: only {_LAYOUT!r} is supported, got {layout!r}")
    if size is None:
        if "input_shape" not in metadata:
            raise ValueError("metadata: has no 'input_shape'; pass size=(H, W)")
        size = tuple(metadata["input_shape"])[-2:]
    height, width = (int(s) for s in size)
    prep = metadata["preprocessing"]
    mean = np.asarray(prep["mean"], dtype=np.float32)
    std = np.asarray(prep["std"], dtype=np.float32)

    x = np.asarray(raw)
    if x.ndim == 3:
        x = x[:, None, :, :]  # (N, H, W) -> (N, 1, H, W)
    if x.ndim != 4:
        raise ValueError(f"raw: must be (N, H, W) or (N, C, H, W), got shape {x.shape}")
    if x.shape[1] != mean.size:
        raise ValueError(
            f"raw: has {x.shape[1]} channels but the model's preprocessing has {mean.size}"
        )
    x = x.astype(np.float32) * np.float32(prep.get("scale", 1.0))
    x = _resize_bilinear(x, height, width)
    x = (x - mean[None, :, None, None]) / std[None, :, None, None]
    return np.ascontiguousarray(x, dtype=np.float32)


def _resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes (N, C, H, W) like ``F.interpolate(mode="bilinear", align_corners=False)``."""
    if x.shape[-2:] == (height, width):
        return x
    rows, row_w = _source_weights(x.shape[2], height)
    cols, col_w = _source_weights(x.shape[3], width)
    x = x[:, :, rows[0], :] * (1 - row_w)[:, None] + x[:, :, rows[1], :] * row_w[:, None]
    out: np.ndarray = x[:, :, :, cols[0]] * (1 - col_w) + x[:, :, :, cols[1]] * col_w
    return out


def _source_weights(
    size_in: int, size_out: int
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Returns, per output index, the two source indices and the weight of the second."""
    # Half-pixel centres, clamped at 0: ATen's area_pixel_compute_source_index.
    src = (np.arange(size_out, dtype=np.float32) + 0.5) * np.float32(size_in / size_out) - 0.5
    src = np.maximum(src, 0.0)
    low = np.minimum(src.astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return (low, high), (src - low).astype(np.float32)


def _write_props(proto: Any, metadata: Mapping[str, Any]) -> None:
    """Sets ``metadata`` as JSON text in ``proto.metadata_props``, replacing equal keys."""
    encoded: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(f"metadata: keys must be strings, got {key!r}")
        try:
            encoded[key] = json.dumps(value, default=_to_json, sort_keys=True)
        except (TypeError, ValueError) as err:
            raise TypeError(f"metadata.{key}: cannot be written as JSON ({err})") from err
    set_props(proto, encoded)


def set_props(proto: Any, props: Mapping[str, str]) -> None:
    """Sets text ``props`` in ``proto.metadata_props``, replacing equal keys, keeping others."""
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    for key, text in [*kept, *props.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, text


def _to_json(value: Any) -> Any:
    """JSON fallback for mappings, numpy and torch values and objects with ``to_dict``."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "tolist"):  # numpy and torch arrays and scalars
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
