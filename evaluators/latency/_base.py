"""The contract every latency backend implements."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Union

if TYPE_CHECKING:
    from torch import nn

    from hwprofiles import HardwareProfile

__all__ = ["BackendUnavailable", "LatencyBackend", "ModelLike"]

# A model to time: a torch module, or (for ONNX-based backends) a serialised ONNX model
# given as bytes or as the path of a ``.onnx`` file.
ModelLike = Union["nn.Module", bytes, str, "os.PathLike[str]"]


class BackendUnavailable(RuntimeError):
    """The backend a profile asks for cannot run here; the message says why."""


class LatencyBackend(ABC):
    """Times repeated inference of a model with one inference stack on one device.

    Call order: :func:`get_backend` constructs one backend per profile; the constructor
    checks that the stack can run here and raises :class:`BackendUnavailable` otherwise.
    :class:`LatencyMeter` then calls :meth:`time` once per measurement, with the model
    in eval mode and the device held exclusively, so everything that touches the device
    (export, engine building, warm-up, timed runs) belongs inside :meth:`time`.

    Subclasses set ``name`` and implement :meth:`time`.

    Args:
        profile: The hardware profile this backend measures for.
    """

    name: ClassVar[str] = ""

    def __init__(self, profile: HardwareProfile) -> None:
        self.profile = profile

    @abstractmethod
    def time(
        self, model: ModelLike, input_shape: tuple[int, ...], *, warmup: int, repeats: int
    ) -> list[float]:
        """Runs ``warmup`` untimed then ``repeats`` timed inferences.

        Args:
            model: The model to time. Must not be modified.
            input_shape: Full input shape, batch dimension included.
            warmup: Untimed runs first.
            repeats: Timed runs.

        Returns:
            ``repeats`` latencies in milliseconds, in the order they ran.

        Raises:
            TypeError: The backend cannot time this kind of model.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(profile={self.profile.name!r})"
