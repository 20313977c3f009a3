"""The driver's view of a device lock its workers wait on.

Trials measure latency in Ray workers, whose log lines do not reach the user's console.
When a process outside the search (another user's benchmark, a second search) holds the
device, the workers wait silently; a :class:`ForeignHolderWatch` in the driver reads the
lock's holder records and says who holds the device, and keeps saying so while it lasts.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import psutil

from evaluators.latency._lock import DeviceLock
from evaluators.latency._lockholders import describe_record, holders_dir

__all__ = ["ForeignHolderWatch", "foreign_holders"]


def foreign_holders(lock: DeviceLock) -> list[Path]:
    """Returns the holder records of ``lock``'s device written by processes outside this
    one and its descendants (its Ray workers on this host); dead holders' records are
    left to the next waiter to clean."""
    folder = holders_dir(lock.lock_dir, lock._device_key())
    try:
        records = sorted(folder.iterdir())
    except OSError:
        return []
    ours = {os.getpid()}
    try:
        ours |= {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        pass
    foreign = []
    for record in records:
        try:
            pid = int(record.name.split("-", 1)[0])
        except ValueError:
            continue
        if pid not in ours and psutil.pid_exists(pid):
            foreign.append(record)
    return foreign


class ForeignHolderWatch:
    """While in use, checks every ``poll_s`` whether a process outside this one's tree holds
    ``lock``'s device; once one has for ``after_s``, calls ``report`` with who, and again
    every ``every_s`` while it lasts (a context manager running a daemon thread)."""

    def __init__(self, lock: DeviceLock, report: Callable[[str], None], *, after_s: float = 5.0,
                 every_s: float = 30.0, poll_s: float = 1.0) -> None:
        self.lock, self.report = lock, report
        self.after_s, self.every_s, self.poll_s = after_s, every_s, poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ForeignHolderWatch:
        self._thread = threading.Thread(target=self._watch, name="device-lock-watch",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        since: float | None = None
        last_report = -float("inf")
        while not self._stop.wait(self.poll_s):
            try:
                foreign = foreign_holders(self.lock)
            except Exception:  # noqa: BLE001 - a watch must never break the search
                return
            now = time.monotonic()
            if not foreign:
                since = None
                continue
            since = now if since is None else since
            if now - since >= self.after_s and now - last_report >= self.every_s:
                last_report = now
                who = [d for d in map(describe_record, foreign) if d is not None]
                if who:
                    self.report(f"the device lock of {self.lock.device!r} is held by "
                                f"{', '.join(who)} for {now - since:.0f} s: trials wait for "
                                "it to measure latency")
