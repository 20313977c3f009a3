from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from nas import Objectives, StudyAdapter, make_sampler, open_study, pareto_frame
from nas._study import BASE_COLUMNS, INTERRUPTED
from search_spaces import TableSpace

SPACE = TableSpace("toy", {"a": [1, 2, 3], "b": ["x", "y"]})
OBJECTIVES = Objectives({"accuracy": "max", "latency_ms": "min"}, {"latency_ms": 5.0})


def adapter_for(tmp_path: Path, sampler: str = "nsga2") -> StudyAdapter:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(url, "toy", OBJECTIVES, make_sampler(sampler, seed=0, objectives=OBJECTIVES))
    return StudyAdapter(study, SPACE, OBJECTIVES, reference_point=[0.0, 10.0])


def full(acc: float, lat: float) -> dict[str, float]:
    return {"accuracy": acc, "latency_ms": lat, "latency_cv": 0.01, "params": 10.0, "macs": 20.0, "done": 1.0}


def test_states_tell_the_truth(tmp_path: Path) -> None:
    adapter = adapter_for(tmp_path)
    outcomes = []
    for result, error in [
        (full(0.9, 3.0), None),  # COMPLETE
        ({"accuracy": 0.8}, None),  # stopped before latency: PRUNED, never COMPLETE
        (None, "RuntimeError: out of memory"),  # FAIL with its reason
        ({"accuracy": float("nan"), "latency_ms": 1.0}, None),  # NaN: not COMPLETE
        ({"error": "ValueError: loss became nan"}, None),  # reported error: FAIL
    ]:
        number, arch = adapter.ask()
        assert arch in set(SPACE.enumerate())
        outcomes.append(adapter.tell_result(number, result, error))
    assert outcomes == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.PRUNED, TrialState.FAIL]
    frame = adapter.frame()
    assert list(frame.columns[: len(BASE_COLUMNS)]) == BASE_COLUMNS
    assert frame.loc[2, "error"] == "RuntimeError: out of memory"
    assert frame.loc[4, "error"] == "ValueError: loss became nan"
    assert frame.loc[0, "accuracy"] == 0.9 and bool(frame.loc[0, "feasible"])
    # the study agrees with the table
    study_trials = adapter.study.get_trials()
    assert [t.state.name for t in study_trials] == frame["state"].tolist()
    assert study_trials[0].values == [0.9, 3.0]
    assert adapter.study.metric_names == ["accuracy", "latency_ms"]


def test_interrupted_trials_are_closed_fail_and_not_counted(tmp_path: Path) -> None:
    adapter = adapter_for(tmp_path)
    number, _ = adapter.ask()
    adapter.tell_result(number, full(0.5, 1.0), None)
    adapter.ask()  # left RUNNING, as by a killed driver
    adapter.ask()
    reopened = adapter_for(tmp_path)
    assert reopened.close_interrupted() == 2
    states = [t.state for t in reopened.study.get_trials()]
    assert TrialState.RUNNING not in states and states.count(TrialState.FAIL) == 2
    assert reopened.finished_count() == 1
    assert reopened.frame()["error"].tolist()[1:] == [INTERRUPTED, INTERRUPTED]


def test_front_respects_constraints_and_hypervolume(tmp_path: Path) -> None:
    adapter = adapter_for(tmp_path)
    for acc, lat in [(0.9, 4.0), (0.95, 6.0), (0.5, 2.0), (0.4, 3.0)]:
        number, _ = adapter.ask()
        adapter.tell_result(number, full(acc, lat), None)
    frame = adapter.frame()
    assert frame["feasible"].tolist() == [True, False, True, True]
    front = pareto_frame(frame, OBJECTIVES)
    assert sorted(front["number"].tolist()) == [0, 2]
    size, hv = adapter.front_size_and_hypervolume()
    # the fraction of the box from the ideal (1, 0) to the reference (0, 10)
    assert size == 2 and hv == pytest.approx((0.9 * 6 + 0.5 * 2) / (1.0 * 10.0))


def test_existing_study_with_other_objectives_is_refused(tmp_path: Path) -> None:
    adapter_for(tmp_path)
    other = Objectives({"accuracy": "max", "params": "min"}, {})
    with pytest.raises(ValueError, match="optimises"):
        open_study(f"sqlite:///{tmp_path / 'study.db'}", "toy", other, optuna.samplers.RandomSampler())


def test_trials_frame_round_trips_through_parquet(tmp_path: Path) -> None:
    adapter = adapter_for(tmp_path)
    number, _ = adapter.ask()
    adapter.tell_result(number, full(0.7, 1.0), None)
    adapter.frame().to_parquet(tmp_path / "t.parquet")
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert back.loc[0, "state"] == "COMPLETE" and back.loc[0, "latency_cv"] == 0.01
