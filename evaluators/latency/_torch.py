"""Eager PyTorch on the CPU or a CUDA GPU."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from evaluators.latency._base import BackendUnavailable, LatencyBackend
from evaluators.latency._registry import register_backend

if TYPE_CHECKING:
    from evaluators.latency._base import ModelLike, Runner
    from hwprofiles import HardwareProfile

__all__ = ["TorchBackend", "num_threads"]

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
    """Sets ``torch.set_num_threads`` for the block and restores the previous value.

    Args:
        threads: Intra-op threads inside the block; ``None`` leaves the setting alone.
    """
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@register_backend
class TorchBackend(LatencyBackend):
    """Times a module's eager forward pass under ``torch.inference_mode``.

    On the CPU each run is timed with ``time.perf_counter`` using ``profile.threads``
    intra-op threads (restored afterwards). On CUDA each run is timed with a pair of
    CUDA events on the current device; precision ``fp16`` runs a half-precision copy.
    A module that is not already on the profile's device and dtype is copied there, so
    the caller's module is never moved.

    Raises:
        BackendUnavailable: The profile asks for CUDA and no CUDA GPU is visible.
    """

    name = "torch"
    devices = ("cpu", "cuda")
    precisions = ("fp32", "fp16")

    def __init__(self, profile: HardwareProfile) -> None:
        super().__init__(profile)
        if profile.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(
                "torch CUDA backend skipped: no CUDA GPU is visible "
                "(torch.cuda.is_available() is False)"
            )

    @contextmanager
    def session(self, model: ModelLike, input_shape: tuple[int, ...]) -> Iterator[Runner]:
        """Yields a runner of forward passes; see :class:`LatencyBackend`."""
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"model: the torch backend times torch.nn.Module, got {type(model).__name__}"
            )
        dtype = _DTYPES[self.profile.precision]
        if self.profile.device == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        else:
            device = torch.device("cpu")
        module = _placed(model, device, dtype)
        x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)
        with torch.inference_mode(), num_threads(self.profile.threads):
            yield _cuda_runner(module, x) if device.type == "cuda" else _cpu_runner(module, x)


def _placed(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Returns ``model`` itself if it already lives on ``device`` in ``dtype``, else a copy."""
    tensors = list(model.parameters()) + list(model.buffers())
    if all(t.device == device and (t.dtype == dtype or not t.is_floating_point())
           for t in tensors):
        return model
    return copy.deepcopy(model).to(device=device, dtype=dtype)


def _cpu_runner(model: nn.Module, x: torch.Tensor) -> Runner:
    def run(n: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            model(x)
        return (time.perf_counter_ns() - start) / 1e6

    return run


def _cuda_runner(model: nn.Module, x: torch.Tensor) -> Runner:
    torch.cuda.synchronize(x.device)

    def run(n: int) -> float:
        # The queue is empty when a sample starts (the previous one synchronised), so a
        # one-run sample includes kernel-launch overhead, as a single request would.
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        for _ in range(n):
            model(x)
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))

    return run
