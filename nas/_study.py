"""The Optuna study behind a search, kept truthful whatever happens to the driver.

Ray's ``OptunaSearch`` records a multi-objective trial that stopped early as COMPLETE and
leaves trials RUNNING after a killed driver. This adapter asks and tells the study itself:
a trial is COMPLETE only when it reported every objective, PRUNED when it stopped short,
FAIL (with the reason in the ``error`` user attribute) when it raised or was interrupted.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from nas._driver_id import DRIVER_ATTR, HEARTBEAT_ATTR, DriverId
from nas._storage import open_storage, redacted
from nas.samplers import CheapObjectives, DistinctArchSampler, SamplerContext, build_sampler
from evaluators import TrialEvaluator
from pareto import Direction, front_hypervolume, is_feasible, search_front
from search_spaces import Arch, ChoiceSpace

logger = logging.getLogger(__name__)

INTERRUPTED = "interrupted: the driver stopped before this trial finished"
#: Columns every trials table has, in this order (objectives and extra metrics follow).
BASE_COLUMNS = [
    "number", "state", "accuracy", "latency_ms", "latency_cv", "params", "macs",
    "arch", "error", "feasible", "seconds", "latency_reliable", "latency_note",
]
_TEXT_COLUMNS = ("state", "arch", "error", "latency_note")

# user attribute of a trial that measures an earlier trial's arch again: that trial's number
REMEASURE_OF = "remeasure_of"
# when a trial proposed ahead of time was handed to a worker (Unix seconds)
DISPATCHED_AT = "dispatched_at"


@dataclass(frozen=True)
class Objectives:
    """The objective names with their directions, and upper-bound constraints."""

    directions: dict[str, Direction]
    constraints: dict[str, float]

    @property
    def names(self) -> list[str]:
        """Returns the objective names in order."""
        return list(self.directions)

    def violations(self, metrics: Mapping[str, float]) -> list[float]:
        """Returns ``value - bound`` per constraint (<= 0 means satisfied)."""
        return [float(metrics[name]) - bound for name, bound in self.constraints.items()]


def make_sampler(
    name: str,
    *,
    seed: int,
    objectives: Objectives,
    space: ChoiceSpace | None = None,
    known: CheapObjectives | None = None,
    max_concurrent: int = 1,
    **options: Any,
) -> optuna.samplers.BaseSampler:
    """Returns the seeded sampler registered as ``name`` (see ``nas.samplers``), built with
    its ``options`` and what a search knows: the space's choices and declared features,
    and the objectives ``known`` cheaply (a sampler's own option, such as ``model_based``'s
    ``cheap_objectives: false``, decides whether it uses them). Given the space, the
    sampler is guarded so that no arch is proposed twice (``DistinctArchSampler``).

    Constraints reach the samplers that support them through ``Trial.set_constraint``,
    which the study adapter calls before telling a trial's values.

    Raises:
        SamplerError: an unknown sampler name (the message lists the registered ones).
        pydantic.ValidationError: options the sampler does not take.
    """
    context = SamplerContext(
        seed=seed, objectives=tuple(objectives.names),
        choices=dict(space.choices()) if space is not None else {},
        cheap_objectives=known,
        features=space.features if space is not None else None,
        canonical=(lambda params: dict(space.decode(params))) if space is not None else None,
        max_concurrent=max_concurrent,
    )
    sampler = build_sampler(name, context, **options)
    if space is None:
        return sampler
    return DistinctArchSampler(sampler, context.choices, canonical=context.canonical, seed=seed)


def cheap_objectives(
    evaluator: TrialEvaluator, space: ChoiceSpace, objectives: Objectives
) -> CheapObjectives | None:
    """Returns the objectives ``evaluator`` knows without evaluating (its
    ``cheap_metrics``) as a sampler takes them: params of candidates -> values in the
    study's objective order, NaN where unknown. None when it knows none of the objectives.
    """
    names = objectives.names
    if not set(evaluator.cheap_metric_names()) & set(names):
        return None

    def values(params: Sequence[dict[str, Any]]) -> np.ndarray:
        known = evaluator.cheap_metrics([space.decode(p) for p in params])
        out = np.full((len(params), len(names)), np.nan)
        for k, name in enumerate(names):
            if name in known:
                out[:, k] = np.asarray(known[name], dtype=float)
        return out

    return values


class StudyAdapter:
    """Asks the study for architectures and tells it what became of them."""

    def __init__(
        self,
        study: optuna.Study,
        space: ChoiceSpace,
        objectives: Objectives,
        reference_point: Sequence[float] | None = None,
        *,
        exclusive: bool = True,
    ) -> None:
        """``exclusive``: this driver alone writes the study (the run's SQLite file, under the
        run directory's lock), so every trial left RUNNING is its own; otherwise trials are
        closed only when their driver is gone (see ``nas._driver_id``)."""
        self.study = study
        self.exclusive = exclusive
        self.driver = DriverId.new()
        self.space = space
        self.objectives = objectives
        self.reference_point = list(reference_point) if reference_point is not None else None
        self._distributions: dict[str, BaseDistribution] = {
            name: CategoricalDistribution(list(values)) for name, values in space.choices().items()
        }
        self._started: dict[int, float] = {}

    def close_interrupted(self) -> int:
        """Marks FAIL every RUNNING or WAITING trial left by a driver that is gone (a killed
        one, or this one's earlier round): all of them when the study is exclusive. Returns
        how many."""
        stale = [t for t in self.study.get_trials(
                     deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
                 if self.exclusive or self._abandoned(t)]
        storage = self.study._storage
        study_id = storage.get_study_id_from_name(self.study.study_name)
        for trial in stale:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_user_attr(trial_id, "error", INTERRUPTED)
            storage.set_trial_user_attr(trial_id, "interrupted", True)
            self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        if stale:
            logger.info("marked %d interrupted trial(s) FAIL", len(stale))
        return len(stale)

    def _abandoned(self, trial: optuna.trial.FrozenTrial) -> bool:
        """Returns whether no live driver runs ``trial`` (one without a driver: a version
        that recorded none)."""
        owner = DriverId.parse(trial.user_attrs.get(DRIVER_ATTR))
        return owner is None or owner.is_gone(trial.user_attrs.get(HEARTBEAT_ATTR), self.driver)

    def running_elsewhere(self) -> list[int]:
        """Returns the numbers of the trials other live drivers run now."""
        return [t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if not self._abandoned(t)]

    def beat(self) -> None:
        """Renews the heartbeat of this driver's running trials (other drivers of a shared
        study then leave them alone)."""
        storage, now = self.study._storage, time.time()
        for number in list(self._started):
            try:
                storage.set_trial_user_attr(self._trial_id(number), HEARTBEAT_ATTR, now)
            except (optuna.exceptions.UpdateFinishedTrialError, KeyError, RuntimeError):
                pass  # told meanwhile

    def claimed_count(self) -> int:
        """Returns the trials that count towards ``n_trials`` or are running now, in every
        driver of the study (a shared study's drivers stop asking at ``n_trials``)."""
        return self.finished_count() + len(self.running_elsewhere()) + len(self._started)

    def finished_count(self) -> int:
        """Returns the trials that count towards ``n_trials``: all finished ones but the
        interrupted ones and the re-measurements of an earlier trial."""
        return sum(
            1
            for t in self.study.get_trials(deepcopy=False)
            if t.state.is_finished() and not t.user_attrs.get("interrupted", False)
            and REMEASURE_OF not in t.user_attrs
        )

    def to_remeasure(self, limit: int) -> list[optuna.trial.FrozenTrial]:
        """Returns, per arch whose every COMPLETE trial has a latency the device could not
        measure reliably and that was measured again fewer than ``limit`` times, its latest
        such trial."""
        trials = self.study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        reliable = {t.user_attrs.get("arch") for t in complete
                    if t.user_attrs.get("latency_reliable", True)}
        tries: dict[str, int] = {}
        for t in trials:
            if REMEASURE_OF in t.user_attrs and t.state.is_finished() \
                    and not t.user_attrs.get("interrupted", False):
                arch = str(t.user_attrs.get("arch"))
                tries[arch] = tries.get(arch, 0) + 1
        latest: dict[str, optuna.trial.FrozenTrial] = {}
        for t in complete:
            arch = str(t.user_attrs.get("arch"))
            if not t.user_attrs.get("latency_reliable", True) and arch not in reliable \
                    and tries.get(arch, 0) < limit:
                latest[arch] = t
        return list(latest.values())

    def enqueue_remeasure(self, trial: optuna.trial.FrozenTrial) -> None:
        """Queues ``trial``'s arch to be evaluated and measured again; the new trial records
        which one it re-measures and does not count towards ``n_trials``."""
        self.study.enqueue_trial(dict(trial.params), skip_if_exists=False, user_attrs={
            REMEASURE_OF: trial.number, DRIVER_ATTR: self.driver.key(), HEARTBEAT_ATTR: time.time()})

    def ask(self) -> tuple[int, Arch]:
        """Returns a new trial's number and the arch it proposes."""
        trial = self.study.ask(self._distributions)
        arch = self.space.decode(trial.params)
        trial.set_user_attr("arch", arch.key())
        now = time.time()
        trial.set_user_attr(DRIVER_ATTR, self.driver.key())
        trial.set_user_attr(HEARTBEAT_ATTR, now)
        self._started[trial.number] = now
        return trial.number, arch

    def dispatched(self, number: int) -> None:
        """Starts trial ``number``'s clock now: it was proposed ahead of time and is handed
        to a worker only now (its ``seconds`` and ``started_at`` count from here)."""
        now = time.time()
        self._started[number] = now
        optuna.trial.Trial(self.study, self._trial_id(number)).set_user_attr(DISPATCHED_AT, now)

    def tell_result(self, number: int, result: Mapping[str, Any] | None, error: str | None) -> TrialState:
        """Records the outcome of trial ``number`` and returns the state it was given.

        COMPLETE needs a finite value of every objective; an ``error`` makes it FAIL; a
        result without every objective (stopped early) makes it PRUNED.
        """
        trial = optuna.trial.Trial(self.study, self._trial_id(number))
        seconds = time.time() - self._started.pop(number, time.time())
        trial.set_user_attr("seconds", seconds)
        result = dict(result or {})
        for key, value in result.items():
            if key == "latency_reliable":  # reported as 0/1 through Tune
                trial.set_user_attr(key, bool(value))
            elif key in ("latency_note", "node"):
                trial.set_user_attr(key, str(value)[:2000])
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "done":
                trial.set_user_attr(key, float(value))
        if error is None and result.get("error"):
            error = str(result["error"])
        values = [result.get(name) for name in self.objectives.names]
        complete = all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
        if error is not None:
            trial.set_user_attr("error", error[:2000])
            state = TrialState.FAIL
        elif not complete:
            trial.set_user_attr("error", "stopped before it reported every objective")
            state = TrialState.PRUNED
        else:
            state = TrialState.COMPLETE
        if state == TrialState.COMPLETE:
            for (name, _), violation in zip(
                self.objectives.constraints.items(), self.objectives.violations(result)
            ):
                trial.set_constraint(name, violation)
        told = [float(v) for v in values if v is not None] if state == TrialState.COMPLETE else None
        self.study.tell(number, told, state=state)
        return state

    def _trial_id(self, number: int) -> int:
        storage = self.study._storage
        study_id = storage.get_study_id_from_name(self.study.study_name)
        return storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def frame(self) -> pd.DataFrame:
        """Returns the trials table (one row per trial, failed ones included)."""
        return trials_frame(self.study, self.objectives)

    def front_size_and_hypervolume(self, frame: pd.DataFrame | None = None) -> tuple[int, float]:
        """Returns the size of the feasible front and its hypervolume fraction (the report's
        figure, see ``pareto.hypervolume_fraction``), from ``frame`` (a trials table just
        read) or from the study."""
        frame = self.frame() if frame is None else frame
        directions = self.objectives.directions
        size = len(search_front(frame, directions))
        return size, front_hypervolume(frame, directions, self.reference_point)


def open_study(
    storage_url: str, study_name: str, objectives: Objectives,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> optuna.Study:
    """Returns the study named ``study_name`` in ``storage_url``, created if missing, with the
    objective names set. Without ``sampler`` it has Optuna's default until the caller
    sets ``study.sampler`` (a study whose trials are all done needs none).

    Raises:
        ValueError: an existing study has other objectives.
    """
    storage = open_storage(storage_url)  # raises StorageError
    directions: list[StudyDirection] = [
        StudyDirection.MINIMIZE if d == "min" else StudyDirection.MAXIMIZE
        for d in objectives.directions.values()
    ]
    study = optuna.create_study(
        storage=storage, study_name=study_name, sampler=sampler, directions=directions,
        load_if_exists=True,
    )
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(objectives.names)
    elif list(study.metric_names) != objectives.names:
        raise ValueError(
            f"the study in {redacted(storage_url)} optimises {study.metric_names}, not {objectives.names}; "
            "use a new run directory for other objectives"
        )
    return study


def trials_frame(study: optuna.Study, objectives: Objectives) -> pd.DataFrame:
    """Returns one row per trial: number, state, metrics, arch JSON, error, feasibility."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "arch": attrs.get("arch", json.dumps(t.params, sort_keys=True)),
            "error": attrs.get("error", ""),
            "seconds": attrs.get("seconds", np.nan),
            # wall-clock times (Unix seconds): hypervolume against time in the report
            "started_at": attrs.get(DISPATCHED_AT,
                                    t.datetime_start.timestamp() if t.datetime_start else np.nan),
            "finished_at": t.datetime_complete.timestamp() if t.datetime_complete else np.nan,
            "latency_reliable": bool(attrs.get("latency_reliable", True)),
            "latency_note": str(attrs.get("latency_note", "")),
        }
        for key, value in attrs.items():
            if key in row or key in (DISPATCHED_AT, HEARTBEAT_ATTR):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[key] = float(value)
            elif key == "node":  # the Ray node the trial ran on (its latency measured there)
                row[key] = str(value)
        if t.state == TrialState.COMPLETE and t.values is not None:
            for name, value in zip(objectives.names, t.values):
                row[name] = float(value)
        row["feasible"] = t.state == TrialState.COMPLETE and is_feasible(row, objectives.constraints)
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in BASE_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype=object if column in _TEXT_COLUMNS else float)
    extra = [c for c in frame.columns if c not in BASE_COLUMNS and c != "interrupted"]
    frame = frame[BASE_COLUMNS + sorted(extra)]
    frame["number"] = frame["number"].astype("int64")
    frame["feasible"] = frame["feasible"].astype(bool)
    frame["error"] = frame["error"].fillna("").astype(str)
    frame["latency_note"] = frame["latency_note"].fillna("").astype(str)
    if "node" in frame.columns:
        frame["node"] = frame["node"].fillna("").astype(str)
    frame["latency_reliable"] = frame["latency_reliable"].fillna(True).astype(bool)
    return frame.sort_values("number").reset_index(drop=True)


def pareto_frame(frame: pd.DataFrame, objectives: Objectives) -> pd.DataFrame:
    """Returns exactly the COMPLETE, feasible, non-dominated rows of a trials table."""
    return search_front(frame, objectives.directions)
