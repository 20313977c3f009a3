"""The search driver on a real local Ray: failures are recorded, the search goes on, and a
run resumes after its driver was killed, with the study in the run's SQLite file and in a
PostgreSQL server (shared: there, only trials whose driver is gone are closed)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from evaluators import TrialEvaluator
from nas import Objectives, StudyAdapter, make_sampler, open_study
from nas._config import RayConfig
from nas._driver import run_search
from nas._ray_backend import ray_session
from nas._storage import is_shared
from nas._study import INTERRUPTED
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


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Returns an empty study storage: a SQLite file, or a database on a PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 's.db'}"
    return str(request.getfixturevalue("postgres_db"))


def adapter_for(url: str, name: str, sampler: optuna.samplers.BaseSampler) -> StudyAdapter:
    """Returns the adapter a search stage would use on ``url`` (shared when it is a server)."""
    return StudyAdapter(open_study(url, name, OBJECTIVES, sampler), SPACE, OBJECTIVES,
                        exclusive=not is_shared(url))


def test_run_search_records_failures_and_reaches_the_budget(ray_local, storage_url: str,
                                                            tmp_path: Path) -> None:
    assert ray_local.started_here
    adapter = adapter_for(storage_url, "toy", make_sampler("random", seed=1, objectives=OBJECTIVES))
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


def test_ctrl_c_after_the_search_reaches_the_handler_it_had_before(ray_local,
                                                                  tmp_path: Path) -> None:
    """Ray Tune leaves its own SIGINT handler behind after a run: the first Ctrl-C while the
    same process compresses would be swallowed by it."""
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGUSR1)
        adapter = adapter_for(f"sqlite:///{tmp_path / 's.db'}", "toy",
                              make_sampler("random", seed=1, objectives=OBJECTIVES))
        outcome = run_search(adapter, ToyEvaluator(), n_trials=2, max_concurrent=1,
                             resources={"CPU": 1}, tune_dir=tmp_path / "tune", name="toy")
        assert outcome.trials_run == 2
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGUSR1)) == before
        signal.raise_signal(signal.SIGINT)  # Ctrl-C reaches the handler the process had
        assert caught == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_trial_workers_carry_the_trial_name_in_their_process_title(ray_local, tmp_path: Path) -> None:
    study = open_study(f"sqlite:///{tmp_path / 's.db'}", "titles", OBJECTIVES,
                       make_sampler("random", seed=2, objectives=OBJECTIVES))
    adapter = StudyAdapter(study, SPACE, OBJECTIVES)
    run_search(adapter, TitleEvaluator(tmp_path), n_trials=3, max_concurrent=1,
               resources={"CPU": 1}, tune_dir=tmp_path / "tune", name="titles")
    titles = {p.read_text().strip() for p in tmp_path.glob("*.txt")}
    numbers = {f"ray::trial_{n}" for n in adapter.frame()["number"]}
    assert titles and titles <= numbers


class SlowRecordingSampler(optuna.samplers.RandomSampler):
    """Random archs after a pause; records how many trials each proposal saw running."""

    def __init__(self, pause: float) -> None:
        super().__init__(seed=3)
        self.pause = pause
        self.running_seen: dict[int, int] = {}

    def sample_independent(self, study, trial, param_name, param_distribution):  # type: ignore[no-untyped-def]
        if trial.number not in self.running_seen:
            time.sleep(self.pause)
            running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            self.running_seen[trial.number] = sum(t.number != trial.number for t in running)
        return super().sample_independent(study, trial, param_name, param_distribution)


class SlowEvaluator(ToyEvaluator):
    def __call__(self, arch: Arch) -> dict[str, float]:
        time.sleep(0.5)
        return {"accuracy": 0.5 + 0.1 * int(arch["a"]), "latency_ms": 1.0 + int(arch["b"])}


def test_prefetch_proposes_while_the_trial_runs_and_always_sees_it_running(
        ray_local, storage_url: str, tmp_path: Path) -> None:
    sampler = SlowRecordingSampler(pause=0.3)
    adapter = adapter_for(storage_url, "toy", sampler)
    study = adapter.study
    outcome = run_search(adapter, SlowEvaluator(), n_trials=5, max_concurrent=1,
                         resources={"CPU": 1}, tune_dir=tmp_path / "tune", name="ahead", prefetch=True)
    assert outcome.trials_run == 5
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 5  # none left over
    # the first proposal had nothing running; every later one was made while its
    # predecessor ran, whatever the timing, because a result waits for the proposal in flight
    assert sampler.running_seen == {0: 0, 1: 1, 2: 1, 3: 1, 4: 1}
    for before, after in zip(trials, trials[1:]):
        assert after.datetime_start < before.datetime_complete  # proposed ahead
        assert after.user_attrs["dispatched_at"] >= before.datetime_start.timestamp()
    frame = adapter.frame()
    # a trial's clock starts when a worker gets it, not when it was proposed
    started = frame["started_at"].to_numpy()
    asked = [t.datetime_start.timestamp() for t in trials]
    assert all(s > a for s, a in zip(started[1:], asked[1:]))
    assert "dispatched_at" not in frame.columns


def test_without_prefetch_every_proposal_sees_every_result(ray_local, tmp_path: Path) -> None:
    sampler = SlowRecordingSampler(pause=0.0)
    study = open_study(f"sqlite:///{tmp_path / 's.db'}", "toy", OBJECTIVES, sampler)
    adapter = StudyAdapter(study, SPACE, OBJECTIVES)
    run_search(adapter, SlowEvaluator(), n_trials=3, max_concurrent=1,
               resources={"CPU": 1}, tune_dir=tmp_path / "tune", name="inline")
    assert sampler.running_seen == {0: 0, 1: 0, 2: 0}


KILLED_DRIVER = """
import os, signal, sys
from nas import Objectives, StudyAdapter, open_study
from search_spaces import TableSpace
objectives = Objectives({"accuracy": "max", "latency_ms": "min"}, {})
study = open_study(sys.argv[1], "toy", objectives)
space = TableSpace("toy", {"a": [0, 1, 2, 3], "b": [0, 1, 2]})
adapter = StudyAdapter(study, space, objectives)
study.tell(adapter.ask()[0], [0.6, 2.0])
adapter.ask()  # running when the driver is killed
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_run_resumes_after_its_driver_was_killed(ray_local, storage_url: str,
                                                   tmp_path: Path) -> None:
    """A driver killed with a trial running leaves it RUNNING: the next driver closes it
    as interrupted (it does not count), keeps the finished one, and runs the rest."""
    killed = subprocess.run([sys.executable, "-c", KILLED_DRIVER, storage_url], check=False,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    adapter = adapter_for(storage_url, "toy", make_sampler("random", seed=4, objectives=OBJECTIVES))
    before = adapter.study.get_trials()
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]
    outcome = run_search(adapter, SlowEvaluator(), n_trials=3, max_concurrent=1,
                         resources={"CPU": 1}, tune_dir=tmp_path / "tune", name="resumed")
    assert outcome.first_trial == 2 and outcome.trials_run == 2
    trials = adapter.study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].user_attrs["error"] == INTERRUPTED and trials[1].user_attrs["interrupted"]
    assert trials[0].values == before[0].values == [0.6, 2.0]  # kept as it was
    assert adapter.finished_count() == 3
