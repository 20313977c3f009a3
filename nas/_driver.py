"""The search driver: Optuna proposes, Ray Tune evaluates, the study records the truth."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import TrialState

from evaluators import TrialEvaluator
from nas._ray_backend import StudySearcher, run_tune
from nas._study import StudyAdapter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchRun:
    """What one call of ``run_search`` did."""

    first_trial: int  # number of the first trial it started
    trials_run: int
    seconds: float


def run_search(
    adapter: StudyAdapter,
    evaluator: TrialEvaluator,
    *,
    n_trials: int,
    max_concurrent: int,
    resources: Mapping[str, float],
    tune_dir: Path,
    name: str,
    on_trial_end: Callable[[int, TrialState], None] | None = None,
    remeasure: int = 2,
    prefetch: bool = False,
) -> SearchRun:
    """Runs trials until the study holds ``n_trials`` finished ones (interrupted trials of an
    earlier driver are closed FAIL first and do not count). Needs a Ray session.

    Args:
        adapter: the study to continue and the space it samples.
        evaluator: scores one arch; shipped once to the workers.
        n_trials: the budget of finished trials, those already in the study included.
        max_concurrent: trials evaluated at once.
        resources: the Ray resources one trial needs (e.g. ``{"CPU": 1}``).
        tune_dir: where Ray Tune keeps its experiment folder ``name``.
        on_trial_end: called in the driver after each trial is recorded.
        remeasure: how many times at most a trial whose latency the device could not
            measure reliably is evaluated again (as a new trial, after the others; it does
            not count towards ``n_trials``). Still unreliable, it stays off the front.
        prefetch: propose the next arch while the trials run (under the evaluator's
            ``proposal_guard``), so a slot does not wait for the sampler; each proposal then
            sees one more trial as running.

    Returns:
        How many trials ran and for how long.
    """
    adapter.close_interrupted()
    remaining = n_trials - adapter.finished_count()
    first = len(adapter.study.trials)
    start = time.perf_counter()

    def tune_round(count: int, segment: str) -> None:
        searcher = StudySearcher(adapter, count, evaluator.metrics(), on_trial_end,
                                 prefetch=prefetch, guard=evaluator.proposal_guard)
        try:
            run_tune(
                evaluator=evaluator,
                searcher=searcher,
                num_samples=count,
                max_concurrent=max_concurrent,
                resources=resources,
                storage_path=tune_dir,
                name=segment,
            )
        finally:
            searcher.close()
            adapter.close_interrupted()

    if remaining > 0:
        tune_round(remaining, name)
    # latencies the device could not measure reliably are measured again at the end, when
    # the load that spoiled them may have passed; each arch at most ``remeasure`` times
    for attempt in range(remeasure):
        pending = adapter.to_remeasure(remeasure)
        if not pending:
            break
        logger.warning("measuring %d trial(s) again whose latency was unreliable: %s",
                       len(pending), ", ".join(str(t.number) for t in pending))
        for trial in pending:
            adapter.enqueue_remeasure(trial)
        tune_round(len(pending), f"{name}-remeasure-{attempt}")
    return SearchRun(first, len(adapter.study.trials) - first, time.perf_counter() - start)
