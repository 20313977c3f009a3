"""A finished run directory (searched, compressed, reported), built once per session and
copied by the tests that damage, lock or resume one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
CPU_QUICK = Path(__file__).with_name("cpu-quick.yaml")
#: the quickstart at the smallest budget that still runs every stage
TINY_RUN = ["--set", "supernet.epochs=1", "--set", "search.max_concurrent=2",
            "--set", "search.n_trials=3", "--set", "search.recalibration_batches=2",
            "--set", "search.remeasure=0", "--set", "compress.top_k=1",
            "--set", "compress.finetune_epochs=1", "--set", "compress.prune.iterations=1",
            "--set", "compress.prune.finetune_epochs=1", "--set", "compress.distill.epochs=1",
            "--set", "compress.max_accuracy_drop=100", "--set", f"hardware.profile={CPU_QUICK}"]


def run_nas(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Returns the finished ``nas`` command run in a fresh Python process (not checked)."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "nas._cli", *args], check=False,
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Returns a run directory of the quickstart at a tiny budget, every stage done
    (read-only use: copy it with ``copy_run`` to change it)."""
    work = tmp_path_factory.mktemp("finished")
    proc = run_nas("search", str(QUICKSTART), "--run-dir", str(work / "run"), *TINY_RUN, cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work / "run"


@pytest.fixture
def copy_run(finished_run: Path, tmp_path: Path) -> Callable[[str], Path]:
    """Returns a function that copies the finished run to ``tmp_path/<name>``."""

    def copy(name: str = "run") -> Path:
        target = tmp_path / name
        shutil.copytree(finished_run, target, ignore=shutil.ignore_patterns(".lock"))
        return target

    return copy
