"""Where device locks live by default: a folder of the user's own, never a shared one."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

__all__ = ["LockDirError", "default_lock_dir", "ensure_private_dir"]

_LOCK_DIRNAME = "hwnas-locks"


def default_lock_dir() -> Path:
    """Returns this user's default folder for device locks (not created here):
    ``<tempfile.gettempdir()>/hwnas-locks-<uid>``.

    One folder per user and machine whatever the session (a login shell, cron, ``nohup``):
    processes coordinate only through the same folder, so a per-session runtime folder
    (``XDG_RUNTIME_DIR``, removed at logout) is not used. Jobs started with another
    ``TMPDIR`` need an explicit lock folder (``hardware.lock_dir``).
    """
    return Path(tempfile.gettempdir()) / f"{_LOCK_DIRNAME}-{os.getuid()}"


class LockDirError(PermissionError):
    """The default lock folder is not a private folder of this user's."""


def ensure_private_dir(path: Path) -> Path:
    """Creates ``path`` with mode 0700 if missing and returns it; tightens the mode of one
    this user owns to 0700.

    Raises:
        LockDirError: ``path`` exists but is a link, not a folder, or belongs to another
            user (who could then hold or fake this user's device locks).
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else (
            "a folder" if stat.S_ISDIR(info.st_mode) else "a file")
        raise LockDirError(
            f"{path}: the default folder of the device locks is {what} owned by uid "
            f"{info.st_uid}, not a folder of yours (uid {os.getuid()}), so another user could "
            "hold or fake your locks; remove it, or give a folder of your own as "
            "hardware.lock_dir (DeviceLock(lock_dir=...))"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path
