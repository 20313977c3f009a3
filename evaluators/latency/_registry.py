"""The registry of latency backends: a profile's ``backend`` names one of them.

A backend is one class and one decorator: subclass :class:`LatencyBackend`, set ``name``
(the key a hardware profile's ``backend`` uses), the ``devices`` and ``precisions`` it
measures, and decorate it with :func:`register_backend`.

Example:
    >>> from evaluators.latency import LatencyBackend, register_backend
    >>> @register_backend
    ... class MyRuntime(LatencyBackend):  # doctest: +SKIP
    ...     name, devices, precisions = "myruntime", ("cpu",), ("fp32",)
    ...     def session(self, model, input_shape): ...
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, TypeVar

from evaluators.latency._base import LatencyBackend
from hwprofiles import ProfileError

if TYPE_CHECKING:
    from hwprofiles import HardwareProfile

__all__ = ["check_profile", "get_backend", "list_backends", "register_backend"]

_B = TypeVar("_B", bound=type[LatencyBackend])
_BACKENDS: dict[str, type[LatencyBackend]] = {}


def register_backend(cls: _B) -> _B:
    """Registers a latency backend class under its ``name``; warns when a name is reused.

    Returns:
        The class, unchanged.

    Raises:
        TypeError: ``cls`` is not a ``LatencyBackend`` subclass or has no ``name``.
    """
    if not (isinstance(cls, type) and issubclass(cls, LatencyBackend)):
        raise TypeError(f"register_backend: expected a LatencyBackend subclass, got {cls!r}")
    if not cls.name:
        raise TypeError(f"register_backend: {cls.__name__} must set a non-empty `name`")
    if cls.name in _BACKENDS and _BACKENDS[cls.name] is not cls:
        warnings.warn(f"latency backend {cls.name!r} is already registered; "
                      f"{cls.__name__} replaces it", UserWarning, stacklevel=2)
    _BACKENDS[cls.name] = cls
    return cls


def list_backends() -> list[str]:
    """Returns the names of the registered latency backends, sorted."""
    return sorted(_BACKENDS)


def check_profile(profile: HardwareProfile) -> type[LatencyBackend]:
    """Returns the backend class ``profile`` names, after checking it can describe the profile.

    Raises:
        ProfileError: the backend is not registered (the message lists those that are), or
            it does not measure on the profile's device or in its precision.
    """
    try:
        cls = _BACKENDS[profile.backend]
    except KeyError:
        raise ProfileError(
            f"profile {profile.name!r}: backend: must be one of {', '.join(repr(n) for n in list_backends())}, "
            f"got {profile.backend!r} (a new backend registers with "
            "evaluators.latency.register_backend)"
        ) from None
    if profile.device not in cls.devices:
        raise ProfileError(
            f"profile {profile.name!r}: device: backend {cls.name!r} measures on {' or '.join(map(repr, cls.devices))} "
            f"only, got {profile.device!r}"
        )
    if profile.precision not in cls.precisions:
        raise ProfileError(
            f"profile {profile.name!r}: precision: backend {cls.name!r} supports {', '.join(map(repr, cls.precisions))}, "
            f"got {profile.precision!r}"
        )
    return cls


def get_backend(profile: HardwareProfile) -> LatencyBackend:
    """Returns the backend that measures latency for ``profile``.

    Args:
        profile: The hardware profile; its ``backend`` field picks the implementation.

    Returns:
        A ready backend.

    Raises:
        ProfileError: see :func:`check_profile`.
        BackendUnavailable: The backend cannot run here (library missing, no CUDA GPU);
            the message gives the reason and, where it helps, the install command.

    Example:
        >>> from hwprofiles import load_profile
        >>> get_backend(load_profile("cpu")).name
        'onnxruntime'
    """
    return check_profile(profile)(profile)
