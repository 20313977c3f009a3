"""The contract every latency backend implements."""

from __future__ import annotations

import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, ClassVar, Union

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from evaluators.latency._openvino import OpenVINOIR
    from hwprofiles import HardwareProfile

__all__ = ["BackendUnavailable", "LatencyBackend", "ModelLike", "Runner"]

#: Runs ``n`` inferences back to back; returns their elapsed milliseconds.
Runner = Callable[[int], float]
# The most back-to-back inferences one sample may average over.
_MAX_INNER = 10_000

# A model to time: a torch module, or (for ONNX-based backends) a serialised ONNX model
# given as bytes or as the path of a ``.onnx`` file; the openvino backend also takes an IR
# (an ``.xml`` path or an ``OpenVINOIR``).
ModelLike = Union["nn.Module", bytes, str, "os.PathLike[str]", "OpenVINOIR"]


class BackendUnavailable(RuntimeError):
    """The backend a profile asks for cannot run here; the message says why."""


class LatencyBackend(ABC):
    """Times repeated inference of a model with one inference stack on one device.

    Call order: :func:`get_backend` constructs one backend per profile; the constructor
    checks that the stack can run here and raises :class:`BackendUnavailable` otherwise.
    :class:`LatencyMeter` then calls :meth:`time` once per measurement, with the model
    in eval mode and the device held exclusively; :meth:`time` opens :meth:`session`, so
    everything that touches the device (export, engine building, warm-up, timed runs)
    happens inside that hold.

    Subclasses set ``name`` (the key a profile's ``backend`` uses), ``devices`` and
    ``precisions`` (what profiles it can describe), implement :meth:`session`, and register
    with :func:`register_backend`.

    Args:
        profile: The hardware profile this backend measures for.
    """

    name: ClassVar[str] = ""
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    #: Whether :meth:`session` times serialised ONNX (bytes or a path) as well as modules:
    #: then the compression chain times the very file it ships.
    accepts_onnx: ClassVar[bool] = False

    def __init__(self, profile: HardwareProfile) -> None:
        self.profile = profile
        #: Inputs (N, C, H, W) that an INT8 profile's backend calibrates a module with; the
        #: meter sets them. None: seeded random inputs (scales change values, not speed).
        self.calibration: np.ndarray | None = None

    @abstractmethod
    def session(
        self, model: ModelLike, input_shape: tuple[int, ...]
    ) -> AbstractContextManager[Runner]:
        """Prepares ``model`` (export, engine build, device placement) and yields a runner.

        The runner runs ``n`` inferences back to back and returns their elapsed time in
        milliseconds, measured the backend's way (``perf_counter`` on the CPU, CUDA events
        on a GPU).

        Raises:
            TypeError: The backend cannot time this kind of model.
        """

    def time(
        self,
        model: ModelLike,
        input_shape: tuple[int, ...],
        *,
        warmup: int,
        repeats: int,
        min_sample_ms: float = 0.0,
        windows: int = 1,
        window_pause_ms: float = 0.0,
    ) -> list[float]:
        """Runs ``warmup`` untimed then ``repeats`` timed samples of inference.

        A sample is one inference, or, when one is shorter than ``min_sample_ms``, the
        mean of the smallest number of back-to-back inferences that lasts that long
        (timeit's autorange): a 40-microsecond model timed call by call measures timer
        and scheduler jitter more than the model. The samples are taken in ``windows``
        consecutive groups of near-equal size with ``window_pause_ms`` between them, so
        that one measurement spans more than a passing disturbance.

        Args:
            model: The model to time. Must not be modified.
            input_shape: Full input shape, batch dimension included.
            warmup: Untimed runs first.
            repeats: Timed samples.
            min_sample_ms: The shortest a sample may last; 0 times every run alone.
            windows: Groups the samples are taken in.
            window_pause_ms: Idle time between two groups.

        Returns:
            ``repeats`` per-inference latencies in milliseconds, in the order they ran.

        Raises:
            TypeError: The backend cannot time this kind of model.
        """
        with self.session(model, input_shape) as run:
            if warmup:
                run(warmup)
            inner = 1
            while min_sample_ms > 0 and inner < _MAX_INNER:
                elapsed = run(inner)
                if elapsed >= min_sample_ms:
                    break
                grow = math.ceil(inner * min_sample_ms / max(elapsed, 1e-6))
                inner = min(_MAX_INNER, max(2 * inner, grow))
            samples: list[float] = []
            windows = max(1, min(windows, repeats))
            size, extra = divmod(repeats, windows)
            for w in range(windows):
                if w and window_pause_ms > 0:
                    time.sleep(window_pause_ms / 1000)
                samples.extend(run(inner) / inner for _ in range(size + (w < extra)))
            return samples

    def __repr__(self) -> str:
        return f"{type(self).__name__}(profile={self.profile.name!r})"
