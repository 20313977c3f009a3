"""Kills a trial's Ray worker from outside, as the OOM killer would: found by its process
title (``ray::trial_7``, ``ray::trial_7 · latency meter [cpu]`` while it is timed)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

LATENCY = "latency meter"


def runs_trial(title: str, name: str) -> bool:
    """Returns whether a process titled ``title`` is the worker of trial ``name``."""
    return f"ray::{name}" in title.split(" ·")[0].split()


@contextmanager
def killer(targets: dict[str, str]) -> Iterator[dict[str, list[int]]]:
    """Watches the processes while the block runs and SIGKILLs, once per target, the first
    worker whose title names trial ``name`` in ``phase`` (``compute``: evaluating, not yet
    timing; ``latency``: its latency meter). Yields ``{name: [pids killed]}``."""
    killed: dict[str, list[int]] = {name: [] for name in targets}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set() and any(not pids for pids in killed.values()):
            for proc in psutil.process_iter(["pid", "cmdline"]):
                title = " ".join(proc.info["cmdline"] or [])
                for name, phase in targets.items():
                    if killed[name] or not runs_trial(title, name):
                        continue
                    if (LATENCY in title) == (phase == "latency"):
                        try:
                            proc.send_signal(signal.SIGKILL)
                            killed[name].append(proc.info["pid"])
                        except psutil.Error:
                            pass
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        stop.set()
        thread.join()
