"""What a run actually ran on: the device behind a profile and the library versions."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from hwprofiles._profile import HardwareProfile

#: Distributions whose versions decide the numbers a run measures.
VERSIONED_PACKAGES = (
    "hwnas", "torch", "onnxruntime", "onnx", "optuna", "ray", "nvidia-modelopt",
    "torch-pruning", "tensorrt", "numpy", "pandas", "plotly",
)


def cpu_model() -> str:
    """Returns the CPU's marketing name (``/proc/cpuinfo`` on Linux), or the platform's
    processor string where that file does not exist."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def gpu_name(index: int = 0) -> str | None:
    """Returns the name of CUDA device ``index``, or ``None`` without a usable CUDA GPU."""
    try:
        import torch

        if torch.cuda.is_available() and index < torch.cuda.device_count():
            return str(torch.cuda.get_device_name(index))
    except (ImportError, RuntimeError):
        pass
    return None


def package_versions(names: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str]:
    """Returns ``{distribution: version}`` for the installed ones among ``names``."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def describe_environment(profile: HardwareProfile) -> dict[str, Any]:
    """Returns the device latency is measured on for ``profile`` (its CPU model, and GPU
    name for a CUDA profile), the host, Python and the library versions, JSON-ready."""
    device = gpu_name() if profile.device == "cuda" else cpu_model()
    return {
        "profile": profile.name,
        "profile_device": profile.device,
        "backend": profile.backend,
        "precision": profile.precision,
        "device_name": device or "no CUDA GPU visible",
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_name(),
        "host": platform.node(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
    }
