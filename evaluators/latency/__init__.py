"""Latency measurement on a hardware profile: backends, device lock, cache and meter."""

from __future__ import annotations

# Built-in backends register themselves on import; import them all here so that the
# registry's contents never depend on what a caller imported first.
from evaluators.latency import _onnxruntime, _openvino, _tensorrt, _torch  # noqa: F401
from evaluators.latency._activity import CoreActivity, CpuActivityProbe, busy_device_warning
from evaluators.latency._base import BackendUnavailable, LatencyBackend
from evaluators.latency._cache import LatencyCache
from evaluators.latency._latency import Latency
from evaluators.latency._lock import DeviceLock
from evaluators.latency._meter import UNRELIABLE_RETAKES, LatencyMeter, part_protocol
from evaluators.latency._model import (
    BlockLatencyTable,
    LatencyModel,
    LatencyModelError,
    chain_blocks,
    model_path,
)
from evaluators.latency._openvino import OpenVINOIR
from evaluators.latency._registry import (
    check_profile,
    get_backend,
    list_backends,
    register_backend,
)

__all__ = [
    "UNRELIABLE_RETAKES",
    "BackendUnavailable",
    "BlockLatencyTable",
    "CoreActivity",
    "CpuActivityProbe",
    "DeviceLock",
    "Latency",
    "LatencyBackend",
    "LatencyCache",
    "LatencyMeter",
    "LatencyModel",
    "LatencyModelError",
    "OpenVINOIR",
    "busy_device_warning",
    "chain_blocks",
    "check_profile",
    "get_backend",
    "list_backends",
    "model_path",
    "part_protocol",
    "register_backend",
]
