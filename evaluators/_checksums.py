"""Checksums of a run's artifacts: what a resumed run verifies before it skips any work."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """Returns the SHA-256 of the file at ``path`` as hex.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digests(root: Path, paths: Iterable[Path]) -> dict[str, str]:
    """Returns ``{path relative to root: sha256}`` of ``paths`` (files under ``root``).

    Raises:
        OSError: a file cannot be read.
    """
    return {p.relative_to(root).as_posix(): file_digest(p) for p in sorted(set(paths))}


def mismatched(root: Path, recorded: dict[str, str]) -> list[str]:
    """Returns the recorded files (relative to ``root``) that are missing, unreadable or no
    longer have their recorded checksum; empty when every one matches."""
    wrong = []
    for name, expected in sorted(recorded.items()):
        try:
            if file_digest(root / name) != expected:
                wrong.append(name)
        except OSError:
            wrong.append(name)
    return wrong
