"""Choosing the latency backend a hardware profile asks for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from evaluators.latency._base import LatencyBackend
from evaluators.latency._onnxruntime import OnnxRuntimeBackend
from evaluators.latency._tensorrt import TensorRTBackend
from evaluators.latency._torch import TorchBackend

if TYPE_CHECKING:
    from hwprofiles import HardwareProfile

__all__ = ["get_backend"]

_BACKENDS: dict[str, type[LatencyBackend]] = {
    cls.name: cls for cls in (OnnxRuntimeBackend, TorchBackend, TensorRTBackend)
}


def get_backend(profile: HardwareProfile) -> LatencyBackend:
    """Returns the backend that measures latency for ``profile``.

    Args:
        profile: The hardware profile; its ``backend`` field picks the implementation.

    Returns:
        A ready backend.

    Raises:
        BackendUnavailable: The backend cannot run here (library missing, no CUDA GPU);
            the message gives the reason and, where it helps, the install command.

    Example:
        >>> from hwprofiles import load_profile
        >>> get_backend(load_profile("cpu")).name
        'onnxruntime'
    """
    try:
        cls = _BACKENDS[profile.backend]
    except KeyError:
        raise ValueError(
            f"backend: unknown latency backend {profile.backend!r}; "
            f"available: {', '.join(sorted(_BACKENDS))}"
        ) from None
    return cls(profile)
