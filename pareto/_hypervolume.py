"""Hypervolume: the raw volume a front dominates, and the one scaled score every view shows.

The progress bar of a search, the report and the benchmarks all show
:func:`hypervolume_fraction`: the share of the box between the ideal point (accuracy 1,
every cost 0) and the run's reference point (accuracy 0, 1.1x the largest subnet's costs)
that the front dominates. It lies in [0, 1] whatever the units, so runs on different
devices compare on one scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from optuna._hypervolume import compute_hypervolume

from pareto._dominance import Direction, to_loss

__all__ = [
    "REFERENCE_MARGIN", "hypervolume", "hypervolume_fraction", "ideal_point", "normalized",
    "reference_point",
]

#: The reference point sits this factor beyond the largest subnet's costs, so that the
#: largest subnet itself still adds volume.
REFERENCE_MARGIN = 1.1


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


def ideal_point(directions: Sequence[Direction]) -> list[float]:
    """Returns the best value each objective can take: 1 for a maximised one (accuracy is a
    fraction), 0 for a minimised one (latency, parameters and MACs are costs)."""
    return [1.0 if d == "max" else 0.0 for d in directions]


def reference_point(
    largest: Mapping[str, float], directions: Mapping[str, Direction]
) -> list[float]:
    """Returns the reference point of a search: 0 for a maximised objective and
    ``REFERENCE_MARGIN`` times the largest subnet's value for a minimised one.

    Raises:
        KeyError: ``largest`` lacks the value of a minimised objective.
    """
    return [0.0 if d == "max" else REFERENCE_MARGIN * float(largest[name])
            for name, d in directions.items()]


def hypervolume_fraction(
    values: np.ndarray,
    directions: Sequence[Direction],
    reference: Sequence[float],
    ideal: Sequence[float] | None = None,
) -> float:
    """Returns the share of the box from ``ideal`` to ``reference`` that ``values`` dominate.

    Args:
        values: (n, k) objective values in their own units.
        directions: ``"min"`` or ``"max"`` per column.
        reference: The reference point (see :func:`reference_point`).
        ideal: The best point; :func:`ideal_point` when None.

    Returns:
        A number in [0, 1]; 0 for an empty front or a degenerate box.

    Raises:
        ValueError: a point has the wrong length.
    """
    ideal = ideal_point(directions) if ideal is None else list(ideal)
    box = float(np.prod(np.abs(np.asarray(reference, float) - np.asarray(ideal, float))))
    if box <= 0 or len(values) == 0:
        return 0.0
    return hypervolume(values, directions, reference) / box


def normalized(
    values: np.ndarray, directions: Sequence[Direction], ideal: Sequence[float],
    nadir: Sequence[float],
) -> np.ndarray:
    """Returns ``values`` as losses scaled so that ``ideal`` maps to 0 and ``nadir`` to 1."""
    losses = to_loss(values, directions)
    lo = to_loss(np.asarray([ideal], dtype=float), directions)[0]
    hi = to_loss(np.asarray([nadir], dtype=float), directions)[0]
    span = np.where(hi - lo == 0, 1.0, hi - lo)
    return np.asarray((losses - lo) / span, dtype=float)
