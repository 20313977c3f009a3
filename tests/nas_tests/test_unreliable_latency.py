"""A latency measured on a busy core is flagged, measured again, and kept off the front."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from evaluators import TrialEvaluator
from evaluators.latency import DeviceLock, LatencyMeter
from evaluators.latency._activity import allowed_cores
from hwprofiles import HardwareProfile, load_profile
from nas import Objectives, StudyAdapter, make_sampler, open_study
from nas._config import RayConfig
from nas._driver import run_search
from nas._pareto_stage import unreliable_trials
from nas._ray_backend import ray_session
from nas._study import REMEASURE_OF, pareto_frame
from search_spaces import Arch, TableSpace

SPACE = TableSpace("busy", {"a": [0, 3]})
OBJECTIVES = Objectives({"accuracy": "max", "latency_ms": "min"}, {})
_BURN = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True: pass"


class BusyCoreEvaluator(TrialEvaluator):
    """Measures one small conv net with the real meter, pinned to one core. While it measures
    arch ``a == 3`` (the most accurate) another process spins on that core: on its first
    measurement only (``once``), or on every one."""

    def __init__(self, folder: Path, *, once: bool) -> None:
        self.folder, self.once = folder, once

    def metrics(self) -> tuple[str, ...]:
        return ("accuracy", "latency_ms", "latency_cv", "latency_reliable", "latency_note")

    def __call__(self, arch: Arch) -> dict[str, Any]:
        core = allowed_cores()[0]
        # the burner takes about half the core; the machine's own background stays below
        # max_load, and a passing disturbance of the other archs is retried
        fields = {**load_profile("cpu").model_dump(), "warmup": 2, "repeats": 30,
                  "pin_cores": [core], "max_attempts": 3, "max_cv": None}
        meter = LatencyMeter(HardwareProfile(**fields),
                             lock=DeviceLock("cpu", lock_dir=self.folder))
        marker = self.folder / "burnt-once"
        burner = None
        if arch["a"] == 3 and not (self.once and marker.exists()):
            marker.touch()
            burner = subprocess.Popen([sys.executable, "-c", _BURN, str(core)])
            time.sleep(0.3)
        try:
            net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3))
            latency = meter.measure(net, (1, 3, 16, 16))
        finally:
            if burner is not None:
                burner.kill()
                burner.wait()
        return {"accuracy": 0.5 + 0.1 * int(arch["a"]), "latency_ms": latency.median_ms,
                "latency_cv": latency.cv, "latency_reliable": float(latency.reliable),
                "latency_note": latency.unreliable_reason}


@pytest.fixture(scope="module")
def ray_local():
    with ray_session(RayConfig(dashboard=False, num_cpus=2)) as info:
        yield info


def _search(tmp_path: Path, *, once: bool, remeasure: int) -> StudyAdapter:
    study = open_study(f"sqlite:///{tmp_path / 's.db'}", "busy", OBJECTIVES,
                       make_sampler("random", seed=8, objectives=OBJECTIVES))
    adapter = StudyAdapter(study, SPACE, OBJECTIVES)
    run_search(adapter, BusyCoreEvaluator(tmp_path, once=once), n_trials=4, max_concurrent=1,
               resources={"CPU": 1}, tune_dir=tmp_path / "tune", name="busy",
               remeasure=remeasure)
    return adapter


def _arch_a(frame: Any) -> list[int]:
    return [int(Arch.from_json(a)["a"]) for a in frame["arch"]]


@pytest.mark.slow
def test_a_busy_measurement_is_measured_again_and_then_counts(ray_local, tmp_path: Path) -> None:
    adapter = _search(tmp_path, once=True, remeasure=2)
    frame = adapter.frame()
    first = frame[frame["arch"].map(lambda a: Arch.from_json(a)["a"] == 3)].iloc[0]
    assert first["state"] == "COMPLETE" and not first["latency_reliable"]  # flagged, not hidden
    assert "busy device" in first["latency_note"]
    again = frame[frame[REMEASURE_OF] == first["number"]]
    assert len(again) == 1 and bool(again["latency_reliable"].iloc[0])  # measured again: quiet
    assert adapter.finished_count() == 4 and len(frame) > 4  # re-measurements are extra
    front = pareto_frame(frame, OBJECTIVES)
    assert int(first["number"]) not in set(front["number"])
    assert int(again["number"].iloc[0]) in set(front["number"])
    assert unreliable_trials(frame).empty


@pytest.mark.slow
def test_a_latency_that_stays_unreliable_stays_off_the_front(ray_local, tmp_path: Path) -> None:
    adapter = _search(tmp_path, once=False, remeasure=1)
    frame = adapter.frame()
    assert set(_arch_a(frame)) == {0, 3}
    busy = frame[frame["arch"].map(lambda a: Arch.from_json(a)["a"] == 3)]
    assert len(busy[busy[REMEASURE_OF].notna()]) == 1  # measured again once (remeasure=1)
    assert not busy["latency_reliable"].any()
    # the most accurate arch never reaches the front on a doubtful latency
    front = pareto_frame(frame, OBJECTIVES)
    assert _arch_a(front) == [0] * len(front) and len(front) >= 1
    assert _arch_a(unreliable_trials(frame)) == [3]
