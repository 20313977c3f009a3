"""Which driver owns a trial: several drivers may share one study (a PostgreSQL or journal
storage), and each must close only the trials whose driver is gone, never another's live ones.

A trial records its driver (``host/pid/token``) when asked and a heartbeat while it runs. A
driver on this host is gone when its process is; one elsewhere when its heartbeat is older
than ``STALE_AFTER_SECONDS``.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass

#: the trial's user attributes: its driver, and when that driver last said it runs
DRIVER_ATTR, HEARTBEAT_ATTR = "driver", "heartbeat"
#: how often a driver renews the heartbeat of its running trials
HEARTBEAT_SECONDS = 15.0
#: a trial whose heartbeat is older than this, of a driver on another host, is abandoned
STALE_AFTER_SECONDS = 120.0


@dataclass(frozen=True)
class DriverId:
    """One driver process (a host, a PID, and a token that tells a reused PID apart)."""

    host: str
    pid: int
    token: str

    @classmethod
    def new(cls) -> DriverId:
        """Returns the identity of a new driver in this process."""
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex[:12])

    @classmethod
    def parse(cls, text: object) -> DriverId | None:
        """Returns the identity written by ``key()``; ``None`` for anything else."""
        parts = str(text).rsplit("/", 2)
        if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2]:
            return None
        return cls(parts[0], int(parts[1]), parts[2])

    def key(self) -> str:
        """Returns the identity as stored in a trial (``host/pid/token``)."""
        return f"{self.host}/{self.pid}/{self.token}"

    def is_gone(self, heartbeat: float | None, me: DriverId, now: float | None = None) -> bool:
        """Returns whether this driver no longer runs its trials, as ``me`` sees it: it is
        ``me`` (a trial left over from an earlier round), its process has ended (same
        host), or its ``heartbeat`` is older than ``STALE_AFTER_SECONDS``."""
        if self == me:
            return True
        now = time.time() if now is None else now
        stale = heartbeat is None or now - float(heartbeat) > STALE_AFTER_SECONDS
        if self.host != me.host:
            return stale
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # another user's process: alive
        return stale  # alive, or a reused PID: its heartbeat tells
