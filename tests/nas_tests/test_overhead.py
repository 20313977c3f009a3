"""Steady-state orchestration overhead, read from the trials table."""

from __future__ import annotations

import pandas as pd
import pytest

from nas._overhead import trial_overhead


def _frame(slots: int, n: int, *, eval_s: float, inside_s: float, gap_s: float, startup_s: float) -> pd.DataFrame:
    rows, free_at = [], [0.0] * slots
    for i in range(n):
        slot = i % slots
        start = free_at[slot] + gap_s
        seconds = eval_s + inside_s + (startup_s if i < slots else 0.0)
        rows.append({"number": i, "started_at": start, "finished_at": start + seconds,
                     "seconds": seconds, "eval_seconds": eval_s})
        free_at[slot] = start + seconds
    return pd.DataFrame(rows)


def test_overhead_separates_worker_start_from_each_trial() -> None:
    overhead = trial_overhead(_frame(1, 12, eval_s=5.0, inside_s=0.1, gap_s=0.15, startup_s=10.0), slots=1)
    assert overhead is not None
    assert overhead.inside_seconds == pytest.approx(0.1)
    assert overhead.between_seconds == pytest.approx(0.15)
    assert overhead.startup_seconds == pytest.approx(10.0)
    assert overhead.share == pytest.approx(0.25 / 5.25)
    assert overhead.trials == 11


def test_too_few_trials_give_no_figure() -> None:
    assert trial_overhead(_frame(2, 3, eval_s=1.0, inside_s=0.1, gap_s=0.1, startup_s=1.0), slots=2) is None
    assert trial_overhead(pd.DataFrame({"seconds": [1.0]}), slots=1) is None
