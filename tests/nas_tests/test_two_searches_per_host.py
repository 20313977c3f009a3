"""Two searches on one host, with run directories of their own, run at once: each starts a
local Ray of its own, and the second, finding the dashboard port taken by the first, uses a
free one and says so."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from nas._ports import free_port
from tests.nas_tests.conftest import QUICKSTART, TINY_RUN

pytestmark = pytest.mark.slow


def start(run: Path, port: int) -> subprocess.Popen[str]:
    """Starts `nas search` resuming ``run`` to 6 trials, its dashboard asked on ``port``."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "nas._cli", "search", str(QUICKSTART), "--run-dir", str(run),
         *TINY_RUN, "--set", "search.n_trials=6", "--set", "compress.enabled=false",
         "--set", "search.max_concurrent=1", "--set", f"ray.dashboard_port={port}"],
        cwd=run.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_searches_on_one_host_both_run(copy_run: Callable[[str], Path]) -> None:
    port = free_port("127.0.0.1")
    first_run, second_run = copy_run("first"), copy_run("second")
    first = start(first_run, port)
    head: list[str] = []
    deadline = time.monotonic() + 600
    assert first.stdout is not None
    while time.monotonic() < deadline:  # the first's dashboard is up: the port is taken
        line = first.stdout.readline()
        if not line:
            break
        head.append(line)
        if "Ray dashboard" in line:
            break
    assert any("Ray dashboard" in line for line in head), "".join(head)[-3000:]
    second = start(second_run, port)
    second_out = second.communicate(timeout=900)[0]
    first_out = "".join(head) + first.communicate(timeout=900)[0]
    assert first.returncode == 0, first_out[-4000:]
    assert second.returncode == 0, second_out[-4000:]
    flat = " ".join(second_out.split())
    assert f"dashboard port {port} on 127.0.0.1 is in use" in flat, second_out[-3000:]
    assert "set ray.dashboard_port to choose one" in flat
    for run in (first_run, second_run):
        frame = pd.read_parquet(run / "trials.parquet")
        assert len(frame) == 6 and (frame["state"] == "COMPLETE").all(), frame[["state", "error"]]
