"""A trial's worker process killed mid-trial (evaluating, or timing latency) is run again up to
``search.max_retries`` times, then recorded FAIL with the reason: on a real local Ray, the
worker found by its process title and sent SIGKILL from outside, as the OOM killer would."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tests.nas_tests.conftest import QUICKSTART, TINY_RUN, run_nas
from tests.nas_tests.worker_killer import killer

pytestmark = pytest.mark.slow


def _search_more(run: Path, n_trials: int, *extra: str) -> tuple[int, str]:
    proc = run_nas("search", str(QUICKSTART), "--run-dir", str(run), *TINY_RUN,
                   "--set", f"search.n_trials={n_trials}", "--set", "compress.enabled=false",
                   "--set", "search.max_concurrent=1", *extra, cwd=run.parent)
    return proc.returncode, proc.stdout + proc.stderr


def test_a_killed_worker_is_run_again_and_the_search_completes(
        copy_run: Callable[[str], Path]) -> None:
    run = copy_run("run")  # 3 trials done: trials 3 and 4 are new
    with killer({"trial_3": "compute", "trial_4": "latency"}) as killed:
        status, out = _search_more(run, 5)
    assert status == 0, out[-4000:]
    assert killed["trial_3"] and killed["trial_4"], f"no worker was killed: {killed}\n{out[-3000:]}"
    flat = " ".join(out.split())
    assert "trial 3: its worker process or node died" in flat
    assert "running it again (1 of 2)" in flat
    frame = pd.read_parquet(run / "trials.parquet").set_index("number")
    assert len(frame) == 5 and (frame["state"] == "COMPLETE").all(), frame[["state", "error"]]
    assert frame.loc[3, "retries"] == 1 and frame.loc[4, "retries"] == 1
    assert pd.isna(frame.loc[2, "retries"])  # a trial run once records no retry


def test_a_worker_that_dies_on_every_try_is_recorded_fail_with_the_reason(
        copy_run: Callable[[str], Path]) -> None:
    run = copy_run("run")
    with killer({"trial_3": "latency"}) as killed:
        status, out = _search_more(run, 5, "--set", "search.max_retries=0")
    assert killed["trial_3"], out[-3000:]
    assert status == 0, out[-4000:]
    frame = pd.read_parquet(run / "trials.parquet").set_index("number")
    assert frame.loc[3, "state"] == "FAIL"
    reason = frame.loc[3, "error"]
    assert "worker process or its node died" in reason and "search.max_retries: 0" in reason
    assert "tried 1 time" in reason and "died unexpectedly" in reason  # Ray's own words
    assert frame.loc[4, "state"] == "COMPLETE"
    # the retries ran out: the failed trial counts, no trial is added for it
    assert len(frame) == 5
