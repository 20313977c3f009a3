"""The driver says who holds the device while its workers wait for it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from evaluators.latency import DeviceLock
from evaluators.latency._lockwatch import ForeignHolderWatch, foreign_holders

# holds the device until a stop file appears
_HOLDER = """\
import pathlib, sys, time
from evaluators.latency import DeviceLock

with DeviceLock("cpu", lock_dir=sys.argv[1]).measure():
    print("held", flush=True)
    while not pathlib.Path(sys.argv[2]).exists():
        time.sleep(0.05)
"""


def start_outside(tmp_path: Path) -> int:
    """Starts a holder outside this process's tree (a detached grandchild); returns its PID
    once it holds the device."""
    script, out = tmp_path / "holder.py", tmp_path / "holder.out"
    script.write_text(_HOLDER)
    started = subprocess.run(
        ["sh", "-c", f"'{sys.executable}' '{script}' '{tmp_path / 'locks'}' "
                     f"'{tmp_path / 'stop'}' > '{out}' 2>&1 & echo $!"],
        check=True, capture_output=True, text=True)
    pid = int(started.stdout.strip())
    deadline = time.monotonic() + 60
    while "held" not in (out.read_text() if out.exists() else ""):
        assert time.monotonic() < deadline and psutil.pid_exists(pid), out.read_text()
        time.sleep(0.05)
    return pid


def test_a_foreign_holder_is_named_while_it_holds_the_device(tmp_path: Path) -> None:
    pid = start_outside(tmp_path)
    lock = DeviceLock("cpu", lock_dir=tmp_path / "locks")
    messages: list[str] = []
    try:
        assert len(foreign_holders(lock)) == 1
        with ForeignHolderWatch(lock, messages.append, after_s=0.3, every_s=0.5, poll_s=0.1):
            deadline = time.monotonic() + 20
            while len(messages) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        (tmp_path / "stop").touch()
    assert len(messages) >= 2, messages  # and it keeps saying so
    assert f"pid {pid} measuring" in messages[0] and "holder.py" in messages[0]
    assert "trials wait for it" in messages[0]
    deadline = time.monotonic() + 30
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert foreign_holders(lock) == []  # gone with its process


def test_the_drivers_own_holds_are_not_reported(tmp_path: Path) -> None:
    lock = DeviceLock("cpu", lock_dir=tmp_path / "locks")
    messages: list[str] = []
    with lock.measure(), ForeignHolderWatch(lock, messages.append, after_s=0.1, every_s=0.1,
                                            poll_s=0.05):
        assert foreign_holders(lock) == []
        time.sleep(0.6)
    assert messages == []
