"""Pareto sets and hypervolume of multi-objective results (Optuna's algorithms underneath)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from optuna._hypervolume import compute_hypervolume
from optuna.study._multi_objective import _is_pareto_front

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


def pareto_mask(values: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Returns a boolean mask of the non-dominated rows of ``values`` (n, k).

    A row is dominated when another is at least as good in every objective and strictly
    better in one. Duplicates of a non-dominated point are all kept.
    """
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(_is_pareto_front(to_loss(values, directions), assume_unique_lexsorted=False))


def hypervolume(
    values: np.ndarray, directions: Sequence[Direction], reference_point: Sequence[float]
) -> float:
    """Returns the hypervolume dominated by ``values`` (n, k) up to ``reference_point``.

    The reference point is given in the objectives' own units and directions (for a
    maximised objective it is a lower bound). Points that do not dominate it add nothing.

    Raises:
        ValueError: the reference point has the wrong length.
    """
    if len(reference_point) != len(directions):
        raise ValueError(
            f"reference point has {len(reference_point)} values for {len(directions)} objectives"
        )
    losses = to_loss(np.asarray(values, dtype=float).reshape(-1, len(directions)), directions)
    ref = to_loss(np.asarray([reference_point], dtype=float), directions)[0]
    inside = losses[np.all(losses < ref, axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(compute_hypervolume(inside, ref))


def normalized(
    values: np.ndarray, directions: Sequence[Direction], ideal: Sequence[float], nadir: Sequence[float]
) -> np.ndarray:
    """Returns ``values`` as losses scaled so that ``ideal`` maps to 0 and ``nadir`` to 1."""
    losses = to_loss(values, directions)
    lo = to_loss(np.asarray([ideal], dtype=float), directions)[0]
    hi = to_loss(np.asarray([nadir], dtype=float), directions)[0]
    span = np.where(hi - lo == 0, 1.0, hi - lo)
    return np.asarray((losses - lo) / span, dtype=float)
