"""What every data reader shares: the error a user's data raises, and the memory limit.

A data set is held in memory whole, so each reader checks the size an array will have
*before* it allocates it, against ``max_bytes`` (``data.max_bytes`` in the config).
"""

from __future__ import annotations

#: The default of ``data.max_bytes``: the largest array a data set may need in memory. Peak
#: use while loading is a few times this (the raw array, its float32 copy, the normalised one).
DEFAULT_MAX_BYTES = 4 * 2**30


class DataError(ValueError):
    """A data set that cannot be loaded or split as configured."""


def format_bytes(n: int) -> str:
    """Returns ``n`` bytes as a short human-readable size, e.g. ``'6.0 GiB'``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def check_bytes(what: str, nbytes: int, max_bytes: int, where: str) -> None:
    """Checks that an array of ``nbytes`` may be allocated; returns nothing.

    ``what`` describes the array (its shape and type), ``where`` starts the message (the
    config key and file).

    Raises:
        DataError: ``nbytes`` is over ``max_bytes``, naming both and how to raise the limit.
    """
    if nbytes > max_bytes:
        raise DataError(
            f"{where}: {what} needs {format_bytes(nbytes)} ({nbytes} bytes) in memory, over the "
            f"limit of {format_bytes(max_bytes)} (data.max_bytes={max_bytes}); use a smaller data "
            "set or image_size, or raise data.max_bytes if the machine has the memory"
        )
