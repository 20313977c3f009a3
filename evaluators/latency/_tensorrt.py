"""NVIDIA TensorRT engines built from ONNX, timed on a CUDA GPU."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from evaluators.latency._base import BackendUnavailable, LatencyBackend
from evaluators.latency._onnx import to_onnx
from evaluators.latency._registry import register_backend

if TYPE_CHECKING:
    import torch

    from evaluators.latency._base import ModelLike, Runner
    from hwprofiles import HardwareProfile

__all__ = ["TensorRTBackend", "build_serialized_engine", "tensorrt_unavailable_reason"]

logger = logging.getLogger(__name__)

_WORKSPACE_BYTES = 1 << 30
_PRECISIONS = ("fp32", "fp16", "int8")


def tensorrt_unavailable_reason() -> str | None:
    """Returns why TensorRT engines cannot be built here, or None when they can.

    Returns:
        ``"tensorrt is not installed (pip install 'hwnas[tensorrt]')"``, ``"no CUDA GPU
        is visible (torch.cuda.is_available() is False)"``, or None.
    """
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed (pip install 'hwnas[tensorrt]')"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return None


def build_serialized_engine(
    onnx_bytes: bytes,
    *,
    precision: str,
    input_shape: tuple[int, ...] | None = None,
    workspace_bytes: int = _WORKSPACE_BYTES,
    trt_logger: Any = None,
) -> bytes:
    """Builds a serialised TensorRT engine from an ONNX model on the current CUDA GPU.

    Precision ``fp16`` lets the builder pick half-precision kernels; ``int8`` expects a
    QDQ graph (explicit quantisation) and allows INT8 and FP16 kernels; ``fp32`` allows
    neither.

    Args:
        onnx_bytes: The serialised ONNX model.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        input_shape: The shape to build for when the model's input has dynamic dims.
        workspace_bytes: Limit of the builder's scratch memory.
        trt_logger: A ``tensorrt.Logger``; a new one at WARNING level when None.

    Returns:
        The serialised engine (a TensorRT plan).

    Raises:
        ValueError: ``precision`` is unknown, or the input is dynamic and no
            ``input_shape`` is given.
        ImportError: tensorrt is not installed.
        RuntimeError: TensorRT cannot parse the model or build an engine.
    """
    import tensorrt as trt

    if precision not in _PRECISIONS:
        raise ValueError(f"precision: must be one of {list(_PRECISIONS)}, got {precision!r}")
    trt_logger = trt_logger if trt_logger is not None else trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    # Networks are always explicit-batch from TensorRT 10 on; older versions need the flag.
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None and int(trt.__version__.split(".")[0]) < 10:
        flags = 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX model: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    int8_flag = getattr(trt.BuilderFlag, "INT8", None)  # QDQ graphs may not need it
    if precision == "int8" and int8_flag is not None:
        config.set_flag(int8_flag)

    dynamic = [
        network.get_input(i) for i in range(network.num_inputs)
        if any(dim < 0 for dim in network.get_input(i).shape)
    ]
    if dynamic:
        if input_shape is None:
            names = [tensor.name for tensor in dynamic]
            raise ValueError(f"input_shape: required, the inputs {names} have dynamic dims")
        opt_profile = builder.create_optimization_profile()
        for tensor in dynamic:
            opt_profile.set_shape(tensor.name, input_shape, input_shape, input_shape)
        config.add_optimization_profile(opt_profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build an engine; see the TensorRT log above")
    logger.debug("built TensorRT %s engine (%d bytes)", precision, serialized.nbytes)
    return bytes(memoryview(serialized))


@register_backend
class TensorRTBackend(LatencyBackend):
    """Builds a TensorRT engine from ONNX and times ``execute_async_v3`` with CUDA events.

    Precision ``fp16`` lets the builder pick half-precision kernels; ``int8`` builds from
    a QDQ-quantised export (explicit quantisation) with INT8 and FP16 kernels allowed.
    Device buffers are torch CUDA tensors, so no other CUDA binding is needed. The
    engine is built inside :meth:`session` because the builder times kernels on the GPU.

    Raises:
        BackendUnavailable: ``tensorrt`` cannot be imported or no CUDA GPU is visible.
    """

    name = "tensorrt"
    devices = ("cuda",)
    precisions = ("fp32", "fp16", "int8")
    accepts_onnx = True

    def __init__(self, profile: HardwareProfile) -> None:
        super().__init__(profile)
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(f"TensorRT backend skipped: {reason}")
        import tensorrt

        self._trt: Any = tensorrt

    @contextmanager
    def session(self, model: ModelLike, input_shape: tuple[int, ...]) -> Iterator[Runner]:
        """Builds an engine and yields a runner of ``execute_async_v3``; see
        :class:`LatencyBackend`.

        Raises:
            RuntimeError: TensorRT cannot parse the model or build or run the engine.
        """
        import torch

        trt = self._trt
        trt_logger = trt.Logger(trt.Logger.WARNING)
        onnx_bytes = to_onnx(
            model, input_shape, int8=self.profile.precision == "int8", symmetric=True,
            calibration=self.calibration,
        )
        engine = self._build_engine(trt_logger, onnx_bytes, input_shape)
        context = engine.create_execution_context()

        device = torch.device("cuda", torch.cuda.current_device())
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = {n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        for name in inputs:  # output shapes are known once every input shape is set
            context.set_input_shape(name, input_shape)
        buffers = []  # holds the device memory for as long as the engine runs
        for name in names:
            dtype = self._torch_dtype(engine.get_tensor_dtype(name))
            tensor = torch.zeros(tuple(context.get_tensor_shape(name)), dtype=dtype, device=device)
            if name in inputs and tensor.is_floating_point():
                tensor.normal_(generator=torch.Generator(device).manual_seed(0))
            context.set_tensor_address(name, tensor.data_ptr())
            buffers.append(tensor)

        stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
        handle = stream.cuda_stream

        def run(n: int) -> float:
            start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            start.record(stream)
            for _ in range(n):
                if not context.execute_async_v3(handle):
                    raise RuntimeError("TensorRT engine failed to execute")
            end.record(stream)
            end.synchronize()
            return float(start.elapsed_time(end))

        with torch.cuda.stream(stream):
            yield run
        del buffers

    def _build_engine(
        self, trt_logger: Any, onnx_bytes: bytes, input_shape: tuple[int, ...]
    ) -> Any:
        serialized = build_serialized_engine(
            onnx_bytes, precision=self.profile.precision, input_shape=input_shape,
            trt_logger=trt_logger,
        )
        engine = self._trt.Runtime(trt_logger).deserialize_cuda_engine(serialized)
        if engine is None:
            raise RuntimeError("TensorRT failed to deserialise the engine it just built")
        return engine

    def _torch_dtype(self, trt_dtype: Any) -> torch.dtype:
        import torch

        trt = self._trt
        table = {
            "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
            "int8": torch.int8, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool,
            "uint8": torch.uint8,
        }
        for name, dtype in table.items():
            if getattr(trt, name, None) == trt_dtype:
                return dtype
        raise TypeError(f"TensorRT tensor dtype {trt_dtype} has no torch equivalent")
