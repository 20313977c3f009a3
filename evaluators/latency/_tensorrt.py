"""NVIDIA TensorRT engines built from ONNX, timed on a CUDA GPU."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from evaluators.latency._base import BackendUnavailable, LatencyBackend
from evaluators.latency._onnx import to_onnx

if TYPE_CHECKING:
    import torch

    from evaluators.latency._base import ModelLike, Runner
    from hwprofiles import HardwareProfile

__all__ = ["TensorRTBackend"]

logger = logging.getLogger(__name__)

_WORKSPACE_BYTES = 1 << 30


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

    def __init__(self, profile: HardwareProfile) -> None:
        super().__init__(profile)
        try:
            import tensorrt
        except ImportError as err:
            raise BackendUnavailable(
                "TensorRT backend skipped: tensorrt is not installed "
                "(pip install 'hwnas[tensorrt]')"
            ) from err
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailable(
                "TensorRT backend skipped: no CUDA GPU is visible "
                "(torch.cuda.is_available() is False)"
            )
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
            model, input_shape, int8=self.profile.precision == "int8", symmetric=True
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
        trt = self._trt
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
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE_BYTES)
        if self.profile.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        int8_flag = getattr(trt.BuilderFlag, "INT8", None)  # QDQ graphs may not need it
        if self.profile.precision == "int8" and int8_flag is not None:
            config.set_flag(int8_flag)

        dynamic = [
            network.get_input(i) for i in range(network.num_inputs)
            if any(dim < 0 for dim in network.get_input(i).shape)
        ]
        if dynamic:
            opt_profile = builder.create_optimization_profile()
            for tensor in dynamic:
                opt_profile.set_shape(tensor.name, input_shape, input_shape, input_shape)
            config.add_optimization_profile(opt_profile)

        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError("TensorRT failed to build an engine; see the TensorRT log above")
        logger.debug("built TensorRT engine (%d bytes)", serialized.nbytes)
        engine = trt.Runtime(trt_logger).deserialize_cuda_engine(serialized)
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
