"""How much of a trial slot's time the search spends outside evaluation, from the trials table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class TrialOverhead:
    """Orchestration time per trial in steady state, after the workers have started.

    ``inside_seconds`` is a trial's time outside its evaluation (receiving the arch,
    reporting); ``between_seconds`` how long a slot stood idle before the trial began
    (Ray scheduling, the sampler's proposal, recording the last result); ``share`` their
    sum over a whole trial's slot time. Medians over the trials after the first of each
    slot, whose time includes starting a worker (``startup_seconds``, in all).
    """

    inside_seconds: float
    between_seconds: float
    share: float
    startup_seconds: float
    trials: int


def trial_overhead(frame: pd.DataFrame, slots: int) -> TrialOverhead | None:
    """Returns the steady-state overhead of the trials in ``frame`` (columns ``started_at``,
    ``finished_at``, ``seconds``, ``eval_seconds``), run ``slots`` at a time; None when
    fewer than ``slots + 2`` trials have both times."""
    needed = ["started_at", "finished_at", "seconds", "eval_seconds"]
    if any(c not in frame for c in needed):
        return None
    done = frame.dropna(subset=needed).sort_values("started_at")
    if len(done) < slots + 2:
        return None
    starts = done["started_at"].to_numpy(float)
    ends = np.sort(done["finished_at"].to_numpy(float))
    outside = (done["seconds"] - done["eval_seconds"]).to_numpy(float)
    steady = slice(slots, None)  # each slot's first trial also started its worker
    gaps = []
    for start in starts[steady]:
        before = ends[ends <= start]
        gaps.append(start - before.max() if len(before) else 0.0)
    inside = float(np.median(outside[steady]))
    between = float(np.median(gaps))
    trial = float(np.median(done["seconds"].to_numpy(float)[steady]))
    startup = float((outside[:slots] - inside).clip(min=0).sum())
    return TrialOverhead(inside, between, (inside + between) / max(trial + between, 1e-9),
                         startup, len(done) - slots)
