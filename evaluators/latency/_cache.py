"""A persistent latency cache shared by every process of a search."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluators.latency._latency import Latency

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["LatencyCache"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latency (
    arch_key    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    input_shape TEXT NOT NULL,
    median_ms   REAL NOT NULL,
    p90_ms      REAL NOT NULL,
    mean_ms     REAL NOT NULL,
    cv          REAL NOT NULL,
    n           INTEGER NOT NULL,
    samples_ms  TEXT NOT NULL,
    load        REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (arch_key, fingerprint, input_shape)
)
"""
#: the columns of every version of the cache (``load`` came later: added when missing)
_FIRST_COLUMNS = "arch_key, fingerprint, input_shape, median_ms, p90_ms, mean_ms, cv, n, samples_ms"
_COLUMNS = _FIRST_COLUMNS + ", load"
_VALUES = "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
#: what SQLite says when a sound file cannot be opened for writing: a read-only or full disk
#: (opening a WAL database sizes its -shm file: "disk I/O error" when that fails)
_CANNOT_WRITE = ("readonly", "unable to open", "disk I/O error", "database or disk is full")


class LatencyCache:
    """Latencies keyed by (architecture key, profile fingerprint, input shape), in SQLite.

    Latency depends on the architecture and the measurement setup, never on weights, so
    one measurement serves every trial that samples the same architecture. A file-backed
    cache uses WAL journaling and a busy timeout, so any number of processes (Ray
    workers) may read and write it at once; each process opens its own connection. An
    in-memory cache (``path=None``) lives in one process; pickling it copies its rows.

    Args:
        path: SQLite file, created with its parent directories if missing; ``None`` keeps
            the cache in memory.
        timeout: Seconds to wait for another process's write before failing.

    Example:
        >>> cache = LatencyCache()
        >>> cache.put("arch-a", "7a4d2fa188688012", (1, 3, 32, 32),
        ...           Latency.from_samples([1.0, 1.2, 1.1, 1.0, 1.3]))
        >>> cache.get("arch-a", "7a4d2fa188688012", (1, 3, 32, 32)).median_ms
        1.1
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, timeout: float = 30.0
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.timeout = timeout
        self._mutex = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    @staticmethod
    def set_aside_if_damaged(path: str | os.PathLike[str]) -> Path | None:
        """Checks the cache file at ``path``; one that is not a readable latency cache (a
        damaged file, another database) is renamed to ``<name>.damaged`` with its WAL
        files, so that a fresh cache starts in its place (a cache only saves
        re-measurements). Call it where no other process uses the cache. Returns the
        renamed file, or ``None`` when the cache is sound or absent."""
        path = Path(path)
        if not path.exists():
            return None
        try:
            db = sqlite3.connect(path, timeout=5.0)
            try:
                (verdict,) = db.execute("PRAGMA quick_check").fetchone()
                if verdict != "ok":
                    raise sqlite3.DatabaseError(verdict)
                db.execute(_SCHEMA)
                db.execute(f"SELECT {_FIRST_COLUMNS} FROM latency LIMIT 1").fetchall()
            finally:
                db.close()
        except sqlite3.OperationalError as exc:
            if any(why in str(exc) for why in _CANNOT_WRITE):
                return None  # cannot be written here: the writer that needs it will say so
            return LatencyCache._set_aside(path)
        except sqlite3.DatabaseError:
            return LatencyCache._set_aside(path)
        return None

    @staticmethod
    def _set_aside(path: Path) -> Path:
        aside = path.with_name(path.name + ".damaged")
        os.replace(path, aside)
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        return aside

    def get(self, arch_key: str, fingerprint: str, input_shape: Sequence[int]) -> Latency | None:
        """Returns the cached latency, or ``None`` if this combination was never stored.

        Args:
            arch_key: A stable key of the architecture (e.g. its JSON or hash).
            fingerprint: ``HardwareProfile.fingerprint()`` of the measuring profile.
            input_shape: The input shape measured, batch included.
        """
        with self._mutex:
            row = self._connection().execute(
                "SELECT median_ms, p90_ms, mean_ms, cv, n, samples_ms, load FROM latency "
                "WHERE arch_key = ? AND fingerprint = ? AND input_shape = ?",
                (arch_key, fingerprint, _shape_key(input_shape)),
            ).fetchone()
        if row is None:
            return None
        median, p90, mean, cv, n, samples, load = row
        return Latency(median_ms=median, p90_ms=p90, mean_ms=mean, cv=cv, n=n,
                       samples_ms=tuple(json.loads(samples)), load=float(load))

    def put(
        self, arch_key: str, fingerprint: str, input_shape: Sequence[int], latency: Latency
    ) -> None:
        """Stores ``latency``, replacing any earlier value for the same key.

        Args:
            arch_key: A stable key of the architecture.
            fingerprint: ``HardwareProfile.fingerprint()`` of the measuring profile.
            input_shape: The input shape measured, batch included.
            latency: The measurement.
        """
        row = (arch_key, fingerprint, _shape_key(input_shape), latency.median_ms,
               latency.p90_ms, latency.mean_ms, latency.cv, latency.n,
               json.dumps(list(latency.samples_ms)), float(latency.load))
        with self._mutex:
            self._connection().execute(
                f"INSERT OR REPLACE INTO latency ({_COLUMNS}) {_VALUES}", row)

    def __len__(self) -> int:
        with self._mutex:
            (count,) = self._connection().execute("SELECT COUNT(*) FROM latency").fetchone()
        return int(count)

    def close(self) -> None:
        """Closes this process's connection; the cache reopens it when used again."""
        with self._mutex:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LatencyCache(path={str(self.path) if self.path else None!r})"

    def __getstate__(self) -> dict[str, Any]:
        rows = None
        if self.path is None:
            with self._mutex:
                rows = self._connection().execute(f"SELECT {_COLUMNS} FROM latency").fetchall()
        return {"path": self.path, "timeout": self.timeout, "rows": rows}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.timeout = state["path"], state["timeout"]
        self._mutex = threading.Lock()
        self._conn, self._pid = None, -1
        if state["rows"]:
            with self._mutex:
                self._connection().executemany(
                    f"INSERT OR REPLACE INTO latency ({_COLUMNS}) {_VALUES}",
                    state["rows"],
                )

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross a fork: reopen in every new process.
        if self._conn is None or self._pid != os.getpid():
            if self.path is None:
                conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = self._open_file()
            conn.execute(_SCHEMA)
            _add_load_column(conn)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _open_file(self) -> sqlite3.Connection:
        """Opens the file in WAL mode, retrying while another process sets it up.

        Switching to WAL (and creating the table) needs a lock that SQLite may refuse at
        once, without its busy timeout, when two processes start together.
        """
        assert self.path is not None
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            conn = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False,
                                   isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute(_SCHEMA)
                return conn
            except sqlite3.OperationalError as exc:
                conn.close()
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)


def _add_load_column(conn: sqlite3.Connection) -> None:
    """Adds the ``load`` column to a cache written before it was recorded (its rows: 0)."""
    names = {row[1] for row in conn.execute("PRAGMA table_info(latency)")}
    if "load" in names:
        return
    try:
        conn.execute("ALTER TABLE latency ADD COLUMN load REAL NOT NULL DEFAULT 0")
    except sqlite3.OperationalError as exc:
        if "duplicate column" not in str(exc):  # another process added it first
            raise


def _shape_key(input_shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in input_shape)
