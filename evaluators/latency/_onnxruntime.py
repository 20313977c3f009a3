"""onnxruntime on the CPU: the deployment-like latency backend."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from evaluators.latency._base import BackendUnavailable, LatencyBackend
from evaluators.latency._onnx import to_onnx
from evaluators.latency._registry import register_backend

if TYPE_CHECKING:
    from evaluators.latency._base import ModelLike, Runner
    from hwprofiles import HardwareProfile

__all__ = ["OnnxRuntimeBackend"]

_NUMPY_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}


@register_backend
class OnnxRuntimeBackend(LatencyBackend):
    """Exports to ONNX and times an onnxruntime CPU session.

    The session runs sequentially with ``profile.threads`` intra-op threads (the
    onnxruntime default when ``None``), one inter-op thread and every graph optimisation
    enabled. Precision ``int8`` quantises an exported module to a QDQ graph first.

    Raises:
        BackendUnavailable: onnxruntime is not installed.
    """

    name = "onnxruntime"
    devices = ("cpu",)
    precisions = ("fp32", "int8")
    accepts_onnx = True

    def __init__(self, profile: HardwareProfile) -> None:
        super().__init__(profile)
        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise BackendUnavailable(
                "onnxruntime backend skipped: onnxruntime is not installed "
                "(pip install onnxruntime)"
            ) from err

    @contextmanager
    def session(self, model: ModelLike, input_shape: tuple[int, ...]) -> Iterator[Runner]:
        """Yields a runner over an onnxruntime session; see :class:`LatencyBackend`."""
        import numpy as np
        import onnxruntime as ort

        onnx_bytes = to_onnx(model, input_shape, int8=self.profile.precision == "int8",
                             calibration=self.calibration)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.profile.threads or 0
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(
            onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise TypeError(f"model: expected an ONNX model with one input, got {len(inputs)}")
        dtype = _NUMPY_DTYPES.get(inputs[0].type, "float32")
        x = np.random.default_rng(0).standard_normal(input_shape).astype(dtype)
        feed = {inputs[0].name: x}
        run = session.run

        def runner(n: int) -> float:
            start = time.perf_counter_ns()
            for _ in range(n):
                run(None, feed)
            return (time.perf_counter_ns() - start) / 1e6

        yield runner
