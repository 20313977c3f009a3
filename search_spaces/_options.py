"""Checks the options models of the elastic spaces share (pydantic validators call them)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

__all__ = ["check_choice_values", "check_one_per_stage"]


def check_choice_values(
    value: Sequence[float], field: str, *, increasing: bool = True
) -> None:
    """Checks that an option listing values is non-empty and, with ``increasing``, strictly
    increasing (a choice's values go from cheapest to most expensive).

    Raises:
        ValueError: naming ``field`` and the values.
    """
    if not value:
        raise ValueError(f"{field} must not be empty")
    if increasing and not all(a < b for a, b in itertools.pairwise(value)):
        raise ValueError(f"{field} must be strictly increasing, got {list(value)}")


def check_one_per_stage(stages: int, lengths: dict[str, int]) -> None:
    """Checks that every per-stage option has one entry per stage.

    Raises:
        ValueError: naming the first option whose length differs from ``stages``.
    """
    for field, got in lengths.items():
        if got != stages:
            raise ValueError(
                f"{field} must have one entry per stage: stage_channels has "
                f"{stages} entries, {field} has {got}"
            )
