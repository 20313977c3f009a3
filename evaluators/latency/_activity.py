"""How busy the measured CPU cores are: the evidence a latency measurement can be trusted.

A latency measured while other processes run on the same cores is mostly a measurement
of the scheduler. A :class:`CpuActivityProbe` reads the kernel's per-core CPU time around
a measurement (``psutil.cpu_times(percpu=True)``, i.e. ``/proc/stat`` on Linux) and the
measuring process's own CPU time, and reports how much work *other* processes (and, on a
virtual machine, the hypervisor's steal) did on those cores meanwhile.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

__all__ = [
    "CoreActivity", "CpuActivityProbe", "allowed_cores", "busiest_processes",
    "busy_device_warning", "cores_away_from", "pinned",
]

# ``psutil`` per-core fields that are work done on the core (``guest`` is already in ``user``)
_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")
_IDLE_FIELDS = ("idle", "iowait")


def allowed_cores() -> list[int]:
    """Returns the CPU cores this thread may run on (all of them where affinity is unknown)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(psutil.cpu_count() or 1))


@contextmanager
def pinned(cores: Sequence[int] | None) -> Iterator[list[int]]:
    """Runs the block with the calling thread bound to ``cores`` (all allowed ones when
    ``None``), then restores its affinity; yields the cores it runs on.

    Threads a backend creates inside the block inherit the binding.

    Raises:
        ValueError: a core is not one this process may run on.
    """
    before = allowed_cores()
    if cores is None:
        yield before
        return
    wanted = sorted({int(c) for c in cores})
    outside = [c for c in wanted if c not in before]
    if outside or not wanted:
        raise ValueError(f"pin_cores: cores {outside or wanted} are not among the cores this "
                         f"process may run on ({before})")
    if not hasattr(os, "sched_setaffinity"):
        yield before  # no affinity control on this platform: measure where the OS runs us
        return
    os.sched_setaffinity(0, wanted)
    try:
        yield wanted
    finally:
        os.sched_setaffinity(0, before)


def cores_away_from(cores: Sequence[int] | None) -> list[int] | None:
    """Returns the allowed cores other than ``cores`` (where training should run when a
    profile pins measurement to ``cores``), or ``None`` when that leaves none or nothing is
    pinned."""
    if not cores:
        return None
    rest = [c for c in allowed_cores() if c not in set(cores)]
    return rest or None


@dataclass(frozen=True)
class CoreActivity:
    """What ran on the measured cores during one measurement.

    Attributes:
        cores: The cores the measurement ran on.
        seconds: Wall time observed.
        busy: Cores' worth of work done on ``cores`` by anyone (``1.0``: one core fully busy).
        own: Cores' worth of CPU time the measuring process used.
        others: ``busy - own``: work of other processes (and hypervisor steal) on ``cores``.
        contention: The part of ``others`` that cannot have run on an idle core beside the
            measurement: ``others`` minus the cores the measurement left free.
    """

    cores: tuple[int, ...]
    seconds: float
    busy: float
    own: float
    others: float
    contention: float

    def describe(self) -> str:
        """Returns a one-line account, e.g. ``"other processes used 0.85 of core 0"``."""
        where = (f"core {self.cores[0]}" if len(self.cores) == 1
                 else f"{len(self.cores)} cores {list(self.cores)}")
        return (f"other processes used {self.others:.2f} of {where} over {self.seconds:.2f} s "
                f"({self.contention:.2f} of a core beyond what the measurement left idle)")


class CpuActivityProbe:
    """Measures other processes' work on a set of cores between :meth:`start` and :meth:`stop`.

    Args:
        cores: The cores the measurement runs on.
        threads: Threads the measurement itself keeps busy; the other cores of ``cores``
            count as idle room that other processes may use without contention.

    Example:
        >>> probe = CpuActivityProbe([0], threads=1)
        >>> probe.start()
        >>> _ = sum(range(10000))
        >>> activity = probe.stop()
        >>> activity.cores
        (0,)
    """

    def __init__(self, cores: Sequence[int], *, threads: int = 1) -> None:
        self.cores = tuple(sorted(set(cores)))
        if not self.cores:
            raise ValueError("cores: need at least one core to watch")
        self.threads = max(1, threads)
        self._process = psutil.Process()
        self._start: tuple[float, float, float] | None = None

    def _sample(self) -> tuple[float, float, float]:
        per_core = psutil.cpu_times(percpu=True)
        busy = sum(getattr(per_core[c], f, 0.0) for c in self.cores if c < len(per_core)
                   for f in _BUSY_FIELDS)
        own = self._process.cpu_times()
        return time.monotonic(), busy, own.user + own.system

    def start(self) -> None:
        """Starts watching."""
        self._start = self._sample()

    def stop(self) -> CoreActivity:
        """Returns what ran on the cores since :meth:`start`.

        Raises:
            RuntimeError: :meth:`start` was not called.
        """
        if self._start is None:
            raise RuntimeError("CpuActivityProbe.stop() before start()")
        t0, busy0, own0 = self._start
        t1, busy1, own1 = self._sample()
        seconds = max(t1 - t0, 1e-6)
        busy = max(0.0, busy1 - busy0) / seconds
        # the kernel's per-core counters tick at 100 Hz: clamp rounding to what is possible
        busy = min(busy, float(len(self.cores)))
        own = min(max(0.0, own1 - own0) / seconds, busy)
        others = max(0.0, busy - own)
        room = max(0, len(self.cores) - self.threads)
        return CoreActivity(self.cores, seconds, busy, own, others, max(0.0, others - room))


def busiest_processes(*, interval: float = 0.2, top: int = 3, min_share: float = 0.05,
                      exclude: Sequence[int] = ()) -> list[str]:
    """Returns up to ``top`` other processes using the most CPU over ``interval`` seconds,
    e.g. ``["pid 4242 python (97% of a core)"]``; processes using less than ``min_share``
    of a core, this process and ``exclude`` are left out."""
    skip = {os.getpid(), *exclude}
    procs = []
    for proc in psutil.process_iter(["pid", "name"]):
        if proc.info["pid"] in skip:
            continue
        try:
            proc.cpu_percent(None)
            procs.append(proc)
        except (psutil.Error, OSError):
            continue
    time.sleep(interval)
    shares = []
    for proc in procs:
        try:
            shares.append((proc.cpu_percent(None) / 100.0, proc.info["pid"], proc.info["name"]))
        except (psutil.Error, OSError):
            continue
    shares.sort(reverse=True)
    return [f"pid {pid} {name} ({share:.0%} of a core)"
            for share, pid, name in shares[:top] if share >= min_share]


def busy_device_warning(
    cores: Sequence[int] | None, *, threads: int, max_load: float | None, seconds: float = 0.5
) -> str | None:
    """Watches ``cores`` (all allowed ones when ``None``) for ``seconds`` while this process
    idles and returns why measuring there now would be unreliable, naming what is using
    them, or ``None`` when they are quiet enough (or ``max_load`` is ``None``)."""
    if max_load is None:
        return None
    watched = list(cores) if cores is not None else allowed_cores()
    probe = CpuActivityProbe(watched, threads=threads)
    probe.start()
    time.sleep(seconds)
    activity = probe.stop()
    if activity.contention <= max_load:
        return None
    culprits = busiest_processes()
    return (f"the device is busy: {activity.describe()}, above the profile's max_load "
            f"{max_load:g}" + (f"; busiest: {', '.join(culprits)}" if culprits else "")
            + ". Latencies measured meanwhile are flagged unreliable and measured again.")


def cuda_busy_reason(max_utilization: float = 0.1) -> str | None:
    """Returns why the GPU torch uses is not quiet enough to measure on, from NVML: other
    processes computing on it, its utilisation over NVML's last sample period above
    ``max_utilization`` before the measurement starts, or thermal/power clock throttling;
    ``None`` when it is quiet, or where NVML is not installed or the GPU does not say."""
    try:
        import pynvml
        import torch
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        index = torch.cuda.current_device() if torch.cuda.is_available() else 0
        to_nvml = getattr(torch.cuda, "_get_nvml_device_index", None)
        handle = pynvml.nvmlDeviceGetHandleByIndex(to_nvml(index) if to_nvml else index)
        me = os.getpid()
        others = [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                  if p.pid != me]
        reasons = []
        if others:
            reasons.append(f"other processes compute on the GPU (pids {others[:5]})")
        utilization = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
        if utilization > max_utilization:
            reasons.append(f"the GPU was {utilization:.0%} busy before the measurement")
        throttle = pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)
        hot = (pynvml.nvmlClocksThrottleReasonHwSlowdown
               | pynvml.nvmlClocksThrottleReasonSwThermalSlowdown
               | pynvml.nvmlClocksThrottleReasonSwPowerCap)
        if throttle & hot:
            temperature = pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
            reasons.append(f"its clocks are throttled (thermal or power cap, {temperature} C)")
        return "; ".join(reasons) or None
    except pynvml.NVMLError:
        return None
