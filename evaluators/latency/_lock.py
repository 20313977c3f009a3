"""Keeping latency measurements and compute apart on a shared device, across processes."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from evaluators.latency._lockdir import default_lock_dir, ensure_private_dir
from evaluators.latency._lockholders import describe_holders, forget_holder, record_holder

__all__ = ["DeviceLock"]

logger = logging.getLogger(__name__)

_POLL_MIN_S = 0.001
_POLL_MAX_S = 0.05
_WARN_AFTER_S = 5.0  # a wait this long is logged as a warning naming the holders ...
_WARN_EVERY_S = 30.0  # ... and again this often until the lock is acquired


_Mode = Literal["compute", "measure"]

# The lock files the current thread holds: path -> mode. Inner blocks of the same mode
# find their path here and pass straight through; the outermost block releases.
_local = threading.local()


def _holds() -> dict[str, _Mode]:
    holds: dict[str, _Mode] | None = getattr(_local, "holds", None)
    if holds is None:
        holds = _local.holds = {}
    return holds


def _forget_holds_in_child() -> None:
    # A forked child inherits the descriptors but does not own the parent's locks; the
    # parent releases them with LOCK_UN, which frees them for every duplicate.
    global _local
    _local = threading.local()


os.register_at_fork(after_in_child=_forget_holds_in_child)


class DeviceLock:
    """A cross-process readers-writer lock for one device, with writer preference.

    Training and evaluation hold the lock *shared* (:meth:`compute`), so any number of
    them may run together; a latency measurement holds it *exclusively*
    (:meth:`measure`), so it never overlaps compute on the same device. Every process on
    the host (Ray workers included) that uses the same device name and lock directory
    coordinates through two ``flock`` files:

    * ``<device>.lock``, held shared by compute and exclusively by a measurement;
    * ``<device>.turnstile.lock``, which compute passes through briefly and a measurement
      holds throughout. Once a measurement is waiting, new compute queues behind it, so
      a steady stream of overlapping compute cannot starve measurements.

    Locks belong to open file descriptions, so a process that dies releases its locks.
    Nested :meth:`compute` blocks in one thread are re-entrant (also across instances for
    the same device); :meth:`measure` nests inside :meth:`measure`. Mixing the two in one
    thread raises ``RuntimeError`` instead of deadlocking. Instances hold no descriptors
    between blocks and pickle cleanly.

    Args:
        device: Device name, e.g. ``"cpu"``, ``"cuda"`` (the current CUDA device) or
            ``"cuda:1"``. CUDA devices are identified by UUID where torch reports one, so
            processes with different ``CUDA_VISIBLE_DEVICES`` agree on a physical GPU.
        lock_dir: Directory for the lock files; defaults to one of this user's own,
            created with mode 0700: ``<tempfile.gettempdir()>/hwnas-locks-<uid>`` (see
            ``default_lock_dir``).
            The default is resolved in each process that uses the lock. All cooperating
            processes must use the same one.
        timeout: Seconds to wait for the lock before ``TimeoutError``; ``None`` waits
            for as long as it takes.

    A wait longer than 5 s is logged (``logger.warning``) naming the processes that hold
    the device, by PID and command line, and again every 30 s until the lock is
    acquired; a ``TimeoutError`` names them too. Each holder records itself beside the
    lock files for this (``<device>.holders/``).

    Example:
        >>> lock = DeviceLock("cpu")
        >>> with lock.compute():
        ...     pass  # train or evaluate
        >>> with lock.measure():
        ...     pass  # time inference
    """

    def __init__(
        self,
        device: str = "cpu",
        *,
        lock_dir: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
    ) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout: must be >= 0 or None, got {timeout}")
        self.device = device
        self._lock_dir = Path(lock_dir) if lock_dir is not None else None
        self._default_dir: Path | None = None  # the default, once resolved in this process
        self.timeout = timeout
        self._key: str | None = None

    def __getstate__(self) -> dict[str, object]:
        # "cuda" means the current device of whichever process uses the lock, and the
        # default folder that of the user and environment of that process: resolve anew.
        return {**self.__dict__, "_key": None, "_default_dir": None}

    @property
    def lock_dir(self) -> Path:
        """The directory of the lock files: the one given, or this user's default."""
        if self._lock_dir is not None:
            return self._lock_dir
        if self._default_dir is None:
            self._default_dir = default_lock_dir()
        return self._default_dir

    def __repr__(self) -> str:
        return f"DeviceLock(device={self.device!r}, lock_dir={str(self.lock_dir)!r})"

    @property
    def path(self) -> Path:
        """The main lock file (shared for compute, exclusive for measurement)."""
        return self.lock_dir / f"{self._device_key()}.lock"

    @property
    def turnstile_path(self) -> Path:
        """The turnstile lock file that gives waiting measurements priority."""
        return self.lock_dir / f"{self._device_key()}.turnstile.lock"

    @contextmanager
    def compute(self) -> Iterator[None]:
        """Holds the device shared: other compute may run, measurements wait.

        Raises:
            RuntimeError: This thread is inside :meth:`measure` for the same device.
            TimeoutError: The lock was not acquired within ``timeout`` seconds.
        """
        main = str(self.path)
        held = _holds().get(main)
        if held is not None:
            if held != "compute":
                raise RuntimeError(
                    f"DeviceLock({self.device!r}).compute() inside measure() in the same thread: "
                    "compute must not overlap a measurement; leave the measure() block first"
                )
            yield  # re-entered: the outermost compute() block holds the lock
            return
        wait = _Wait(self, "compute")
        main_fd = self._open(self.path)
        try:
            turnstile_fd = self._open(self.turnstile_path)
            try:
                wait.flock(turnstile_fd, fcntl.LOCK_EX)
                wait.flock(main_fd, fcntl.LOCK_SH)
            finally:
                _release(turnstile_fd)
            wait.acquired()
            record = record_holder(self.lock_dir, self._device_key(), "compute")
            try:
                yield from _held(main, "compute")
            finally:
                forget_holder(record)
        finally:
            _release(main_fd)

    @contextmanager
    def measure(self) -> Iterator[None]:
        """Holds the device exclusively: waits for running compute, blocks new compute.

        Raises:
            RuntimeError: This thread is inside :meth:`compute` for the same device.
            TimeoutError: The lock was not acquired within ``timeout`` seconds.
        """
        main = str(self.path)
        held = _holds().get(main)
        if held is not None:
            if held != "measure":
                raise RuntimeError(
                    f"DeviceLock({self.device!r}).measure() inside compute() in the same thread "
                    "would wait for itself; leave the compute() block before measuring"
                )
            yield  # re-entered: the outermost measure() block holds the lock
            return
        wait = _Wait(self, "measure")
        turnstile_fd = self._open(self.turnstile_path)
        try:
            wait.flock(turnstile_fd, fcntl.LOCK_EX)
            # from here on new compute queues behind this measurement: name it to waiters
            record = wait.own = record_holder(self.lock_dir, self._device_key(), "measure")
            try:
                main_fd = self._open(self.path)
                try:
                    wait.flock(main_fd, fcntl.LOCK_EX)
                    wait.acquired()
                    logger.debug("measuring exclusively on %s", self.device)
                    yield from _held(main, "measure")
                finally:
                    _release(main_fd)
            finally:
                forget_holder(record)
        finally:
            _release(turnstile_fd)

    def _open(self, path: Path) -> int:
        """Returns a descriptor of lock file ``path``, creating it and its folder; the
        default folder is created private and raises ``PermissionError`` when another
        user owns it."""
        if self._lock_dir is not None:
            self._lock_dir.mkdir(parents=True, exist_ok=True)
        else:
            ensure_private_dir(self.lock_dir)
        # flock needs no write access, so a lock file another user created still works.
        return os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)

    def _device_key(self) -> str:
        if self._key is None:
            self._key = re.sub(r"[^A-Za-z0-9_.-]", "_", _resolve_device(self.device))
        return self._key


def _held(path: str, mode: _Mode) -> Iterator[None]:
    holds = _holds()
    holds[path] = mode
    try:
        yield
    finally:
        holds.pop(path, None)


class _Wait:
    """One acquisition's waits: they share its deadline, and a long one is logged."""

    def __init__(self, lock: DeviceLock, mode: _Mode) -> None:
        self.lock, self.mode = lock, mode
        self.start = time.monotonic()
        self.deadline = None if lock.timeout is None else self.start + lock.timeout
        self.warned = False
        self.own: Path | None = None  # the waiter's own holder record, if it has one

    def flock(self, fd: int, operation: int) -> None:
        """Takes ``flock(fd, operation)``: blocking without a deadline, polling with one;
        logs a warning naming the holders once the wait passes ``_WARN_AFTER_S`` and every
        ``_WARN_EVERY_S`` after that.

        Raises:
            TimeoutError: the deadline passed (the message names the holders).
        """
        if self.deadline is None:
            self._block(fd, operation)
            return
        delay, next_warning = _POLL_MIN_S, self.start + _WARN_AFTER_S
        while not _try_flock(fd, operation):
            now = time.monotonic()
            if self.deadline is not None and now >= self.deadline:
                raise TimeoutError(
                    f"timed out after {now - self.start:.1f} s waiting for the device lock "
                    f"{self.lock.path} (to {self.mode} on {self.lock.device!r}): "
                    f"{self._holders()}")
            if now >= next_warning:
                logger.warning(
                    "waiting %.1f s for the device lock %s (to %s on %r): %s; still waiting",
                    now - self.start, self.lock.path, self.mode, self.lock.device,
                    self._holders())
                self.warned, next_warning = True, now + _WARN_EVERY_S
            wake = min(t for t in (self.deadline, next_warning) if t is not None)
            time.sleep(max(0.0, min(delay, wake - now)))
            delay = min(delay * 2, _POLL_MAX_S)

    def _block(self, fd: int, operation: int) -> None:
        """Waits in a blocking ``flock`` (woken the moment the holder lets go, so waiters
        take turns as the kernel queues them) while a watcher thread logs the long wait."""
        if _try_flock(fd, operation):
            return
        done = threading.Event()

        def warn() -> None:
            next_warning = self.start + _WARN_AFTER_S
            while not done.wait(max(0.0, next_warning - time.monotonic())):
                logger.warning(
                    "waiting %.1f s for the device lock %s (to %s on %r): %s; still waiting",
                    time.monotonic() - self.start, self.lock.path, self.mode,
                    self.lock.device, self._holders())
                self.warned, next_warning = True, time.monotonic() + _WARN_EVERY_S

        watcher = threading.Thread(target=warn, name="device-lock-wait", daemon=True)
        watcher.start()
        try:
            fcntl.flock(fd, operation)
        finally:
            done.set()
            watcher.join()

    def acquired(self) -> None:
        """Logs, after a wait that was warned about, that the lock is held now."""
        if self.warned:
            logger.warning("acquired the device lock %s (to %s on %r) after waiting %.1f s",
                           self.lock.path, self.mode, self.lock.device,
                           time.monotonic() - self.start)

    def _holders(self) -> str:
        return describe_holders(self.lock.lock_dir, self.lock._device_key(), self.own)


def _try_flock(fd: int, operation: int) -> bool:
    """Returns whether ``flock(fd, operation)`` was taken without blocking."""
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        return False
    return True


def _release(fd: int) -> None:
    # Unlock before closing: duplicates of the descriptor in forked children (e.g. data
    # loader workers) would otherwise keep the lock held after this process lets go.
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _resolve_device(device: str) -> str:
    """Maps a device name to a host-wide identity for the lock file name."""
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match is None:
        return device
    import torch

    if torch.cuda.is_available():
        index = int(match.group(1)) if match.group(1) else torch.cuda.current_device()
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        if uuid is not None:
            return f"cuda-{uuid}"
    else:
        index = int(match.group(1) or 0)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    if 0 <= index < len(visible) and visible[index].strip():
        return f"cuda-{visible[index].strip()}"
    return f"cuda-{index}"
