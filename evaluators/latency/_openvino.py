"""OpenVINO on the CPU: Intel's inference runtime, timed like onnxruntime.

The backend reads a torch module (exported to ONNX first), ONNX bytes, a ``.onnx`` file,
an OpenVINO IR ``.xml`` file or an in-memory :class:`OpenVINOIR`, compiles it for the CPU
plugin with one stream, ``profile.threads`` inference threads, f32 inference precision and
the latency hint, and times ``InferRequest.infer`` back to back.

Telemetry: openvino-telemetry, which ``import openvino`` (an "import" event),
``openvino.convert_model`` and NNCF use, sends usage events to Google Analytics and writes a
client id and usage counts under ``~/intel/`` unless a consent file there says no. Its only
switch short of writing that file is the ``CI=true`` environment variable (all three pass
``disable_in_ci=True``); NNCF also replaces its telemetry with a stub when ``NNCF_CI`` is set
at import. :func:`telemetry_disabled` sets both for the duration of a block, and
:func:`import_openvino` imports OpenVINO inside it. Reading, compiling and running models
send nothing.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluators._io import atomic_write_bytes
from evaluators.latency._base import BackendUnavailable, LatencyBackend
from evaluators.latency._onnx import to_onnx
from evaluators.latency._registry import register_backend

if TYPE_CHECKING:
    from typing_extensions import Self

    from evaluators.latency._base import ModelLike, Runner
    from hwprofiles import HardwareProfile

__all__ = ["OpenVINOBackend", "OpenVINOIR", "import_openvino", "telemetry_disabled"]

_INSTALL_HINT = "pip install 'openvino>=2025.0'"
_DEVICE = "CPU"
# Environment variables that switch openvino-telemetry (CI) and NNCF's telemetry (NNCF_CI) off.
_NO_TELEMETRY_ENV = {"CI": "true", "NNCF_CI": "1"}
_telemetry_lock = threading.Lock()
_telemetry_depth = 0
_telemetry_saved: dict[str, str | None] = {}


@contextmanager
def telemetry_disabled() -> Iterator[None]:
    """Keeps openvino-telemetry and NNCF from sending anything or writing to ``~/intel``.

    Sets ``CI=true`` and ``NNCF_CI=1`` in the environment for the block and restores the
    previous values afterwards (nested and concurrent blocks restore once, at the end of
    the last). Import NNCF and call ``openvino.convert_model`` inside it.
    """
    global _telemetry_depth
    with _telemetry_lock:
        if _telemetry_depth == 0:
            _telemetry_saved.clear()
            for key, value in _NO_TELEMETRY_ENV.items():
                _telemetry_saved[key] = os.environ.get(key)
                os.environ[key] = value
        _telemetry_depth += 1
    try:
        yield
    finally:
        with _telemetry_lock:
            _telemetry_depth -= 1
            if _telemetry_depth == 0:
                for key, previous in _telemetry_saved.items():
                    if previous is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = previous


def import_openvino() -> Any:
    """Imports and returns the ``openvino`` module inside :func:`telemetry_disabled`.

    Raises:
        ImportError: openvino is not installed.
    """
    with telemetry_disabled():
        import openvino
    return openvino


@dataclass(frozen=True, repr=False)
class OpenVINOIR:
    """An OpenVINO IR model in memory: the ``.xml`` graph and its ``.bin`` weights.

    Attributes:
        xml: The graph, as the bytes of the ``.xml`` file.
        weights: The weights, as the bytes of the ``.bin`` file.

    Example:
        >>> ir = OpenVINOIR.load("model.int8.xml")  # doctest: +SKIP
        >>> ir.save("copy/model.int8.xml")  # writes copy/model.int8.bin too  # doctest: +SKIP
    """

    xml: bytes
    weights: bytes

    def save(self, path_xml: str | os.PathLike[str]) -> Path:
        """Writes the ``.xml`` file and, beside it with the suffix ``.bin``, the weights.

        Each file is written atomically, the weights first, so a complete ``.xml`` file
        never names weights that are still being written.

        Returns:
            The path of the ``.xml`` file.

        Raises:
            ValueError: ``path_xml`` does not end with ``.xml``.
        """
        path = _xml_path(path_xml)
        atomic_write_bytes(path.with_suffix(".bin"), self.weights)
        atomic_write_bytes(path, self.xml)
        return path

    @classmethod
    def load(cls, path_xml: str | os.PathLike[str]) -> Self:
        """Reads an IR from ``path_xml`` and the ``.bin`` file beside it.

        Raises:
            ValueError: ``path_xml`` does not end with ``.xml``.
            FileNotFoundError: Either file is missing.
        """
        path = _xml_path(path_xml)
        return cls(xml=path.read_bytes(), weights=path.with_suffix(".bin").read_bytes())

    @classmethod
    def from_model(cls, model: Any) -> Self:
        """Serialises an ``openvino.Model`` with ``openvino.save_model``, weights uncompressed.

        ``compress_to_fp16=False`` keeps fp32 weights fp32; weights behind INT8
        ``FakeQuantize`` nodes are stored as INT8 either way.
        """
        ov = import_openvino()
        with tempfile.TemporaryDirectory(prefix="hwnas-ov-") as tmp:
            path = Path(tmp) / "model.xml"
            ov.save_model(model, path, compress_to_fp16=False)
            return cls.load(path)

    def read(self, core: Any = None) -> Any:
        """Returns the IR as an ``openvino.Model``, read with ``core`` (a new ``Core`` if None)."""
        if core is None:
            core = import_openvino().Core()
        return core.read_model(self.xml, self.weights)

    def __repr__(self) -> str:
        return f"OpenVINOIR(xml={len(self.xml)} bytes, weights={len(self.weights)} bytes)"


def _xml_path(path_xml: str | os.PathLike[str]) -> Path:
    path = Path(path_xml)
    if path.suffix != ".xml":
        raise ValueError(f"path_xml: an OpenVINO IR path must end with '.xml', got {str(path)!r}")
    return path


@register_backend
class OpenVINOBackend(LatencyBackend):
    """Compiles a model for OpenVINO's CPU plugin and times ``InferRequest.infer``.

    The compiled model has one stream, ``profile.threads`` inference threads (OpenVINO's
    default when ``None``), the latency performance hint and f32 inference precision:
    OpenVINO's default on CPUs with AVX-512 BF16 or AMX is bf16, which changes both the
    numbers and the speed. Threads are not pinned to cores, as onnxruntime's are not: every
    process would pin its stream to the same first core. An INT8 IR (FakeQuantize nodes,
    see ``compress.quantize_nncf``) runs its quantised layers in INT8 under this profile.

    Raises:
        BackendUnavailable: openvino is not installed.
    """

    name = "openvino"
    devices = ("cpu",)
    precisions = ("fp32",)
    accepts_onnx = True

    def __init__(self, profile: HardwareProfile) -> None:
        super().__init__(profile)
        try:
            openvino = import_openvino()
        except ImportError as err:
            raise BackendUnavailable(
                f"openvino backend skipped: openvino is not installed ({_INSTALL_HINT})"
            ) from err
        self._core: Any = openvino.Core()

    def compile_config(self) -> dict[str, Any]:
        """Returns the properties :meth:`compile` passes to ``Core.compile_model``."""
        ov = import_openvino()
        import openvino.properties as props
        import openvino.properties.hint as hints

        config: dict[str, Any] = {
            props.num_streams(): 1,
            hints.performance_mode(): hints.PerformanceMode.LATENCY,
            hints.inference_precision(): ov.Type.f32,
            hints.enable_cpu_pinning(): False,
        }
        if self.profile.threads is not None:
            config[props.inference_num_threads()] = self.profile.threads
        return config

    def compile(self, model: ModelLike, input_shape: tuple[int, ...]) -> Any:
        """Reads ``model`` and returns it compiled (an ``openvino.CompiledModel``).

        A model whose input has dynamic dimensions is reshaped to ``input_shape``.

        Raises:
            TypeError: ``model`` is none of the accepted kinds, or has not one input.
            ValueError: The model's input shape is static and differs from ``input_shape``.
        """
        ov_model = self._read(model, input_shape)
        if len(ov_model.inputs) != 1:
            raise TypeError(f"model: expected a model with one input, got {len(ov_model.inputs)}")
        shape = ov_model.input(0).get_partial_shape()
        if shape.is_dynamic:
            ov_model.reshape(list(input_shape))
        elif tuple(shape.to_shape()) != tuple(input_shape):
            raise ValueError(
                f"input_shape: the model's input is {tuple(shape.to_shape())}, got {input_shape}"
            )
        return self._core.compile_model(ov_model, _DEVICE, self.compile_config())

    @contextmanager
    def session(
        self, model: ModelLike, input_shape: tuple[int, ...]
    ) -> Iterator[Runner]:
        """Yields a runner of ``InferRequest.infer``; see :class:`LatencyBackend`.

        Args:
            model: A torch module, ONNX bytes, the path of a ``.onnx`` or IR ``.xml`` file
                (its ``.bin`` beside it), or an :class:`OpenVINOIR`.
            input_shape: Full input shape, batch included.
        """
        import numpy as np

        ov = import_openvino()
        compiled = self.compile(model, input_shape)
        request = compiled.create_infer_request()
        dtype = compiled.input(0).get_element_type().to_dtype()
        x = np.random.default_rng(0).standard_normal(input_shape).astype(dtype)
        request.set_input_tensor(ov.Tensor(x))  # set once; every infer() reads it
        infer = request.infer

        def runner(n: int) -> float:
            start = time.perf_counter_ns()
            for _ in range(n):
                infer()
            return (time.perf_counter_ns() - start) / 1e6

        yield runner

    def _read(self, model: ModelLike, input_shape: tuple[int, ...]) -> Any:
        if isinstance(model, OpenVINOIR):
            return model.read(self._core)
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if path.suffix not in (".onnx", ".xml"):
                raise TypeError(
                    "model: the openvino backend reads '.onnx' and IR '.xml' files, "
                    f"got {str(path)!r}"
                )
            return self._core.read_model(path)
        return self._core.read_model(to_onnx(model, input_shape))
