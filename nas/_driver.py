"""The search driver: Optuna proposes, Ray Tune evaluates, the study records the truth."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import TrialState

from evaluators import TrialEvaluator
from nas._driver_id import HEARTBEAT_SECONDS
from nas._ray_backend import StudySearcher, WorkerFailures, run_tune
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
    max_retries: int = 2,
    on_retry: Callable[[int, int, str], None] | None = None,
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
        max_retries: how many times a trial whose worker process or node died is run
            again (same arch, same number) before it is recorded FAIL.
        on_retry: called in the driver with (trial number, retry, cause) before a trial
            whose worker died is run again.

    A study shared with other drivers (``adapter.exclusive`` false) keeps the heartbeat of
    this driver's running trials, stops proposing when the study holds ``n_trials``
    finished or running trials, and waits at the end for the trials other drivers run.

    Returns:
        How many trials ran and for how long.
    """
    adapter.close_interrupted()
    remaining = n_trials - adapter.finished_count()
    first = len(adapter.study.trials)
    start = time.perf_counter()

    def tune_round(count: int, segment: str, study_limit: int | None = None) -> None:
        failures = WorkerFailures(max_retries, on_retry)
        searcher = StudySearcher(adapter, count, evaluator.metrics(), on_trial_end,
                                 prefetch=prefetch, guard=evaluator.proposal_guard,
                                 study_limit=study_limit, failures=failures)
        try:
            run_tune(
                evaluator=evaluator,
                searcher=searcher,
                num_samples=count,
                max_concurrent=max_concurrent,
                resources=resources,
                storage_path=tune_dir,
                name=segment,
                failures=failures,
            )
        finally:
            searcher.close()
            adapter.close_interrupted()

    with _heartbeat(adapter):
        if remaining > 0:
            tune_round(remaining, name, None if adapter.exclusive else n_trials)
        if not adapter.exclusive:
            _wait_for_other_drivers(adapter)
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
        with _heartbeat(adapter):
            tune_round(len(pending), f"{name}-remeasure-{attempt}")
    return SearchRun(first, len(adapter.study.trials) - first, time.perf_counter() - start)


@contextmanager
def _heartbeat(adapter: StudyAdapter) -> Iterator[None]:
    """Renews the heartbeat of ``adapter``'s running trials every ``HEARTBEAT_SECONDS``
    while the block runs, where other drivers share the study."""
    if adapter.exclusive:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                adapter.beat()
            except Exception as exc:  # noqa: BLE001 - a lost beat is renewed by the next
                logger.warning("could not renew the trials' heartbeat: %s", exc)

    thread = threading.Thread(target=beat, name="hwnas-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _wait_for_other_drivers(adapter: StudyAdapter, poll_seconds: float = 2.0) -> None:
    """Waits until no other live driver runs a trial of the shared study (a driver that
    dies meanwhile is noticed by its heartbeat, and its trials are closed)."""
    running = adapter.running_elsewhere()
    if running:
        logger.warning("waiting for %d trial(s) other drivers of the study run: %s",
                       len(running), ", ".join(map(str, running)))
    while running:
        time.sleep(poll_seconds)
        adapter.close_interrupted()
        running = adapter.running_elsewhere()
