"""Energy per inference, where the device reports energy: NVML on NVIDIA GPUs, RAPL on CPUs.

Both read a cumulative hardware energy counter before and after a run of back-to-back
inferences long enough for the counter to resolve it (``MIN_SECONDS``), and divide by the
inferences run. RAPL's package domain counts the whole CPU package, idle cores included: on a
machine that runs other work meanwhile the figure is not the model's alone, which is why it
is taken under the device lock like a latency.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evaluators.latency import LatencyMeter
    from evaluators.latency._base import ModelLike
    from hwprofiles import HardwareProfile

__all__ = ["EnergyUnavailable", "energy_unavailable_reason", "measure_energy_mj"]

RAPL_ROOT = Path("/sys/class/powercap")
# the shortest run whose energy is read: RAPL updates about every millisecond, NVML's
# total-energy counter every few tens of milliseconds
MIN_SECONDS = 1.0


class EnergyUnavailable(RuntimeError):
    """The device does not report energy here; the message says why."""


def _rapl_domains() -> list[Path]:
    """Returns the readable top-level RAPL package domains (``intel-rapl:N``)."""
    domains = sorted(p for p in RAPL_ROOT.glob("intel-rapl:*") if p.name.count(":") == 1)
    readable = []
    for domain in domains:
        try:
            int((domain / "energy_uj").read_text())
            readable.append(domain)
        except (OSError, ValueError):
            continue
    return readable


def energy_unavailable_reason(profile: HardwareProfile) -> str | None:
    """Returns why energy cannot be measured on ``profile`` here, or ``None`` when it can."""
    if profile.device == "cuda":
        try:
            import pynvml
        except ImportError:
            return "NVML is not installed (pip install nvidia-ml-py)"
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(_nvml_handle())
        except pynvml.NVMLError as err:
            return f"the GPU does not report its energy through NVML ({err})"
        return None
    if not RAPL_ROOT.exists():
        return (f"this CPU exposes no RAPL energy counters ({RAPL_ROOT} is missing: not an "
                "Intel/AMD RAPL machine, or a virtual machine that hides them)")
    if not _rapl_domains():
        return (f"the RAPL counters under {RAPL_ROOT} are not readable by this user "
                "(energy_uj is root-only on most distributions)")
    return None


def _nvml_handle() -> object:
    """Returns the NVML handle of the GPU torch uses now (NVML numbers GPUs its own way)."""
    import pynvml
    import torch

    pynvml.nvmlInit()
    index = 0
    if torch.cuda.is_available():
        to_nvml = getattr(torch.cuda, "_get_nvml_device_index", None)
        index = to_nvml(torch.cuda.current_device()) if to_nvml else torch.cuda.current_device()
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def _read_rapl_uj(domains: list[Path]) -> list[int]:
    return [int((d / "energy_uj").read_text()) for d in domains]


def measure_energy_mj(
    meter: LatencyMeter, model: ModelLike, input_shape: tuple[int, ...]
) -> float:
    """Returns the energy of one inference of ``model`` on ``meter``'s profile, in millijoules.

    Raises:
        EnergyUnavailable: the device does not report energy here.
    """
    profile = meter.profile
    reason = energy_unavailable_reason(profile)
    if reason:
        raise EnergyUnavailable(f"energy_mj: {reason}")
    shape = meter.input_shape(input_shape)
    with meter.lock.measure(), meter.backend.session(model, shape) as run:
        run(max(1, profile.warmup))
        n, elapsed = 1, run(1)
        while elapsed < 1000.0 * MIN_SECONDS / 10:  # size the run to last MIN_SECONDS
            n *= 2
            elapsed = run(n)
        n = max(1, int(n * 1000.0 * MIN_SECONDS / max(elapsed, 1e-3)))
        if profile.device == "cuda":
            import pynvml

            handle = _nvml_handle()
            before = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # mJ
            run(n)
            return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) - before) / n
        domains = _rapl_domains()
        ranges = [int((d / "max_energy_range_uj").read_text()) for d in domains]
        start = _read_rapl_uj(domains)
        run(n)
        end = _read_rapl_uj(domains)
        used = sum((e - s) % r for s, e, r in zip(start, end, ranges))  # the counter wraps
        return used / 1000.0 / n
