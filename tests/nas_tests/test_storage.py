"""The study where teams keep it: PostgreSQL (a real server on 127.0.0.1, started for the
session) and Optuna's journal file, for search, resume and report; drivers sharing a study
close only the trials of drivers that are gone."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from nas import Objectives, StudyAdapter, open_study
from nas._config import load_config
from nas._driver_id import DRIVER_ATTR, HEARTBEAT_ATTR, STALE_AFTER_SECONDS, DriverId
from nas._errors import ConfigError, StorageError
from nas._storage import redacted
from search_spaces import TableSpace
from tests.nas_tests.conftest import QUICKSTART, TINY_RUN, run_nas

SPACE = TableSpace("toy", {"a": list(range(8)), "b": list(range(8))})
OBJECTIVES = Objectives({"accuracy": "max", "latency_ms": "min"}, {})


def test_a_storage_is_checked_when_the_config_loads_and_no_password_is_echoed() -> None:
    secret = "s3cr3t-pw"
    with pytest.raises(ConfigError) as info:
        load_config(QUICKSTART, [f"search.storage=mysql://me:{secret}@db/x"])
    message = str(info.value)
    assert "search.storage" in message and "journal:PATH" in message and secret not in message
    assert redacted(f"postgresql://me:{secret}@db:5432/x") == "postgresql://me:***@db:5432/x"
    spec = load_config(QUICKSTART, ["search.storage=postgres://me@127.0.0.1/x"])
    assert spec.search.storage == "postgresql://me@127.0.0.1/x"


def test_an_unreachable_server_is_a_user_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"search.storage postgresql://me:\*\*\*@127.0.0.1:9/x"):
        open_study("postgresql://me:pw@127.0.0.1:9/x", "s", OBJECTIVES)
    with pytest.raises(StorageError, match="cannot open the journal file"):
        open_study(f"journal:{tmp_path / 'missing' / 'j.log'}", "s", OBJECTIVES)


@pytest.fixture(params=["postgresql", "journal"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Returns the URL of an empty shared storage: a PostgreSQL database, a journal file."""
    if request.param == "journal":
        return f"journal:{tmp_path / 'study.log'}"
    return str(request.getfixturevalue("postgres_db"))


def _adapter(url: str) -> StudyAdapter:
    return StudyAdapter(open_study(url, "shared", OBJECTIVES,
                                   optuna.samplers.RandomSampler(seed=os.getpid())),
                        SPACE, OBJECTIVES, exclusive=False)


def test_drivers_close_only_the_trials_of_drivers_that_are_gone(shared_url: str) -> None:
    first, second = _adapter(shared_url), _adapter(shared_url)
    live = [first.ask()[0] for _ in range(2)]
    # a driver on another host whose heartbeat stopped, and one here whose process ended
    gone_far, gone_here = first.ask()[0], first.ask()[0]
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    storage, study_id = first.study._storage, first.study._study_id
    far = storage.get_trial_id_from_study_id_trial_number(study_id, gone_far)
    storage.set_trial_user_attr(far, DRIVER_ATTR, DriverId("elsewhere", 1, "t").key())
    storage.set_trial_user_attr(far, HEARTBEAT_ATTR, time.time() - STALE_AFTER_SECONDS - 5)
    here = storage.get_trial_id_from_study_id_trial_number(study_id, gone_here)
    storage.set_trial_user_attr(here, DRIVER_ATTR,
                                DriverId(first.driver.host, int(ended.stdout), "t").key())

    assert second.close_interrupted() == 2
    states = {t.number: t.state.name for t in second.study.get_trials()}
    assert [states[n] for n in live] == ["RUNNING", "RUNNING"]
    assert states[gone_far] == states[gone_here] == "FAIL"
    assert sorted(second.running_elsewhere()) == live
    assert second.claimed_count() == 2  # the closed ones do not count towards n_trials
    # the live driver's trials finish normally
    for number in live:
        first.tell_result(number, {"accuracy": 0.5, "latency_ms": 1.0}, None)
    assert second.finished_count() == 2 and not second.running_elsewhere()


def _ask_many(url: str, count: int, queue: multiprocessing.Queue) -> None:
    adapter = _adapter(url)
    numbers = []
    for _ in range(count):
        number, _ = adapter.ask()
        adapter.tell_result(number, {"accuracy": 0.5, "latency_ms": 1.0}, None)
        numbers.append(number)
    queue.put(numbers)


def test_two_drivers_asking_at_once_never_share_a_trial_number(shared_url: str) -> None:
    _adapter(shared_url)  # create the study once, before both drivers race for it
    queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    workers = [multiprocessing.get_context("spawn").Process(target=_ask_many,
                                                            args=(shared_url, 25, queue))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    numbers = [queue.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    together = sorted(numbers[0] + numbers[1])
    assert together == list(range(50)), together
    study = open_study(shared_url, "shared", OBJECTIVES)
    assert sorted(t.number for t in study.trials) == list(range(50))
    assert all(t.state.name == "COMPLETE" for t in study.trials)


def _open_when_told(url: str, go: object, queue: multiprocessing.Queue) -> None:
    go.wait()  # type: ignore[attr-defined]
    try:
        study = open_study(url, "raced", OBJECTIVES)
        queue.put(study.study_name)
    except Exception as exc:  # noqa: BLE001 - what failed goes back to the test
        queue.put(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")


@pytest.mark.parametrize("round_", range(3))
def test_drivers_starting_at_once_on_an_empty_database_all_open_it(postgres_db: str,
                                                                    round_: int) -> None:
    """Machines starting a shared search together race to create Optuna's tables in an
    empty database: every one opens the study (one creates the tables, the others wait)."""
    context = multiprocessing.get_context("spawn")
    go, queue = context.Event(), context.Queue()
    workers = [context.Process(target=_open_when_told, args=(postgres_db, go, queue))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(3)  # every process imported and waits
    go.set()
    results = [queue.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert results == ["raced"] * 4, results


def _search(run: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_nas("search", str(QUICKSTART), "--run-dir", str(run), *TINY_RUN,
                   "--set", f"search.storage={url}", "--set", "compress.enabled=false",
                   "--set", "ray.dashboard=false", *extra, cwd=run.parent)


@pytest.mark.slow
def test_search_resume_and_report_with_the_study_kept_elsewhere(shared_url: str,
                                                                tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _search(run, shared_url)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert not (run / "study.db").exists()  # the study is where the config says
    study = open_study(shared_url, "quickstart", OBJECTIVES)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    again = _search(run, shared_url)
    assert again.returncode == 0 and "3 trials already finished, skipped" in again.stdout
    more = _search(run, shared_url, "--set", "search.n_trials=4")
    assert more.returncode == 0, (more.stdout + more.stderr)[-4000:]
    assert "resuming, 3 trials kept, 1 to go" in more.stdout
    assert len(open_study(shared_url, "quickstart", OBJECTIVES).trials) == 4
    report = run_nas("report", str(run), cwd=tmp_path)
    assert report.returncode == 0, report.stdout + report.stderr
    assert pd.read_parquet(run / "trials.parquet")["number"].tolist() == [0, 1, 2, 3]


@pytest.mark.slow
def test_two_drivers_on_one_postgresql_study_share_the_search(postgres_db: str,
                                                              tmp_path: Path) -> None:
    """Two machines sharing a search: two `nas search` runs (run directories of their own)
    on one study at once. Trial numbers stay distinct, none is lost, none is closed as
    interrupted, and the study ends with n_trials, run by both."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "nas._cli", "search", str(QUICKSTART), "--run-dir",
         str(tmp_path / f"run{i}"), *TINY_RUN, "--set", f"search.storage={postgres_db}",
         "--set", "compress.enabled=false", "--set", "ray.dashboard=false",
         "--set", "search.n_trials=8", "--set", "search.max_concurrent=1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    outs = [proc.communicate(timeout=1200)[0] for proc in procs]
    for proc, out in zip(procs, outs):
        assert proc.returncode == 0, out[-4000:]
    study = open_study(postgres_db, "quickstart", OBJECTIVES)
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))  # distinct, none missing
    assert not [t.number for t in trials if t.user_attrs.get("interrupted")]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 8 and len(trials) == 8, [(t.number, t.state.name) for t in trials]
    drivers = {DriverId.parse(t.user_attrs[DRIVER_ATTR]).pid for t in trials}
    assert drivers == {proc.pid for proc in procs}, "both drivers ran trials"
    for i in range(2):  # each run directory's table holds the whole study
        assert len(pd.read_parquet(tmp_path / f"run{i}" / "trials.parquet")) == 8
    print(json.dumps({"trials per driver": {pid: sum(
        DriverId.parse(t.user_attrs[DRIVER_ATTR]).pid == pid for t in trials) for pid in drivers}}))
