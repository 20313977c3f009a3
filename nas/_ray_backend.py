"""Everything that touches Ray: the session, the study-backed searcher, the Tune run.

The rest of the code base works without importing Ray.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.search import Searcher

from evaluators import TrialEvaluator, process_title
from nas._config import RayConfig
from nas._study import StudyAdapter
from search_spaces import Arch

logger = logging.getLogger(__name__)

WORKER_FAILED = "the trial's worker process failed (see the Ray Tune logs under tune/)"


@dataclass(frozen=True)
class RaySessionInfo:
    """How to reach the Ray cluster a search runs on."""

    started_here: bool
    dashboard_url: str | None
    token_auth: bool

    def login_hint(self) -> str:
        """Returns how to open the dashboard, token authentication included."""
        if not self.dashboard_url:
            return "Ray dashboard: off"
        url = self.dashboard_url if "://" in self.dashboard_url else f"http://{self.dashboard_url}"
        if self.token_auth:
            return (
                f"Ray dashboard: {url} (token authentication is on: paste the token that "
                "`ray get-auth-token` prints, also kept in ~/.ray/auth_token, when the page asks)"
            )
        return f"Ray dashboard: {url}"


@contextlib.contextmanager
def ray_session(config: RayConfig) -> Iterator[RaySessionInfo]:
    """Starts a local Ray (dashboard bound to ``config.dashboard_host``) or joins
    ``config.address``; shuts down only what it started.

    Raises:
        ConnectionError: the configured cluster cannot be reached.
    """
    if ray.is_initialized():
        yield RaySessionInfo(False, _dashboard_url(), _token_auth())
        return
    # Workers inherit the driver's environment; keep Tune quiet and its output ours.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # glibc gives every thread of a process its own malloc arena; Ray workers run dozens
    # of threads, and the arenas alone doubled a trial worker's memory (1.2 GiB -> 0.7 GiB
    # with two). Processes started from here (raylet, workers) inherit the setting.
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    if config.address is None:
        context = ray.init(
            num_cpus=config.num_cpus,
            include_dashboard=config.dashboard,
            dashboard_host=config.dashboard_host,
            dashboard_port=config.dashboard_port,
            object_store_memory=config.object_store_memory_mb * 2**20,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    else:
        context = ray.init(address=config.address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield RaySessionInfo(True, getattr(context, "dashboard_url", None) or None, _token_auth())
    finally:
        ray.shutdown()


def _dashboard_url() -> str | None:
    with contextlib.suppress(Exception):
        return ray.get_runtime_context().dashboard_url or None  # type: ignore[attr-defined]
    return None


def _token_auth() -> bool:
    with contextlib.suppress(Exception):
        from ray._raylet import (  # type: ignore[attr-defined]
            AuthenticationMode,
            get_authentication_mode,
        )

        return bool(get_authentication_mode() == AuthenticationMode.TOKEN)
    return os.environ.get("RAY_AUTH_MODE", "").lower() == "token"


class StudySearcher(Searcher):
    """A Tune searcher whose every decision goes through a ``StudyAdapter``.

    With ``prefetch``, the next arch is proposed in a background thread as soon as one is
    handed out, so a slow sampler thinks while the trials run rather than while a slot
    waits. The study is touched by one thread at a time: a result is recorded only after
    the proposal in flight has finished, so that proposal always sees the same trials as
    running, whatever the timing. ``guard`` is held while proposing ahead (the device's
    compute lock, so the proposal never overlaps a latency measurement on the same host).
    """

    def __init__(
        self,
        adapter: StudyAdapter,
        budget: int,
        metric_names: tuple[str, ...],
        on_trial_end: Callable[[int, TrialState], None] | None = None,
        *,
        prefetch: bool = False,
        guard: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        super().__init__(metric=None, mode=None)
        self._adapter = adapter
        self._keep = (*metric_names, "error", "done")
        self._budget = budget
        self._issued = 0
        self._numbers: dict[str, int] = {}
        self._last: dict[str, dict[str, Any]] = {}
        self._on_trial_end = on_trial_end
        self._prefetch = prefetch
        self._guard = guard
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: Future[tuple[int, Arch]] | None = None

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        if self._issued >= self._budget:
            return Searcher.FINISHED
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            number, arch = ahead.result()  # a failed proposal raises here, as it would inline
            self._adapter.dispatched(number)
        else:
            number, arch = self._adapter.ask()
        self._issued += 1
        self._numbers[trial_id] = number
        if self._prefetch and self._issued < self._budget:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hwnas-propose")
            self._ahead = self._pool.submit(self._ask_ahead)
        return {"arch": arch.key(), "number": number}

    def _ask_ahead(self) -> tuple[int, Arch]:
        with self._guard():
            return self._adapter.ask()

    def close(self) -> None:
        """Waits for a proposal in flight and stops the proposing thread; a trial proposed
        ahead but never handed out stays RUNNING, and the driver closes it as interrupted."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._ahead = None

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self._last[trial_id] = result

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        number = self._numbers.pop(trial_id, None)
        if number is None:
            return
        if self._ahead is not None:  # that proposal sees this trial as running, always
            wait([self._ahead])
        result = result or self._last.get(trial_id)
        self._last.pop(trial_id, None)
        if result is not None:  # drop Tune's bookkeeping (pid, timestamps, config/...)
            result = {key: value for key, value in result.items() if key in self._keep}
        message = WORKER_FAILED if error and not (result and result.get("error")) else None
        state = self._adapter.tell_result(number, result, message)
        if self._on_trial_end is not None:
            self._on_trial_end(number, state)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its configuration (searcher included) into the experiment folder.
        # The study is the record of the search, so only the counters travel.
        state = dict(self.__dict__)
        state["_adapter"] = state["_on_trial_end"] = state["_pool"] = state["_ahead"] = None
        state["_guard"] = contextlib.nullcontext
        return state

    def save(self, checkpoint_path: str) -> None:
        """Saves nothing: the Optuna study is the search's state and resumes it."""

    def restore(self, checkpoint_path: str) -> None:
        """Restores nothing: a resumed run reopens the Optuna study instead."""

    def pending(self) -> list[int]:
        """Returns the trial numbers issued but not yet told."""
        return list(self._numbers.values())


def nas_trial(config: Mapping[str, Any], evaluator: TrialEvaluator) -> None:
    """The Tune trainable: evaluates one arch and reports its metrics once.

    Ray's dashboard lists its worker actors as ``nas_trial``; while a trial runs, the
    worker's process title names it (``ray::trial_7``, then ``ray::trial_7 · latency
    meter [cpu]`` while it is timed), as do ``ps`` and ``top``. An evaluation error is
    reported as the ``error`` metric (the trial then becomes FAIL with that message)
    instead of crashing the worker.
    """
    arch = Arch.from_json(str(config["arch"]))
    with process_title(f"trial_{config.get('number', '?')}"):
        try:
            metrics = evaluator(arch)
        except Exception as exc:  # noqa: BLE001 - one candidate's failure must not stop the search
            logger.warning("trial %s failed: %s", config.get("number"), exc)
            tune.report({"error": f"{type(exc).__name__}: {exc}"})
            return
        tune.report({**metrics, "done": True})


def run_tune(
    *,
    evaluator: TrialEvaluator,
    searcher: StudySearcher,
    num_samples: int,
    max_concurrent: int,
    resources: Mapping[str, float],
    storage_path: Path,
    name: str,
) -> None:
    """Runs ``num_samples`` trials through Ray Tune, ``max_concurrent`` at a time."""
    trainable = tune.with_resources(
        tune.with_parameters(nas_trial, evaluator=evaluator),
        tune.PlacementGroupFactory([dict(resources)]),
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
            reuse_actors=True,
            trial_name_creator=lambda trial: f"trial_{trial.config.get('number', trial.trial_id)}",
            trial_dirname_creator=lambda trial: f"trial_{trial.config.get('number', trial.trial_id)}",
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage_path.resolve()),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),
    )
    tuner.fit()
