"""The peak memory inference of a model needs on a hardware profile, measured.

``peak_memory_mb`` is measured, the way a deployer would see it: on a CPU profile, a fresh process runs the
profile's backend on the model and reports how far its resident memory rose above what it
held before the model arrived (the kernel's high-water mark, ``VmHWM``, reset first); on a
CUDA profile, ``torch.cuda.max_memory_allocated`` over the inference. Both count the weights
as the runtime holds them, the activations and the runtime's workspace.
"""

from __future__ import annotations

import multiprocessing
import pickle
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    import numpy as np

    from evaluators.latency._base import ModelLike
    from hwprofiles import HardwareProfile

__all__ = ["MemoryUnavailable", "memory_unavailable_reason", "peak_memory_mb"]

MIB = float(2**20)
# inferences the child runs: the first allocates, the later ones reuse the arena
_RUNS = 3


class MemoryUnavailable(RuntimeError):
    """Peak memory cannot be measured here; the message says why."""


def memory_unavailable_reason(profile: HardwareProfile) -> str | None:
    """Returns why peak memory cannot be measured on ``profile`` here, or ``None``."""
    if profile.device == "cuda":
        return None
    if not sys.platform.startswith("linux"):
        return f"peak memory of a CPU process is read from /proc, which {sys.platform} lacks"
    if not Path("/proc/self/clear_refs").exists():
        return "the kernel has no /proc/self/clear_refs to reset the peak-memory mark"
    return None


def peak_memory_mb(
    profile: HardwareProfile,
    model: ModelLike,
    input_shape: tuple[int, ...],
    *,
    calibration: np.ndarray | None = None,
    timeout: float = 300.0,
) -> float:
    """Returns the peak memory, in MiB, that inference of ``model`` adds to a process on
    ``profile`` at the profile's batch (``input_shape``'s batch is replaced).

    Raises:
        MemoryUnavailable: it cannot be measured here, or the measuring process failed.
        BackendUnavailable: the profile's backend cannot run here.
    """
    from evaluators.latency import get_backend
    from evaluators.latency._onnx import to_onnx

    shape = (profile.batch_size, *input_shape[1:])
    backend = get_backend(profile)
    if profile.device == "cuda":
        return _cuda_peak(backend, model, shape)
    reason = memory_unavailable_reason(profile)
    if reason:
        raise MemoryUnavailable(f"peak_memory_mb: {reason}")
    if backend.accepts_onnx:  # export (and quantise) here: the child only runs the graph
        kind, payload = "onnx", to_onnx(model, shape, int8=profile.precision == "int8",
                                        calibration=calibration)
    elif isinstance(model, nn.Module):
        kind, payload = "pickle", pickle.dumps(model.eval())
    else:
        raise TypeError(f"model: backend {backend.name!r} needs a torch module")
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_measure_in_child,
                            args=(profile.model_dump(), kind, payload, shape, send), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(timeout):
            raise MemoryUnavailable(f"peak_memory_mb: the measuring process gave no answer in "
                                    f"{timeout:g} s")
        status, value = receive.recv()
    except EOFError as err:
        raise MemoryUnavailable("peak_memory_mb: the measuring process died (out of memory?)"
                                ) from err
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
    if status != "ok":
        raise MemoryUnavailable(f"peak_memory_mb: measuring failed: {value}")
    return float(value)


def _cuda_peak(backend: Any, model: ModelLike, shape: tuple[int, ...]) -> float:
    import torch

    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with backend.session(model, shape) as run:
        run(_RUNS)
    torch.cuda.synchronize()
    return max(0.0, torch.cuda.max_memory_allocated() - before) / MIB


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise MemoryUnavailable(f"/proc/self/status has no {field}")


def _measure_in_child(profile_fields: dict[str, Any], kind: str, payload: bytes,
                      shape: tuple[int, ...], send: Any) -> None:
    """Runs in a fresh process: resets the high-water mark, then loads and runs the model."""
    try:
        from evaluators.latency import get_backend
        from hwprofiles import HardwareProfile

        profile = HardwareProfile(**profile_fields)
        backend = get_backend(profile)
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        base = _status_kib("VmRSS")
        model = payload if kind == "onnx" else pickle.loads(payload)
        with backend.session(model, shape) as run:
            run(_RUNS)
        send.send(("ok", max(0, _status_kib("VmHWM") - base) / 1024.0))
    except Exception as exc:  # noqa: BLE001 - any failure goes to the parent, which raises it
        send.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        send.close()
