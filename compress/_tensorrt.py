"""TensorRT engines (plans) built from deployable ONNX, for NVIDIA GPU targets.

TensorRT builds an engine for the GPU it runs on by timing kernels there, so an engine
is only ever built on a real CUDA device: :func:`tensorrt_unavailable_reason` says why it
cannot be built here, and :func:`build_engine` never returns a stand-in.

Example:
    >>> reason = tensorrt_unavailable_reason()
    >>> if reason is None:  # doctest: +SKIP
    ...     plan = build_engine(export_modelopt_onnx(qmodel, (1, 3, 224, 224)), precision="int8")
"""

from __future__ import annotations

import logging
from typing import Literal

from evaluators.latency._tensorrt import build_serialized_engine, tensorrt_unavailable_reason

__all__ = ["build_engine", "tensorrt_unavailable_reason"]

logger = logging.getLogger(__name__)

_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def build_engine(
    onnx_bytes: bytes,
    *,
    precision: Literal["fp32", "fp16", "int8"],
    workspace_bytes: int = 1 << 30,
) -> bytes:
    """Builds a serialised TensorRT engine from ONNX with a fixed input shape.

    Args:
        onnx_bytes: The ONNX model. For ``precision="int8"`` it must be a QDQ graph, such
            as :func:`export_modelopt_onnx` writes: TensorRT 10 takes INT8 scales from
            explicit quantisation only.
        precision: ``"fp16"`` allows half-precision kernels; ``"int8"`` allows INT8 and
            FP16 kernels; ``"fp32"`` allows neither.
        workspace_bytes: Limit of the builder's scratch memory.

    Returns:
        The engine (a TensorRT plan) as bytes; deserialise it with
        ``tensorrt.Runtime(logger).deserialize_cuda_engine(plan)`` on the same GPU model
        and TensorRT version.

    Raises:
        RuntimeError: TensorRT cannot run here (the message says why, see
            :func:`tensorrt_unavailable_reason`), cannot parse the model, or fails to
            build an engine.
        ValueError: ``precision`` is unknown, ``"int8"`` is asked of a graph without
            QuantizeLinear/DequantizeLinear nodes, or the model's input is dynamic.
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision: must be 'fp32', 'fp16' or 'int8', got {precision!r}")
    if precision == "int8" and not _has_qdq(onnx_bytes):
        raise ValueError(
            "onnx_bytes: precision 'int8' needs a QDQ model; quantise with quantize_modelopt "
            "and export with export_modelopt_onnx"
        )
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"cannot build a TensorRT engine: {reason}")
    plan = build_serialized_engine(
        onnx_bytes, precision=precision, workspace_bytes=workspace_bytes
    )
    logger.info("built a TensorRT %s engine (%d bytes)", precision, len(plan))
    return plan


def _has_qdq(onnx_bytes: bytes) -> bool:
    """Returns whether the main graph has QuantizeLinear or DequantizeLinear nodes."""
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    return any(node.op_type in _QDQ_OPS for node in graph.node)
