"""Everything that touches Ray: the session, the study-backed searcher, the Tune run.

The rest of the code base works without importing Ray.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune import Callback
from ray.tune.search import Searcher

from evaluators import TrialEvaluator, process_title
from nas._config import RayConfig
from nas._ports import free_port, port_is_free
from nas._study import StudyAdapter
from search_spaces import Arch

logger = logging.getLogger(__name__)

WORKER_FAILED = "the trial's worker process or its node died"


class WorkerFailures(Callback):
    """Tune callback: which trials' workers died, why, and how often each was run again
    (Tune retries a trial whose worker process or node died, ``max_failures`` times; the
    searcher hears only of the last failure)."""

    def __init__(self, max_retries: int,
                 on_retry: Callable[[int, int, str], None] | None = None) -> None:
        self.max_retries = max_retries
        self._on_retry = on_retry
        self._trials: dict[str, Any] = {}
        self.retries: dict[str, int] = {}

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._trials[trial.trial_id] = trial

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        count = self.retries[trial.trial_id] = self.retries.get(trial.trial_id, 0) + 1
        number = int(trial.config.get("number", -1))
        cause = self.cause(trial.trial_id)
        logger.warning("trial %s: %s (%s); running it again (%d of %d)", number, WORKER_FAILED,
                       cause, count, self.max_retries)
        if self._on_retry is not None:
            self._on_retry(number, count, cause)

    def cause(self, trial_id: str) -> str:
        """Returns the last error of the trial's worker in one line (``unknown`` if none)."""
        trial = self._trials.get(trial_id)
        text = ""
        with contextlib.suppress(Exception):  # Tune's error.txt: every failure, last at the end
            text = Path(trial.error_file).read_text(encoding="utf-8", errors="replace")
        # the latest "Failure # N (occurred at ...)" block: Ray's message, its first line,
        # and the line that says how the process or node ended, where there is one
        block = re.split(r"^Failure # \d+.*$", text, flags=re.MULTILINE)[-1]
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines:
            return "unknown cause"
        how = [line for line in lines[1:] if re.search(r"exit|kill|died|SIG|OOM|memory", line)]
        return "; ".join([lines[0], *how[:1]])[:300]

    def failure_message(self, trial_id: str) -> str:
        """Returns the FAIL reason of a trial whose worker died on every try."""
        tries = self.retries.get(trial_id, 0) + 1
        return (f"{WORKER_FAILED} ({self.cause(trial_id)}); tried {tries} time"
                f"{'s' if tries > 1 else ''} (search.max_retries: {self.max_retries}); see the "
                "Ray Tune logs under tune/")

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run config into the experiment folder: the live trials stay here
        return {"max_retries": self.max_retries, "_on_retry": None, "_trials": {}, "retries": {}}


@dataclass(frozen=True)
class RaySessionInfo:
    """How to reach the Ray cluster a search runs on."""

    started_here: bool
    dashboard_url: str | None
    token_auth: bool
    note: str = ""  # what the session changed from the config (a busy port replaced)

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


LOOPBACK = ("127.0.0.1", "localhost", "::1")


@contextlib.contextmanager
def _node_ip(address: str) -> Iterator[None]:
    """Makes a local Ray started in the block use ``address`` as its node's IP, which every
    process it starts listens on (GCS, raylet, workers, dashboard agent, metrics). Ray
    replaces a loopback address by the host's unless its "no cluster" switch is on, so
    that switch is set for the block (it only stops ``ray start`` adding worker nodes)."""
    if address not in LOOPBACK:
        yield
        return
    from ray._private import ray_constants

    previous = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous


def private_auth_token() -> Path | None:
    """Makes Ray's token file (``~/.ray/auth_token``) readable by its user alone: creates
    it with mode 0600 (Ray would write it world-readable) or narrows an existing one.
    Returns its path, or ``None`` when token authentication is off or the token comes from
    ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled" \
            or os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return None
    path = Path.home() / ".ray" / "auth_token"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return path
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))  # as Ray's own generate_new_authentication_token
    return path


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
    note = ""
    if config.address is None:
        context, note = _start_local(config)
    else:
        context = ray.init(address=config.address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield RaySessionInfo(True, getattr(context, "dashboard_url", None) or None, _token_auth(),
                             note)
    finally:
        ray.shutdown()


#: a dashboard port taken between the check and Ray's bind (two searches started at once)
#: is replaced this many times before Ray's error stands
_PORT_RACE_RETRIES = 3


def _start_local(config: RayConfig) -> tuple[Any, str]:
    """Starts a local Ray for ``config``; returns its context and a note on what changed
    from the config (a busy dashboard port replaced by a free one, or ``""``)."""
    port, note = config.dashboard_port, ""

    def replace_port() -> None:
        nonlocal port, note
        port = free_port(config.dashboard_host)
        note = (f"dashboard port {config.dashboard_port} on {config.dashboard_host} is in "
                f"use (another search on this host?): the Ray dashboard uses port {port} "
                "instead; set ray.dashboard_port to choose one")

    if config.dashboard and not port_is_free(config.dashboard_host, port):
        replace_port()
    with contextlib.suppress(OSError):  # a read-only home: Ray's own handling then
        private_auth_token()
    retries = 0
    while True:
        try:
            with _node_ip(config.node_ip_address):
                return ray.init(
                    num_cpus=config.num_cpus,
                    include_dashboard=config.dashboard,
                    dashboard_host=config.dashboard_host,
                    dashboard_port=port,
                    object_store_memory=config.object_store_memory_mb * 2**20,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                    _node_ip_address=config.node_ip_address,
                ), note
        except ValueError as exc:  # Ray checks the port before it starts anything
            if not config.dashboard or "already occupied" not in str(exc) \
                    or retries == _PORT_RACE_RETRIES:
                raise
            retries += 1
            ray.shutdown()
            replace_port()


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

    With ``study_limit`` (a study shared with other drivers), it stops proposing once the
    study holds that many trials finished or running, whoever runs them.

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
        study_limit: int | None = None,
        failures: WorkerFailures | None = None,
    ) -> None:
        super().__init__(metric=None, mode=None)
        self._adapter = adapter
        self._keep = (*metric_names, "error", "done", "node")
        self._budget = budget
        self._issued = 0
        self._numbers: dict[str, int] = {}
        self._last: dict[str, dict[str, Any]] = {}
        self._on_trial_end = on_trial_end
        self._prefetch = prefetch
        self._guard = guard
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: Future[tuple[int, Arch]] | None = None
        self._study_limit = study_limit
        self._failures = failures

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        if self._issued >= self._budget:
            return Searcher.FINISHED
        if self._study_limit is not None and self._ahead is None \
                and self._adapter.claimed_count() >= self._study_limit:
            return Searcher.FINISHED  # the other drivers of a shared study run the rest
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
        message = None
        if error and not (result and result.get("error")):
            message = (self._failures.failure_message(trial_id) if self._failures is not None
                       else f"{WORKER_FAILED}; see the Ray Tune logs under tune/")
        retries = self._failures.retries.get(trial_id, 0) if self._failures is not None else 0
        if retries:  # run again after its worker died (and perhaps completed)
            result = {**(result or {}), "retries": retries}
        state = self._adapter.tell_result(number, result, message)
        if self._on_trial_end is not None:
            self._on_trial_end(number, state)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its configuration (searcher included) into the experiment folder.
        # The study is the record of the search, so only the counters travel.
        state = dict(self.__dict__)
        state["_adapter"] = state["_on_trial_end"] = state["_pool"] = state["_ahead"] = None
        state["_failures"] = None
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
    instead of crashing the worker. ``node`` reports the Ray node it ran on, the one its
    latency was measured on.
    """
    arch = Arch.from_json(str(config["arch"]))
    node = ray.get_runtime_context().get_node_id()  # where it runs, latency measured included
    with process_title(f"trial_{config.get('number', '?')}"):
        try:
            metrics = evaluator(arch)
        except Exception as exc:  # noqa: BLE001 - one candidate's failure must not stop the search
            logger.warning("trial %s failed: %s", config.get("number"), exc)
            tune.report({"error": f"{type(exc).__name__}: {exc}", "node": node})
            return
        tune.report({**metrics, "done": True, "node": node})


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """Puts back the SIGINT and SIGUSR1 handlers the block found. Ray Tune installs its own
    for a run and restores the previous one only after it has caught a signal, so without
    this the first Ctrl-C after the search (while compressing, in the same process) would
    reach Tune's stale handler and be swallowed."""
    if threading.current_thread() is not threading.main_thread():  # Tune installs none there
        yield
        return
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGUSR1)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)


def run_tune(
    *,
    evaluator: TrialEvaluator,
    searcher: StudySearcher,
    num_samples: int,
    max_concurrent: int,
    resources: Mapping[str, float],
    storage_path: Path,
    name: str,
    failures: WorkerFailures | None = None,
) -> None:
    """Runs ``num_samples`` trials through Ray Tune, ``max_concurrent`` at a time; a trial
    whose worker process or node died runs again, ``failures.max_retries`` times at most
    (``failures`` also records why and how often; none: no retry)."""
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
            failure_config=tune.FailureConfig(
                max_failures=failures.max_retries if failures is not None else 0,
                fail_fast=False),
            callbacks=[failures] if failures is not None else None,
        ),
    )
    with _signal_handlers_kept():
        tuner.fit()
