"""The meter knows when the device is too busy to measure on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from evaluators.latency import DeviceLock, LatencyMeter
from evaluators.latency._activity import CpuActivityProbe, allowed_cores, busiest_processes, pinned
from hwprofiles import HardwareProfile, load_profile

SHAPE = (1, 3, 16, 16)
CORE = allowed_cores()[0]

_BURN = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True: pass"


def _profile(**changes: Any) -> HardwareProfile:
    fields = {**load_profile("cpu").model_dump(), "warmup": 2, "repeats": 30,
              "pin_cores": [CORE], "max_cv": None, **changes}  # the load alone decides here
    return HardwareProfile(**fields)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3))


@pytest.fixture
def burner() -> Iterator[subprocess.Popen[bytes]]:
    """A process that keeps the measured core busy."""
    proc = subprocess.Popen([sys.executable, "-c", _BURN, str(CORE)])
    time.sleep(0.3)  # let it start spinning
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def lock(tmp_path: Path) -> DeviceLock:
    return DeviceLock("cpu", lock_dir=tmp_path)


def test_probe_sees_another_process_on_the_core(burner: subprocess.Popen[bytes]) -> None:
    probe = CpuActivityProbe([CORE], threads=1)
    probe.start()
    time.sleep(0.5)  # this process idles: all the work on the core is the burner's
    activity = probe.stop()
    assert activity.others > 0.6 and activity.contention == activity.others
    assert f"of core {CORE}" in activity.describe()
    assert any(f"pid {burner.pid} " in line for line in busiest_processes())


def test_probe_counts_idle_cores_as_room() -> None:
    cores = allowed_cores()
    probe = CpuActivityProbe(cores, threads=1)
    probe.start()
    time.sleep(0.2)
    activity = probe.stop()
    assert activity.contention <= max(0.0, activity.others - (len(cores) - 1)) + 1e-9


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_pinned_binds_the_thread_and_restores_it() -> None:
    before = allowed_cores()
    with pinned([CORE]) as cores:
        assert cores == [CORE] and sorted(os.sched_getaffinity(0)) == [CORE]
    assert allowed_cores() == before
    with pytest.raises(ValueError, match="pin_cores"), pinned([10_000]):
        pass


def test_a_measurement_on_a_busy_core_is_flagged_and_not_cached(
    burner: subprocess.Popen[bytes], lock: DeviceLock
) -> None:
    profile = _profile(max_attempts=3)
    meter = LatencyMeter(profile, lock=lock)
    latency = meter.measure(_net(), SHAPE, key="busy")
    assert not latency.reliable and latency.load > profile.max_load
    reason = latency.unreliable_reason
    assert "busy device" in reason and f"above max_load {profile.max_load:g}" in reason
    assert f"pid {burner.pid} " in reason and "after 3 attempts" in reason
    assert meter.cache.get("busy", profile.fingerprint(), SHAPE) is None
    burner.kill()
    burner.wait()
    again = meter.measure(_net(), SHAPE, key="busy")  # measured again, now on a quiet core
    assert again.reliable and again.unreliable_reason == "" and again.load <= profile.max_load
    assert meter.cache.get("busy", profile.fingerprint(), SHAPE) is not None


def test_the_load_check_can_be_switched_off(
    burner: subprocess.Popen[bytes], lock: DeviceLock
) -> None:
    profile = _profile(max_load=None, max_cv=None, max_attempts=1)
    latency = LatencyMeter(profile, lock=lock).measure(_net(), SHAPE)
    assert latency.reliable and latency.load > 0.3  # still recorded, for the record


@pytest.mark.parametrize(("cores", "message"), [([-1], "numbered from 0"), ([0, 0], "each core")])
def test_profile_rejects_bad_pin_cores(cores: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _profile(pin_cores=cores)


def _show(profile_path: Path) -> str:
    from rich.console import Console

    from nas._profile_cmd import show_profile

    console = Console(record=True, width=200)
    assert show_profile(str(profile_path), 16, 1, 3, console) == 0
    return console.export_text()


def _profile_file(tmp_path: Path) -> Path:
    import yaml

    fields = {**load_profile("cpu").model_dump(), "name": "pinned", "warmup": 5,
              "repeats": 30, "pin_cores": [CORE]}
    path = tmp_path / "pinned.yaml"
    path.write_text(yaml.safe_dump(fields))
    return path


def test_nas_profile_reports_the_noise_floor_and_whether_the_device_is_fit(
    tmp_path: Path,
) -> None:
    text = _show(_profile_file(tmp_path))
    assert "noise floor: within-measurement CV" in text and "run-to-run CV of the median" in text
    assert "the device is busy" not in text  # nothing else runs on the pinned core
    assert ("fit to measure on: quiet cores" in text) != ("not fit to measure on now" in text)


def test_nas_profile_names_what_keeps_the_device_busy(
    tmp_path: Path, burner: subprocess.Popen[bytes]
) -> None:
    text = _show(_profile_file(tmp_path))
    assert "not fit to measure on now" in text and "the device is busy" in text
    assert f"pid {burner.pid} " in text
