"""Fronts of result tables: the search's feasible front, the deployable candidates of the
compression chain, each model's deployed choice, and the steps of a latency budget.

The tables are pandas frames with the run directory's column names (``state``,
``feasible`` and the objectives for trials; ``model_id``, ``stage``, ``status``,
``accuracy`` and ``latency_ms`` for compression rows); nothing here reads files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pareto._dominance import Direction, pareto_mask
from pareto._hypervolume import hypervolume_fraction

__all__ = [
    "DEPLOYED_DIRECTIONS", "budget_steps", "choose_deployed", "deployable", "deployed_front",
    "front_hypervolume", "is_feasible", "search_front",
]

#: The deployed front trades test accuracy against latency measured on the profile.
DEPLOYED_DIRECTIONS: dict[str, Direction] = {"accuracy": "max", "latency_ms": "min"}


def is_feasible(metrics: Mapping[str, Any], constraints: Mapping[str, float]) -> bool:
    """Returns whether every constrained metric is present, finite and within its bound."""
    for name, bound in constraints.items():
        value = metrics.get(name)
        if value is None or not math.isfinite(float(value)) or float(value) > bound:
            return False
    return True


def front_candidates(frame: pd.DataFrame) -> pd.DataFrame:
    """Returns the rows of a trials table that may be on the search front: COMPLETE,
    feasible, and with a latency the device measured reliably (a ``latency_reliable``
    column, where there is one)."""
    keep = (frame["state"] == "COMPLETE") & frame["feasible"].astype(bool)
    if "latency_reliable" in frame.columns:
        keep &= frame["latency_reliable"].fillna(True).astype(bool)
    return frame[keep]


def search_front(frame: pd.DataFrame, directions: Mapping[str, Direction]) -> pd.DataFrame:
    """Returns exactly the non-dominated rows of a trials table's :func:`front_candidates`."""
    candidates = front_candidates(frame)
    if candidates.empty:
        return candidates
    names = list(directions)
    mask = pareto_mask(candidates[names].to_numpy(dtype=float), list(directions.values()))
    return candidates[mask].reset_index(drop=True)


def front_hypervolume(
    frame: pd.DataFrame, directions: Mapping[str, Direction], reference: list[float] | None
) -> float:
    """Returns the hypervolume fraction of a trials table's search front (0 without a
    reference point or a front); see :func:`pareto.hypervolume_fraction`."""
    front = search_front(frame, directions)
    if reference is None or front.empty:
        return 0.0
    values = front[list(directions)].to_numpy(dtype=float)
    return hypervolume_fraction(values, list(directions.values()), reference)


def _measured(rows: pd.DataFrame) -> pd.Series:
    accuracy = pd.to_numeric(rows["accuracy"], errors="coerce")
    latency = pd.to_numeric(rows["latency_ms"], errors="coerce")
    return (rows["status"] == "ok") & np.isfinite(accuracy) & np.isfinite(latency)


def deployable(rows: pd.DataFrame) -> pd.DataFrame:
    """Returns the compression rows that may ship: accepted (status ``ok``), with a measured
    test accuracy and latency, and no slower than their model's baseline.

    Raises:
        KeyError: a column the compression table must have is missing.
    """
    if rows.empty:
        return rows
    ok = rows[_measured(rows)]
    base = ok[ok["stage"] == "baseline"].groupby("model_id", sort=False)["latency_ms"].first()
    limit = ok["model_id"].map(base).astype(float)
    return ok[ok["latency_ms"].astype(float) <= limit]


def choose_deployed(rows: pd.DataFrame) -> Any | None:
    """Returns the index label of the row one model ships, or None when nothing is deployable.

    The candidates are :func:`deployable`; the choice is the fastest, and among equally fast
    ones the most accurate (then the earliest stage).
    """
    candidates = deployable(rows)
    if candidates.empty:
        return None
    latency = candidates["latency_ms"].astype(float)
    fastest = candidates[latency == latency.min()]
    return fastest["accuracy"].astype(float).idxmax()


def deployed_front(rows: pd.DataFrame) -> pd.DataFrame:
    """Returns the non-dominated (accuracy, latency) rows among the deployable candidates of
    every model, fastest first."""
    candidates = deployable(rows)
    if candidates.empty:
        return candidates.reset_index(drop=True)
    values = candidates[list(DEPLOYED_DIRECTIONS)].to_numpy(dtype=float)
    mask = pareto_mask(values, list(DEPLOYED_DIRECTIONS.values()))
    front = candidates[mask].sort_values(["latency_ms", "accuracy"], ascending=[True, False])
    return front.reset_index(drop=True)


def budget_steps(front: pd.DataFrame) -> pd.DataFrame:
    """Returns the rows a latency budget can pick: sorted by latency, each more accurate than
    every faster row (a slower model that is not more accurate is never the answer)."""
    ordered = front.sort_values("latency_ms", kind="stable").reset_index(drop=True)
    accuracy = ordered["accuracy"].astype(float)
    better = accuracy > accuracy.cummax().shift(fill_value=-math.inf)
    return ordered[better].reset_index(drop=True)
