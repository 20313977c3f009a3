"""Hardware profiles: YAML descriptions of the devices latency is measured on."""

from __future__ import annotations

from hwprofiles._profile import HardwareProfile, ProfileError, list_profiles, load_profile

__all__ = ["HardwareProfile", "ProfileError", "list_profiles", "load_profile"]
