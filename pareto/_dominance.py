"""Dominance and non-dominated sets of multi-objective values (Optuna's algorithm underneath)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from optuna.study._multi_objective import _is_pareto_front

__all__ = ["Direction", "dominates", "pareto_mask", "to_loss"]

Direction = Literal["min", "max"]


def to_loss(values: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Returns ``values`` (n, k) turned into losses: maximised columns are negated.

    Raises:
        ValueError: ``values`` is not 2-D with one column per direction.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(directions):
        raise ValueError(
            f"expected an (n, {len(directions)}) array of objective values, got {values.shape}"
        )
    signs = np.array([1.0 if d == "min" else -1.0 for d in directions])
    return np.asarray(values * signs, dtype=float)


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[Direction]) -> bool:
    """Returns whether ``a`` is at least as good as ``b`` in every objective and better in one."""
    la, lb = to_loss(np.asarray([a, b], dtype=float), directions)
    return bool(np.all(la <= lb) and np.any(la < lb))


def pareto_mask(values: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Returns a boolean mask of the non-dominated rows of ``values`` (n, k).

    A row is dominated when another is at least as good in every objective and strictly
    better in one. Duplicates of a non-dominated point are all kept.
    """
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(_is_pareto_front(to_loss(values, directions), assume_unique_lexsorted=False))
