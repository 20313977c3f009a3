"""Latency measurement on a hardware profile: backends, device lock, cache and meter."""

from __future__ import annotations

from evaluators.latency._base import BackendUnavailable, LatencyBackend
from evaluators.latency._cache import LatencyCache
from evaluators.latency._latency import Latency
from evaluators.latency._lock import DeviceLock
from evaluators.latency._meter import LatencyMeter
from evaluators.latency._registry import get_backend

__all__ = [
    "BackendUnavailable",
    "DeviceLock",
    "Latency",
    "LatencyBackend",
    "LatencyCache",
    "LatencyMeter",
    "get_backend",
]
