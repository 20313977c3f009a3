"""One writer per run directory: a second command is refused at once, a dead holder's lock
never blocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas._cli import main
from nas._errors import RunDirError
from nas._rundir_lock import RunDirLock

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"

# a process that takes the lock, says so, and holds it until killed
_HOLDER = ("import sys, time; from nas._rundir_lock import RunDirLock; "
           "lock = RunDirLock(sys.argv[1]); lock.acquire(); print('held', flush=True); "
           "time.sleep(600)")


def hold(root: Path) -> subprocess.Popen[str]:
    """Returns a process that holds ``root``'s lock (started and holding)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(root)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def holder(tmp_path: Path) -> subprocess.Popen[str]:
    proc = hold(tmp_path / "run")
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_at_once_naming_the_holder(
    tmp_path: Path, holder: subprocess.Popen[str], capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    start = time.perf_counter()
    status = main(["search", str(QUICKSTART), "--run-dir", str(run)])
    out = capsys.readouterr().out
    assert status == 2 and time.perf_counter() - start < 30
    assert f"PID {holder.pid}" in out and "in use" in out, out
    assert "-c" in out  # the holder's command line
    assert not (run / "config.yaml").exists()  # nothing of the run was touched

    (run / "config.yaml").write_text("experiment: {name: x}\nargv: [nas, search]\n")
    assert main(["compress", str(run)]) == 2
    assert f"PID {holder.pid}" in capsys.readouterr().out


def test_a_killed_holder_leaves_no_lock_that_blocks(tmp_path: Path) -> None:
    root = tmp_path / "run"
    proc = hold(root)
    with pytest.raises(RunDirError, match=f"PID {proc.pid}"):
        RunDirLock(root).acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with RunDirLock(root) as lock:  # the kernel released the dead holder's lock
        record = json.loads(lock.path.read_text())
        assert record["pid"] == os.getpid()
    assert lock.path.read_text() == ""  # released: no holder recorded


def test_a_lock_is_not_taken_on_a_path_that_is_a_file(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")
    with pytest.raises(RunDirError, match="not a directory"):
        RunDirLock(taken).acquire()


@pytest.mark.slow
def test_two_searches_on_one_run_directory(copy_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A resumed search runs; a second search started on its directory is refused, and the
    first ends with every trial COMPLETE, none closed as interrupted by the second."""
    import optuna

    from tests.nas_tests.conftest import QUICKSTART as CONFIG
    from tests.nas_tests.conftest import TINY_RUN

    run = copy_run()
    args = [sys.executable, "-m", "nas._cli", "search", str(CONFIG), "--run-dir", str(run),
            *TINY_RUN, "--set", "search.n_trials=6"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        lock = run / ".lock"
        while not (lock.exists() and lock.read_text()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert json.loads(lock.read_text())["pid"] == first.pid
        second = subprocess.run(args, check=False, capture_output=True, text=True, env=env,
                                cwd=tmp_path, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"PID {first.pid}" in second.stdout and "in use" in second.stdout
        out, _ = first.communicate(timeout=900)
    finally:
        first.kill()
    assert first.returncode == 0, out
    assert "UpdateFinishedTrialError" not in out and "Traceback" not in out
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{run / 'study.db'}")
    states = [t.state.name for t in study.get_trials()]
    assert states == ["COMPLETE"] * 6, states
