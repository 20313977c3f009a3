"""Who holds a device lock: each holder leaves a record beside the lock files.

``flock`` does not say who holds a lock, so every holder writes
``<lock_dir>/<device>.holders/<pid>-<thread>-<mode>`` (its PID, mode and command line)
once it holds the device and removes it when it lets go. A process that waits reads these
records to name the holders. A record of a process that died without removing it is
ignored (and deleted) by the next reader.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

import psutil

__all__ = ["describe_holders", "describe_record", "forget_holder", "record_holder"]

logger = logging.getLogger(__name__)

_CMDLINE_CHARS = 200
_CLOCK_SLACK_S = 1.0  # a process's start time is known to the clock tick


def holders_dir(lock_dir: Path, key: str) -> Path:
    """Returns the folder of the holder records of device ``key``."""
    return lock_dir / f"{key}.holders"


def record_holder(lock_dir: Path, key: str, mode: str) -> Path | None:
    """Records that this thread holds device ``key`` in ``mode``; returns the record to pass
    to ``forget_holder``, or None when the folder cannot be written (another user's lock
    folder): the lock works the same, only its waiters cannot name this holder."""
    pid = os.getpid()
    path = holders_dir(lock_dir, key) / f"{pid}-{threading.get_ident()}-{mode}"
    try:
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"{pid}\n{mode}\n{_cmdline(psutil.Process(pid))}\n", encoding="utf-8")
    except OSError as exc:
        logger.debug("cannot record the holder of %s: %s", key, exc)
        return None
    return path


def forget_holder(record: Path | None) -> None:
    """Removes a record written by ``record_holder`` (None: nothing was recorded)."""
    if record is not None:
        with contextlib.suppress(OSError):
            record.unlink()


def describe_holders(lock_dir: Path, key: str, own: Path | None = None) -> str:
    """Returns who holds device ``key`` by the live records but the caller's ``own``, e.g.
    ``held by pid 4711 measuring (python bench.py)``, or that no holder recorded itself."""
    found = []
    with contextlib.suppress(OSError):
        for path in sorted(holders_dir(lock_dir, key).iterdir()):
            holder = None if path == own else describe_record(path)
            if holder is not None:
                found.append(holder)
    if not found:
        return ("no holder recorded itself (a process of an older version, or another "
                "program that locks the same file)")
    return "held by " + ", ".join(found)


def describe_record(path: Path) -> str | None:
    """Returns the description of one record, None when it is unreadable or stale."""
    try:
        text = path.read_text(encoding="utf-8")
        written = path.stat().st_mtime
        pid_text, mode, cmdline = (text.split("\n", 2) + ["", ""])[:3]
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    try:
        process = psutil.Process(pid)
        if process.create_time() > written + _CLOCK_SLACK_S:
            raise psutil.NoSuchProcess(pid)  # the PID was reused since
    except psutil.NoSuchProcess:
        with contextlib.suppress(OSError):
            path.unlink()  # its process died without removing it
        return None
    except psutil.Error:  # another user's process: trust the record
        live = cmdline.strip()
    else:
        live = _cmdline(process) or cmdline.strip()
    doing = {"compute": "computing", "measure": "measuring"}.get(mode, mode)
    this = ", this process" if pid == os.getpid() else ""
    return f"pid {pid} {doing}{this} ({live or '?'})"


def _cmdline(process: psutil.Process) -> str:
    """Returns the process's command line (its title, where it set one) on one line."""
    try:
        words = process.cmdline()
    except psutil.Error:
        return ""
    line = " ".join(" ".join(words).split())
    return line if len(line) <= _CMDLINE_CHARS else line[: _CMDLINE_CHARS - 3] + "..."
