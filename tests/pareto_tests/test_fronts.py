"""The search and deployed fronts, the deployed choice and the budget steps, against brute
force."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pareto import (
    budget_steps,
    choose_deployed,
    deployable,
    deployed_front,
    front_candidates,
    hypervolume,
    hypervolume_fraction,
    is_feasible,
    reference_point,
    search_front,
)

STAGES = ["baseline", "pruned", "distilled", "int8", "tensorrt"]


def random_rows(seed: int, models: int = 6) -> pd.DataFrame:
    """Compression rows with ties, rejected, slower, skipped and unmeasured stages."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(models):
        base_latency = float(rng.integers(5, 15))
        for stage in STAGES:
            status = "ok" if stage == "baseline" else str(
                rng.choice(["ok", "ok", "ok", "rejected", "slower", "skipped"]))
            latency = float(rng.integers(2, 18)) if stage != "baseline" else base_latency
            accuracy = float(rng.integers(80, 100)) / 100
            if status == "skipped" or stage == "tensorrt":
                accuracy = latency = math.nan
            rows.append({"model_id": f"trial_{m}", "stage": stage, "status": status,
                         "accuracy": accuracy, "latency_ms": latency})
    return pd.DataFrame(rows)


def brute_deployable(rows: pd.DataFrame) -> set[int]:
    keep = set()
    for i, r in rows.iterrows():
        base = rows[(rows["model_id"] == r["model_id"]) & (rows["stage"] == "baseline")].iloc[0]
        if (r["status"] == "ok" and math.isfinite(r["accuracy"]) and math.isfinite(r["latency_ms"])
                and base["status"] == "ok" and r["latency_ms"] <= base["latency_ms"]):
            keep.add(i)
    return keep


@pytest.mark.parametrize("seed", range(20))
def test_deployed_front_matches_brute_force(seed: int) -> None:
    rows = random_rows(seed)
    candidates = brute_deployable(rows)
    assert set(deployable(rows).index) == candidates
    expected = set()
    for i in candidates:
        a = rows.loc[i]
        dominated = any(
            rows.loc[j, "accuracy"] >= a["accuracy"] and rows.loc[j, "latency_ms"] <= a["latency_ms"]
            and (rows.loc[j, "accuracy"] > a["accuracy"] or rows.loc[j, "latency_ms"] < a["latency_ms"])
            for j in candidates if j != i
        )
        if not dominated:
            expected.add((a["model_id"], a["stage"]))
    front = deployed_front(rows)
    assert set(zip(front["model_id"], front["stage"])) == expected
    assert front["latency_ms"].is_monotonic_increasing
    assert (front["status"] == "ok").all()


@pytest.mark.parametrize("seed", range(20))
def test_each_model_ships_its_fastest_deployable_stage(seed: int) -> None:
    rows = random_rows(seed)
    candidates = brute_deployable(rows)
    for model, group in rows.groupby("model_id"):
        mine = [i for i in candidates if rows.loc[i, "model_id"] == model]
        chosen = choose_deployed(group)
        best = min(mine, key=lambda i: (rows.loc[i, "latency_ms"], -rows.loc[i, "accuracy"], i))
        assert chosen == best
        # never slower than the baseline, never a rejected or slower stage
        base = group[group["stage"] == "baseline"]["latency_ms"].iloc[0]
        assert rows.loc[chosen, "latency_ms"] <= base and rows.loc[chosen, "status"] == "ok"


def test_a_slower_stage_is_never_deployed_even_when_marked_ok() -> None:
    rows = pd.DataFrame([
        {"model_id": "m", "stage": "baseline", "status": "ok", "accuracy": 0.9, "latency_ms": 2.0},
        {"model_id": "m", "stage": "int8", "status": "ok", "accuracy": 0.95, "latency_ms": 2.5},
    ])
    assert choose_deployed(rows) == 0
    assert deployed_front(rows)["stage"].tolist() == ["baseline"]


def test_equally_fast_stages_ship_the_most_accurate() -> None:
    rows = pd.DataFrame([
        {"model_id": "m", "stage": "baseline", "status": "ok", "accuracy": 0.90, "latency_ms": 2.0},
        {"model_id": "m", "stage": "pruned", "status": "ok", "accuracy": 0.88, "latency_ms": 1.0},
        {"model_id": "m", "stage": "distilled", "status": "ok", "accuracy": 0.89, "latency_ms": 1.0},
    ])
    assert rows.loc[choose_deployed(rows), "stage"] == "distilled"


def test_nothing_deployable_without_a_measured_baseline() -> None:
    rows = pd.DataFrame([
        {"model_id": "m", "stage": "baseline", "status": "ok", "accuracy": math.nan,
         "latency_ms": math.nan},
        {"model_id": "m", "stage": "int8", "status": "ok", "accuracy": 0.9, "latency_ms": 1.0},
    ])
    assert choose_deployed(rows) is None and deployed_front(rows).empty


def test_budget_steps_keep_only_more_accurate_slower_rows() -> None:
    front = pd.DataFrame({"accuracy": [0.9, 0.8, 0.95, 0.95, 0.97],
                          "latency_ms": [2.0, 1.0, 3.0, 4.0, 5.0]})
    steps = budget_steps(front)
    assert steps["latency_ms"].tolist() == [1.0, 2.0, 3.0, 5.0]


def test_search_front_is_complete_feasible_and_non_dominated() -> None:
    frame = pd.DataFrame({
        "state": ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"],
        "feasible": [True, True, False, False, True],
        "accuracy": [0.9, 0.8, 0.99, 0.99, 0.85],
        "latency_ms": [2.0, 1.0, 0.5, 0.5, 2.5],
    })
    front = search_front(frame, {"accuracy": "max", "latency_ms": "min"})
    assert sorted(front["accuracy"].tolist()) == [0.8, 0.9]


def test_a_latency_measured_unreliably_never_reaches_the_front() -> None:
    frame = pd.DataFrame({
        "state": ["COMPLETE"] * 3, "feasible": [True] * 3,
        "accuracy": [0.9, 0.8, 0.99], "latency_ms": [2.0, 1.0, 0.5],
        "latency_reliable": [True, True, False],  # would dominate both
    })
    front = search_front(frame, {"accuracy": "max", "latency_ms": "min"})
    assert sorted(front["accuracy"].tolist()) == [0.8, 0.9]
    assert front_candidates(frame.drop(columns="latency_reliable")).shape[0] == 3


def test_feasibility_needs_every_bound_met_by_a_finite_value() -> None:
    assert is_feasible({"latency_ms": 1.0}, {"latency_ms": 2.0})
    assert not is_feasible({"latency_ms": 3.0}, {"latency_ms": 2.0})
    assert not is_feasible({"latency_ms": math.nan}, {"latency_ms": 2.0})
    assert not is_feasible({}, {"latency_ms": 2.0})
    assert is_feasible({}, {})


def test_hypervolume_fraction_is_the_share_of_the_reference_box() -> None:
    values = np.array([[0.9, 4.0], [0.5, 2.0]])
    reference = reference_point({"latency_ms": 10.0 / 1.1}, {"accuracy": "max", "latency_ms": "min"})
    assert reference == pytest.approx([0.0, 10.0])
    raw = hypervolume(values, ["max", "min"], reference)
    assert hypervolume_fraction(values, ["max", "min"], reference) == pytest.approx(raw / 10.0)
    # the ideal point itself fills the whole box
    assert hypervolume_fraction(np.array([[1.0, 0.0]]), ["max", "min"], reference) == pytest.approx(1.0)
    assert hypervolume_fraction(np.zeros((0, 2)), ["max", "min"], reference) == 0.0
