from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import re
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from evaluators.latency import DeviceLock, LatencyBackend, LatencyMeter, _lock, get_backend
from evaluators.latency._lockdir import default_lock_dir
from hwprofiles import HardwareProfile, load_profile

Interval = tuple[float, float]

_SPAWN = multiprocessing.get_context("spawn")


def _busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(range(200))


def _compute_worker(lock_dir: str, out: str, work_s: float, ready: Any, stop: Any) -> None:
    """Runs compute blocks back to back until told to stop, logging each block's interval."""
    lock = DeviceLock("cpu", lock_dir=lock_dir)
    ready.set()
    with open(out, "w", encoding="utf-8") as log:
        while not stop.is_set():
            with lock.compute():
                start = time.monotonic()
                _busy(work_s)
                end = time.monotonic()
            log.write(f"{start} {end}\n")
            log.flush()


def _read(path: Path) -> list[Interval]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    pairs = [line.split() for line in lines]
    return [(float(a), float(b)) for a, b in (p for p in pairs if len(p) == 2)]


def _wait_for(path: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(_read(path)) < count:
        assert time.monotonic() < deadline, f"compute worker logged < {count} blocks"
        time.sleep(0.01)


def _overlaps(a: Interval, b: Interval) -> bool:
    return a[0] < b[1] and b[0] < a[1]


class _Recording(LatencyBackend):
    """Delegates to a real backend and logs when each timing ran."""

    def __init__(self, inner: LatencyBackend) -> None:
        super().__init__(inner.profile)
        self.inner = inner
        self.intervals: list[Interval] = []

    def session(self, model: Any, input_shape: tuple[int, ...]) -> Any:
        return self.inner.session(model, input_shape)

    def time(self, model: Any, input_shape: tuple[int, ...], *, warmup: int,
             repeats: int, min_sample_ms: float = 0.0, **windows: Any) -> list[float]:
        start = time.monotonic()
        samples = self.inner.time(model, input_shape, warmup=warmup, repeats=repeats,
                               min_sample_ms=min_sample_ms, **windows)
        self.intervals.append((start, time.monotonic()))
        return samples


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    return tmp_path / "locks"


@pytest.fixture
def workers(tmp_path: Path, lock_dir: Path) -> Iterator[Any]:
    """Starts compute worker processes on demand; stops and joins them afterwards."""
    stop = _SPAWN.Event()
    procs: list[Any] = []

    def start(count: int, work_s: float) -> list[Path]:
        logs = [tmp_path / f"compute{i}.txt" for i in range(count)]
        readies = [_SPAWN.Event() for _ in logs]
        for log, ready in zip(logs, readies, strict=True):
            proc = _SPAWN.Process(target=_compute_worker,
                                  args=(str(lock_dir), str(log), work_s, ready, stop))
            proc.start()
            procs.append(proc)
        for ready in readies:
            assert ready.wait(60), "compute worker did not start"
        return logs

    start.stop = stop  # type: ignore[attr-defined]
    yield start
    stop.set()
    for proc in procs:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    assert all(proc.exitcode == 0 for proc in procs)


def test_measurement_never_overlaps_compute_in_another_process(
    workers: Any, lock_dir: Path
) -> None:
    (log,) = workers(1, 0.02)
    _wait_for(log, 3)
    fields = {**load_profile("cpu").model_dump(), "warmup": 5, "repeats": 20, "max_cv": None,
              "max_load": None}  # one attempt each: the test counts them
    profile = HardwareProfile(**fields)
    backend = _Recording(get_backend(profile))
    meter = LatencyMeter(profile, lock=DeviceLock("cpu", lock_dir=lock_dir), backend=backend)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    for _ in range(6):
        meter.measure(model, (1, 3, 32, 32))
        time.sleep(0.03)  # let compute run between measurements
    workers.stop.set()
    time.sleep(0.1)

    compute, measured = _read(log), backend.intervals
    assert len(measured) == 6 and len(compute) >= 5
    # Compute really ran while measurements were going on, not just before or after.
    between = [c for c in compute if measured[0][1] <= c[0] and c[1] <= measured[-1][0]]
    assert len(between) >= 3
    clashes = [(m, c) for m in measured for c in compute if _overlaps(m, c)]
    assert not clashes, f"measurement overlapped compute: {clashes[:3]}"


def test_measurement_is_not_starved_by_alternating_compute(workers: Any, lock_dir: Path) -> None:
    logs = workers(2, 0.05)
    for log in logs:
        _wait_for(log, 3)
    lock = DeviceLock("cpu", lock_dir=lock_dir, timeout=10)
    waits, measured = [], []
    for _ in range(4):
        asked = time.monotonic()
        with lock.measure():
            start = time.monotonic()
            _busy(0.01)
            measured.append((start, time.monotonic()))
        waits.append(start - asked)
        time.sleep(0.05)
    workers.stop.set()
    time.sleep(0.2)

    compute = [c for log in logs for c in _read(log)]
    # The two workers kept the device busy: their compute blocks overlapped each other.
    first, second = _read(logs[0]), _read(logs[1])
    assert any(_overlaps(a, b) for a in first for b in second)
    # Each measurement got in within a couple of compute blocks, not after the stream ended.
    assert max(waits) < 1.0, waits
    assert all(any(c[0] >= m[1] for c in compute) for m in measured)
    assert not [(m, c) for m in measured for c in compute if _overlaps(m, c)]


def test_exclusive_and_shared_between_threads(lock_dir: Path) -> None:
    lock = DeviceLock("cpu", lock_dir=lock_dir, timeout=0.2)
    held, release = threading.Event(), threading.Event()

    def hold(kind: str) -> None:
        with getattr(lock, kind)():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold, args=("compute",))
    thread.start()
    held.wait(10)
    with lock.compute():  # shared with the other thread's compute
        pass
    with pytest.raises(TimeoutError, match="device lock"), lock.measure():
        pass
    release.set()
    thread.join()
    with lock.measure():  # free again
        pass

    held.clear()
    release.clear()
    thread = threading.Thread(target=hold, args=("measure",))
    thread.start()
    held.wait(10)
    with pytest.raises(TimeoutError), lock.compute():
        pass
    release.set()
    thread.join()


def test_nested_compute_is_reentrant_and_mixing_raises(lock_dir: Path) -> None:
    lock = DeviceLock("cpu", lock_dir=lock_dir, timeout=2)
    other = DeviceLock("cpu", lock_dir=lock_dir, timeout=2)
    with lock.compute(), lock.compute(), other.compute(), pytest.raises(
        RuntimeError, match=r"measure\(\) inside compute\(\)"
    ), lock.measure():
        pass
    with lock.measure(), lock.measure(), pytest.raises(
        RuntimeError, match=r"compute\(\) inside measure\(\)"
    ), other.compute():
        pass
    with lock.measure():  # everything was released
        pass


def _turnstile_taken(lock: DeviceLock) -> bool:
    import fcntl
    import os

    fd = os.open(lock.turnstile_path, os.O_RDONLY | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_nested_compute_does_not_deadlock_behind_a_waiting_measurement(lock_dir: Path) -> None:
    lock = DeviceLock("cpu", lock_dir=lock_dir, timeout=5)
    measured: list[float] = []

    def measure() -> None:
        with lock.measure():
            measured.append(time.monotonic())

    with lock.compute():
        thread = threading.Thread(target=measure)
        thread.start()
        deadline = time.monotonic() + 5
        while not _turnstile_taken(lock):  # the measurement now queues ahead of new compute
            assert time.monotonic() < deadline
            time.sleep(0.005)
        with lock.compute(), DeviceLock("cpu", lock_dir=lock_dir, timeout=5).compute():
            pass  # nested blocks of this thread pass straight through
        left = time.monotonic()
    thread.join(10)
    assert len(measured) == 1 and measured[0] >= left


def test_lock_is_released_when_the_block_raises(lock_dir: Path) -> None:
    lock = DeviceLock("cpu", lock_dir=lock_dir, timeout=1)
    with pytest.raises(KeyError), lock.compute():
        raise KeyError("boom")
    with lock.measure():
        pass


def _hold_inherited_descriptor(seconds: float) -> None:
    time.sleep(seconds)


def test_forked_child_does_not_keep_the_lock(lock_dir: Path) -> None:
    # A data loader worker forked inside a compute block inherits the lock's descriptor.
    lock = DeviceLock("cpu", lock_dir=lock_dir, timeout=1)
    with lock.compute():
        child = multiprocessing.get_context("fork").Process(
            target=_hold_inherited_descriptor, args=(3.0,))
        child.start()
    try:
        assert child.is_alive()
        with lock.measure():
            pass
    finally:
        child.kill()
        child.join()


def test_lock_files_default_location_and_pickling(lock_dir: Path) -> None:
    default = DeviceLock()
    assert default.path == default_lock_dir() / "cpu.lock"
    lock = DeviceLock("cuda:7", lock_dir=lock_dir)
    clone = pickle.loads(pickle.dumps(lock))
    assert (clone.device, clone.lock_dir) == ("cuda:7", lock_dir)
    assert clone.path.parent == lock_dir and clone.path.name.startswith("cuda-")
    assert clone.turnstile_path.name.endswith(".turnstile.lock")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_default_folder_is_the_users_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    lock = DeviceLock("cpu", timeout=1)
    private = tmp_path / "tmp" / f"hwnas-locks-{os.getuid()}"
    assert lock.lock_dir == private and not private.exists()
    with lock.compute():
        pass
    assert private.is_dir() and private.stat().st_uid == os.getuid() and _mode(private) == 0o700
    assert (private / "cpu.lock").is_file()
    # the same folder whatever the session: a runtime folder of logind's is not used
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    clone = pickle.loads(pickle.dumps(lock))
    assert clone.lock_dir == private
    private.chmod(0o777)  # too open, but ours: closed again
    with clone.measure():
        pass
    assert _mode(private) == 0o700


@pytest.mark.skipif(os.getuid() != 0, reason="only root can give a folder to another user")
def test_a_default_folder_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / f"hwnas-locks-{os.getuid()}"
    planted.mkdir(mode=0o777)
    os.chown(planted, 4321, 4321)
    lock = DeviceLock("cpu", timeout=1)
    with pytest.raises(PermissionError, match=r"owned by uid 4321.*hardware\.lock_dir"), \
            lock.compute():
        pass


_HOLDER = """\
import sys
from evaluators.latency import DeviceLock

with getattr(DeviceLock("cpu", lock_dir=sys.argv[1]), sys.argv[2])():
    print("held", flush=True)
    sys.stdin.readline()  # until the test lets go
"""


@pytest.fixture
def holder(tmp_path: Path, lock_dir: Path) -> Iterator[Any]:
    """Starts a process that holds the lock (``measure`` or ``compute``) until released."""
    script = tmp_path / "lock_holder.py"
    script.write_text(_HOLDER)
    procs: list[subprocess.Popen[str]] = []

    def start(mode: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, str(script), str(lock_dir), mode],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_long_wait_names_the_holder_until_it_lets_go(
    holder: Any, lock_dir: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_lock, "_WARN_AFTER_S", 0.5)
    monkeypatch.setattr(_lock, "_WARN_EVERY_S", 1.0)
    proc = holder("measure")
    acquired: list[float] = []

    def wait() -> None:
        with DeviceLock("cpu", lock_dir=lock_dir).compute():
            acquired.append(time.monotonic())

    caplog.set_level(logging.WARNING, logger=_lock.__name__)
    waiter = threading.Thread(target=wait)
    waiter.start()
    deadline = time.monotonic() + 10
    while len([r for r in caplog.records if "waiting" in r.getMessage()]) < 2:
        assert time.monotonic() < deadline and not acquired, caplog.text
        time.sleep(0.05)
    waits = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert all(f"held by pid {proc.pid} measuring (" in m and "lock_holder.py" in m
               for m in waits), waits
    first, second = (float(re.match(r"waiting (\d+\.\d) s ", m).group(1)) for m in waits[:2])
    assert 0.5 <= first < 3 and second - first >= 0.9  # after _WARN_AFTER_S, then periodically
    assert not acquired
    released = time.monotonic()
    proc.stdin.close()  # the holder exits
    waiter.join(10)
    assert len(acquired) == 1 and acquired[0] >= released
    assert "acquired the device lock" in caplog.records[-1].getMessage()
    assert not list((lock_dir / "cpu.holders").iterdir())  # the holder removed its record


def test_a_timeout_names_the_compute_holders(holder: Any, lock_dir: Path) -> None:
    first, second = holder("compute"), holder("compute")
    lock = DeviceLock("cpu", lock_dir=lock_dir, timeout=0.3)
    with pytest.raises(TimeoutError, match=r"timed out after 0\.\d s waiting for the device "
                       r"lock .*cpu\.lock \(to measure on 'cpu'\): held by pid (\d+) computing"
                       ) as info, lock.measure():
        pass
    assert f"pid {first.pid} computing" in str(info.value)
    assert f"pid {second.pid} computing" in str(info.value)
    first.kill()  # dies without removing its record: the next waiter ignores and deletes it
    first.wait()
    with pytest.raises(TimeoutError) as info, lock.measure():
        pass
    assert f"pid {first.pid}" not in str(info.value)
    assert f"pid {second.pid} computing" in str(info.value)
    assert [p.name.split("-")[0] for p in (lock_dir / "cpu.holders").iterdir()] == [
        str(second.pid)]
