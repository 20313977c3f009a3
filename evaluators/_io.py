"""Atomic file writes (a crash never leaves a half-written artifact), and libraries' prints
sent to the log."""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

#: why a write fails that the user can fix: a full disk or quota, a read-only file system,
#: no permission
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


class WriteError(OSError):
    """An artifact that could not be written for a reason the user can fix (full disk,
    read-only file system, permissions); names the path and the cause."""

    def __str__(self) -> str:
        return str(self.strerror)


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Calls ``write`` on a temporary file beside ``path``, then renames it over ``path``.

    Raises:
        WriteError: the disk is full, read-only or not writable by this user (naming the
            path); the target is left untouched and no temporary file stays behind.
        OSError: any other failure of the file system, with the same guarantees.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise _write_error(path, exc) from exc
        raise
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError) \
                and exc.errno in WRITE_ERRNOS:
            raise _write_error(path, exc) from exc
        raise


def _write_error(path: Path, exc: OSError) -> WriteError:
    """Returns ``exc`` (whose errno is one of ``WRITE_ERRNOS``) as a ``WriteError`` naming
    ``path``."""
    return WriteError(exc.errno, f"cannot write {path}: {exc.strerror or exc}; free space or "
                      "make it writable, then run the same command again to resume")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically."""
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Writes UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def log_stdout(source: str, logger: logging.Logger) -> Iterator[None]:
    """Sends what a library prints to ``logger`` at debug level instead of stdout."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            logger.debug("%s: %s", source, line)
