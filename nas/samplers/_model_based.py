"""A model-based multi-objective sampler: surrogates of the expensive objectives, cheap ones
known, the next arch by expected hypervolume improvement over a pool of candidates."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import norm

from nas.samplers._acquisition import chebyshev_ei, ehvi_2d, expected_improvement
from nas.samplers._encoding import CandidatePool, ChoiceEncoder, Features, row_keys
from nas.samplers._registry import CheapObjectives
from nas.samplers._surrogate import Surrogate, copula
from pareto import pareto_mask

logger = logging.getLogger(__name__)


@dataclass
class _SpaceState:
    """What the sampler keeps for one search space: encoder, pool, cheap values."""

    signature: tuple[tuple[str, tuple[Any, ...]], ...]
    encoder: ChoiceEncoder
    pool: CandidatePool
    encoded: np.ndarray
    cheap: np.ndarray
    groups: list[list[int]]  # encoded columns sharing a length scale: one group per choice


class ModelBasedSampler(BaseSampler):
    """Proposes categorical params by expected hypervolume improvement over a pool.

    After ``n_startup_trials`` random archs, each objective that is not known cheaply gets a
    Gaussian-process surrogate over an encoding of the arch (one-hot per choice, the value
    of numeric choices, value counts over choices that share their values, and the
    features the search space declares), with one kernel length scale per choice (not per
    one-hot column) and per other column. Objectives given by ``cheap_objectives`` (a
    table's latency column, a latency model) are used as they are for every candidate.
    The candidate with the largest expected hypervolume improvement over the front of the
    finished trials is proposed (3+ objectives: a random Chebyshev scalarisation's
    expected improvement; a constraint multiplies in its probability of being met). The
    pool is the whole space when it has at most ``max_enumerate`` archs, else
    ``pool_size`` random archs plus every single-choice change of the front. Archs of
    every earlier trial are never proposed again; a running trial counts as finished with
    its predicted values (kriging believer), so concurrent trials get distinct archs.

    Params that are not categorical, or outside the relative search space, come from
    ``independent_sampler``. Proposals depend only on the seed, the trial number and the
    study's trials, so a resumed study continues as an uninterrupted one would.

    Args:
        seed: Seeds the initial design, the pool and the surrogates.
        choices: The search space (name -> values); learned from the finished trials when
            None.
        cheap_objectives: Candidates' params -> ``(n, n_objectives)`` values in the study's
            order, NaN where unknown.
        features: One candidate's params -> structural features the space declares.
        canonical: Params -> the params of the arch they run, where several combinations
            of choices are one network (blocks beyond a stage's depth): archs, not
            combinations, are then proposed once each.
        n_startup_trials: Random archs before the surrogates are used.
        max_enumerate: The largest space used whole as the pool.
        pool_size: Random archs in the pool of a larger space.
        mc_samples: Monte Carlo draws where two uncertain objectives meet.
        copula: Model an objective no candidate knows by the rank of its values (mapped
            to normal quantiles), not the values themselves, and compare the front in
            that scale.
        constraints_func: Finished trial -> constraint values (<= 0 is met); defaults to
            the values set with ``Trial.set_constraint``.
        independent_sampler: Samples what the model does not (default: random).
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        choices: Mapping[str, Sequence[Any]] | None = None,
        cheap_objectives: CheapObjectives | None = None,
        features: Features | None = None,
        canonical: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None,
        n_startup_trials: int = 5,
        max_enumerate: int = 20_000,
        pool_size: int = 4_000,
        mc_samples: int = 64,
        copula: bool = True,
        constraints_func: Callable[[FrozenTrial], Sequence[float]] | None = None,
        independent_sampler: BaseSampler | None = None,
    ) -> None:
        if n_startup_trials < 1:
            raise ValueError(f"n_startup_trials: must be >= 1, got {n_startup_trials}")
        self._seed = seed
        self._choices = {k: tuple(v) for k, v in choices.items()} if choices is not None else None
        self._cheap = cheap_objectives
        self._features = features
        self._canonical = canonical
        self._n_startup = n_startup_trials
        self._max_enumerate = max_enumerate
        self._pool_size = pool_size
        self._mc_samples = mc_samples
        self._copula = copula
        self._constraints_func = constraints_func
        self._independent = independent_sampler or RandomSampler(seed=seed)
        self._intersection = IntersectionSearchSpace()
        self._state: _SpaceState | None = None

    def reseed_rng(self) -> None:
        """Reseeds the independent sampler (proposals themselves are seeded per trial)."""
        self._independent.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """Returns the categorical choices the model proposes: the given ones, or those
        every finished trial shares."""
        if self._choices is not None:
            return {k: CategoricalDistribution(v) for k, v in self._choices.items()}
        return {k: d for k, d in self._intersection.calculate(study).items()
                if isinstance(d, CategoricalDistribution) and not d.single()}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """Returns the independent sampler's value for a param outside the model."""
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """Returns the params of the next arch (empty: nothing left to propose)."""
        space = {k: tuple(d.choices) for k, d in search_space.items()
                 if isinstance(d, CategoricalDistribution)}
        if not space or "fixed_params" in trial.system_attrs:
            return {}
        state = self._space_state(space)
        rng = np.random.default_rng(None if self._seed is None else [self._seed, trial.number])
        names = list(space)
        finished, pending, seen = [], [], set()
        for t in study.get_trials(deepcopy=False):
            if t.number == trial.number or any(n not in t.params for n in names):
                continue
            try:
                row = self._canonical_rows(state.encoder, state.encoder.rows([t.params]))[0]
            except (KeyError, ValueError):
                continue  # a value this space does not have
            seen.add(row.tobytes())
            if t.state == TrialState.COMPLETE and t.values is not None:
                finished.append((row, t))
            elif t.state in (TrialState.RUNNING, TrialState.WAITING):
                pending.append(row)
        if len(finished) >= self._n_startup and not state.pool.enumerated:
            rows = np.array([r for r, _ in finished])
            values = self._minimised(study, [t for _, t in finished])
            self._grow(state, rows[pareto_mask(values, ["min"] * values.shape[1])])
        free = np.array([k not in seen for k in row_keys(state.pool.rows)], dtype=bool)
        candidates = np.flatnonzero(free)
        if not len(candidates):
            logger.warning("every arch of the candidate pool was evaluated; sampling at random")
            return {}
        if len(finished) < self._n_startup:
            choice = int(rng.choice(candidates))
        else:
            scores = self._acquisition(study, state, candidates, finished, pending, rng)
            best = np.flatnonzero(scores >= scores.max() - 1e-12 * max(1.0, abs(scores.max())))
            choice = int(candidates[rng.choice(best)])
        return state.encoder.params(state.pool.rows[choice])

    # -- internals ---------------------------------------------------------------------

    def _space_state(self, space: dict[str, tuple[Any, ...]]) -> _SpaceState:
        signature = tuple(space.items())
        if self._state is None or self._state.signature != signature:
            encoder = ChoiceEncoder(space, self._features)
            pool = CandidatePool([len(v) for v in space.values()], max_enumerate=self._max_enumerate,
                                 size=self._pool_size, seed=self._seed,
                                 canonical=lambda rows: self._canonical_rows(encoder, rows))
            self._state = _SpaceState(signature, encoder, pool, encoder.encode(pool.rows),
                                      self._cheap_values(encoder, pool.rows),
                                      encoder.column_groups(pool.rows))
        return self._state

    def _canonical_rows(self, encoder: ChoiceEncoder, rows: np.ndarray) -> np.ndarray:
        if self._canonical is None:
            return rows
        return encoder.rows([self._canonical(encoder.params(r)) for r in rows])

    def _cheap_values(self, encoder: ChoiceEncoder, rows: np.ndarray) -> np.ndarray:
        if self._cheap is None or not len(rows):
            return np.full((len(rows), 0), np.nan)
        values = np.asarray(self._cheap([encoder.params(r) for r in rows]), dtype=float)
        if values.ndim != 2 or values.shape[0] != len(rows):
            raise ValueError(f"cheap_objectives returned shape {values.shape}, expected "
                             f"({len(rows)}, n_objectives)")
        return values

    def _grow(self, state: _SpaceState, front_rows: np.ndarray) -> None:
        new = state.pool.neighbours(front_rows)
        if len(new):
            state.encoded = np.concatenate([state.encoded, state.encoder.encode(new)])
            cheap = self._cheap_values(state.encoder, new)
            state.cheap = np.concatenate([state.cheap, cheap])

    @staticmethod
    def _minimised(study: Study, trials: Sequence[FrozenTrial]) -> np.ndarray:
        signs = np.array([1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions])
        return np.array([t.values for t in trials], dtype=float) * signs

    def _constraints(self, trial: FrozenTrial) -> list[float]:
        if self._constraints_func is not None:
            return [float(v) for v in self._constraints_func(trial)]
        return [float(v) for _, v in sorted(trial.constraints.items())]

    def _acquisition(
        self, study: Study, state: _SpaceState, candidates: np.ndarray,
        finished: list[tuple[np.ndarray, FrozenTrial]], pending: list[np.ndarray],
        rng: np.random.Generator,
    ) -> np.ndarray:
        n_obj = len(study.directions)
        signs = np.array([1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions])
        rows = np.array([r for r, _ in finished])
        x = state.encoder.encode(rows)
        observed_y = self._minimised(study, [t for _, t in finished])
        y = observed_y.copy()
        pending_rows = np.array(pending, dtype=np.int64).reshape(-1, rows.shape[1])
        x_pending = state.encoder.encode(pending_rows) if len(pending_rows) else x[:0]
        x_pool = state.encoded[candidates]
        cheap = state.cheap[candidates] * signs if state.cheap.size else np.full((len(candidates), n_obj), np.nan)
        seed = None if self._seed is None else int(rng.integers(2**31))

        mean = np.where(np.isnan(cheap), 0.0, cheap)
        sd = np.zeros_like(mean)
        believed_pending = np.zeros((len(pending_rows), n_obj))
        known_pending = (self._cheap_values(state.encoder, pending_rows) * signs
                         if self._cheap is not None and len(pending_rows)
                         else np.full((len(pending_rows), n_obj), np.nan))
        for k in range(n_obj):
            unknown = np.isnan(cheap[:, k])
            pending_cheap = known_pending[:, k]
            needs_model = unknown.any() or np.isnan(pending_cheap).any()
            if not needs_model:
                believed_pending[:, k] = pending_cheap
                continue
            if self._copula and unknown.all() and np.isnan(pending_cheap).all():
                y[:, k] = copula(observed_y[:, k])  # the front is compared in the same scale
            model = Surrogate(seed, state.groups).fit(x, y[:, k])
            if len(pending_rows):
                p_mean, _ = model.predict(x_pending)
                believed_pending[:, k] = np.where(np.isnan(pending_cheap), p_mean, pending_cheap)
                model = model.believe(x, y[:, k], x_pending)
            if unknown.any():
                m, s = model.predict(x_pool[unknown])
                mean[unknown, k], sd[unknown, k] = m, s

        feasible_obs = np.ones(len(finished), dtype=bool)
        probability = np.ones(len(candidates))
        constraints = [self._constraints(t) for _, t in finished]
        if any(constraints) and len({len(c) for c in constraints}) == 1:
            c = np.array(constraints, dtype=float)
            feasible_obs = (c <= 0).all(axis=1)
            for j in range(c.shape[1]):
                model = Surrogate(seed, state.groups).fit(x, c[:, j])
                m, s = model.predict(x_pool)
                probability *= norm.cdf(-m / s)

        observed = y[feasible_obs]
        points = np.concatenate([observed, believed_pending]) if len(observed) else observed
        if not len(observed):
            return probability  # nothing feasible yet: the likeliest to meet the constraints
        normals = rng.standard_normal((self._mc_samples, n_obj))
        if n_obj == 1:
            score = expected_improvement(mean[:, 0], sd[:, 0], float(points[:, 0].min()))
        elif n_obj == 2:
            reference = self._reference(points, mean, sd)
            score = ehvi_2d(mean, sd, points, reference, normals)
        else:
            weights = rng.dirichlet(np.ones(n_obj))
            score = chebyshev_ei(mean, sd, points, weights, normals)
        return score * probability

    @staticmethod
    def _reference(points: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
        """Returns the reference point: 10% beyond the worst of the observed points and,
        for an objective every candidate knows, of the candidates too."""
        worst = points.max(axis=0)
        best = points.min(axis=0)
        for k in range(points.shape[1]):
            if (sd[:, k] == 0).all():
                worst[k] = max(worst[k], mean[:, k].max())
                best[k] = min(best[k], mean[:, k].min())
        span = np.where(worst > best, worst - best, np.maximum(np.abs(worst), 1.0))
        return worst + 0.1 * span


