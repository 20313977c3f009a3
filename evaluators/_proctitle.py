"""Process titles that say what a process is doing, in ``ps``, ``top`` and Ray's dashboard."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import setproctitle

RAY_PREFIX = "ray::"  # Ray's dashboard lists a worker process only under this prefix


def _title_functions() -> tuple[Callable[[], str], Callable[[str], None]]:
    """Returns (get, set) of the process title. A process where Ray runs already owns its
    title through Ray's copy of setproctitle (the package cannot take it over there), so
    Ray's functions are used in it; everywhere else, the setproctitle package's."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        from ray import _raylet  # Ray's own title functions (version pinned in pyproject)

        return _raylet.getproctitle, _raylet.setproctitle  # type: ignore[attr-defined]
    return setproctitle.getproctitle, setproctitle.setproctitle


@contextmanager
def process_title(title: str, *, append: bool = False) -> Iterator[str]:
    """Sets this process's title for the block and yields it; restores the old one after.

    A Ray worker keeps its ``ray::`` prefix, so its dashboard still lists it. With
    ``append`` the title is added to the current one (``ray::trial_7 · latency meter``).
    """
    get, set_ = _title_functions()
    old = get()
    prefix = RAY_PREFIX if old.startswith(RAY_PREFIX) else ""
    new = f"{old} · {title}" if append else f"{prefix}{title}"
    set_(new)
    try:
        yield new
    finally:
        set_(old)
