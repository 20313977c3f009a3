"""Process titles that say what a process is doing, in ``ps``, ``top`` and Ray's dashboard."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import setproctitle

RAY_PREFIX = "ray::"  # Ray's dashboard lists a worker process only under this prefix


@contextmanager
def process_title(title: str, *, append: bool = False) -> Iterator[str]:
    """Sets this process's title for the block and yields it; restores the old one after.

    A Ray worker keeps its ``ray::`` prefix, so its dashboard still lists it. With
    ``append`` the title is added to the current one (``ray::trial_7 · latency meter``).
    """
    old = setproctitle.getproctitle()
    prefix = RAY_PREFIX if old.startswith(RAY_PREFIX) else ""
    new = f"{old} · {title}" if append else f"{prefix}{title}"
    setproctitle.setproctitle(new)
    try:
        yield new
    finally:
        setproctitle.setproctitle(old)
