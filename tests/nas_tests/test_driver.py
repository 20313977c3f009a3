"""The search driver on a real local Ray: failures are recorded, the search goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluators import TrialEvaluator
from nas import Objectives, StudyAdapter, make_sampler, open_study
from nas._config import RayConfig
from nas._driver import run_search
from nas._ray_backend import ray_session
from search_spaces import Arch, TableSpace

SPACE = TableSpace("toy", {"a": [0, 1, 2, 3], "b": [0, 1, 2]})
OBJECTIVES = Objectives({"accuracy": "max", "latency_ms": "min"}, {})


class ToyEvaluator(TrialEvaluator):
    """accuracy grows with a, latency with a and b; archs with b == 2 fail."""

    def metrics(self) -> tuple[str, ...]:
        return ("accuracy", "latency_ms")

    def __call__(self, arch: Arch) -> dict[str, float]:
        if arch["b"] == 2:
            raise RuntimeError("simulated out of memory")
        return {"accuracy": 0.5 + 0.1 * int(arch["a"]), "latency_ms": 1.0 + int(arch["a"]) + int(arch["b"])}


@pytest.fixture(scope="module")
def ray_local():
    with ray_session(RayConfig(dashboard=False, num_cpus=2)) as info:
        yield info


def test_run_search_records_failures_and_reaches_the_budget(ray_local, tmp_path: Path) -> None:
    assert ray_local.started_here
    study = open_study(f"sqlite:///{tmp_path / 's.db'}", "toy", OBJECTIVES,
                       make_sampler("random", seed=1, objectives=OBJECTIVES))
    adapter = StudyAdapter(study, SPACE, OBJECTIVES)
    outcome = run_search(adapter, ToyEvaluator(), n_trials=10, max_concurrent=2,
                         resources={"CPU": 1}, tune_dir=tmp_path / "tune", name="toy")
    assert outcome.trials_run == 10 and outcome.first_trial == 0
    frame = adapter.frame()
    assert len(frame) == 10 and "RUNNING" not in set(frame["state"])
    for row in frame.itertuples():
        b = Arch.from_json(row.arch)["b"]
        if b == 2:
            assert row.state == "FAIL" and "simulated out of memory" in row.error
        else:
            assert row.state == "COMPLETE" and row.latency_ms == 1.0 + Arch.from_json(row.arch)["a"] + b
    # Tune's own bookkeeping does not leak into the study
    assert "pid" not in frame.columns and "timestamp" not in frame.columns
    # continuing to a larger budget keeps what is there
    more = run_search(adapter, ToyEvaluator(), n_trials=12, max_concurrent=2,
                      resources={"CPU": 1}, tune_dir=tmp_path / "tune", name="toy-2")
    assert more.first_trial == 10 and more.trials_run == 2 and len(adapter.frame()) == 12


class TitleEvaluator(ToyEvaluator):
    """Writes the worker's process title, as seen while evaluating, to a file per arch."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, arch: Arch) -> dict[str, float]:
        import psutil

        (self.folder / f"{arch['a']}-{arch['b']}.txt").write_text(" ".join(psutil.Process().cmdline()))
        return {"accuracy": 0.5, "latency_ms": 1.0}


def test_trial_workers_carry_the_trial_name_in_their_process_title(ray_local, tmp_path: Path) -> None:
    study = open_study(f"sqlite:///{tmp_path / 's.db'}", "titles", OBJECTIVES,
                       make_sampler("random", seed=2, objectives=OBJECTIVES))
    adapter = StudyAdapter(study, SPACE, OBJECTIVES)
    run_search(adapter, TitleEvaluator(tmp_path), n_trials=3, max_concurrent=1,
               resources={"CPU": 1}, tune_dir=tmp_path / "tune", name="titles")
    titles = {p.read_text().strip() for p in tmp_path.glob("*.txt")}
    numbers = {f"ray::trial_{n}" for n in adapter.frame()["number"]}
    assert titles and titles <= numbers
