"""Hardware profiles: YAML descriptions of the devices latency is measured on."""

from __future__ import annotations

from hwprofiles._device import cpu_model, describe_environment, gpu_name, package_versions
from hwprofiles._profile import HardwareProfile, ProfileError, list_profiles, load_profile

__all__ = [
    "HardwareProfile", "ProfileError", "cpu_model", "describe_environment", "gpu_name",
    "list_profiles", "load_profile", "package_versions",
]
