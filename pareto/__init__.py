"""Pareto math: dominance, the search and deployed fronts, hypervolume and feasibility.

The one home of that math: the search driver, the compression chain and the report all
import it from here. It knows nothing of files, Ray or plots.

Example:
    >>> import numpy as np
    >>> from pareto import hypervolume_fraction, pareto_mask
    >>> values = np.array([[0.9, 4.0], [0.5, 2.0], [0.4, 5.0]])  # accuracy, latency_ms
    >>> pareto_mask(values, ["max", "min"]).tolist()
    [True, True, False]
    >>> round(hypervolume_fraction(values, ["max", "min"], [0.0, 10.0]), 2)
    0.64
"""

from __future__ import annotations

from pareto._dominance import Direction, dominates, pareto_mask, to_loss
from pareto._fronts import (
    DEPLOYED_DIRECTIONS,
    budget_steps,
    choose_deployed,
    deployable,
    deployed_front,
    front_candidates,
    front_hypervolume,
    is_feasible,
    search_front,
)
from pareto._hypervolume import (
    REFERENCE_MARGIN,
    hypervolume,
    hypervolume_fraction,
    ideal_point,
    normalized,
    reference_point,
)

__all__ = [
    "DEPLOYED_DIRECTIONS", "REFERENCE_MARGIN", "Direction", "budget_steps", "choose_deployed",
    "deployable", "deployed_front", "dominates", "front_candidates", "front_hypervolume", "hypervolume",
    "hypervolume_fraction", "ideal_point", "is_feasible", "normalized", "pareto_mask",
    "reference_point", "search_front", "to_loss",
]
