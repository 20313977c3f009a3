"""One writer per run directory: an exclusive lock held while a command writes it.

The lock is an advisory ``flock`` on ``RUN_DIR/.lock``. The kernel releases it when its
holder exits, however it exits, so a lock left by a killed process never blocks the next
command. The file itself records the holder (PID, command, start time) so that a refused
command can say who is writing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from nas._errors import RunDirError

LOCK_NAME = ".lock"


class RunDirLock:
    """Holds ``root/.lock`` exclusively while in use (a context manager).

    Raises (on entering):
        RunDirError: another process holds the lock (naming its PID and command), or the
            directory cannot be created or written.
    """

    def __init__(self, root: Path, argv: list[str] | None = None) -> None:
        self.root = Path(root).resolve()
        self.path = self.root / LOCK_NAME
        self.argv = list(argv if argv is not None else sys.argv)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock at once and records this process as its holder.

        Raises:
            RunDirError: the lock is held by another process, or the directory cannot be
                created or written (naming the path and the cause).
        """
        if self.root.exists() and not self.root.is_dir():
            raise RunDirError(f"--run-dir {self.root}: exists and is not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise RunDirError(f"{self.path}: cannot create the run directory's lock "
                              f"({exc.strerror or exc}); make {self.root} writable or free "
                              "space on its disk, or use another run directory") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirError(f"{self.path}: cannot lock the run directory "
                                  f"({exc.strerror or exc})") from exc
            raise RunDirError(
                f"{self.root}: in use by {describe_holder(self.path)}; wait for it to finish, "
                "or choose another --run-dir") from None
        holder = {"pid": os.getpid(), "argv": self.argv, "started_at": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds without its record; the command's first
            # write says what is wrong, naming its file
        self._fd = fd

    def release(self) -> None:
        """Releases the lock (the file stays: removing it would race with a new holder)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass  # a full or read-only disk: the record is stale but the lock still goes
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def describe_holder(path: Path) -> str:
    """Returns who holds the lock file ``path``, e.g. ``PID 412 (nas search cfg.yaml),
    started 14:02:11``, or ``another process`` where the record cannot be read."""
    try:
        record = json.loads(path.read_text(encoding="utf-8") or "{}")
        pid = int(record["pid"])
        argv = " ".join(str(a) for a in record.get("argv", []))
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(record["started_at"])))
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
    command = Path(argv.split(" ")[0]).name + argv[len(argv.split(" ")[0]):] if argv else "?"
    return f"PID {pid} ({command[:200]}), started {started}"
