"""A guard around any sampler: the search never proposes an arch it has proposed before."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial

logger = logging.getLogger(__name__)


class DistinctArchSampler(BaseSampler):
    """Wraps ``inner`` so that each trial gets an arch no earlier trial of the study has.

    The whole arch is drawn at once: ``inner``'s relative proposal for the params it models
    jointly, its independent proposal for the rest. An arch seen before (after
    ``canonical``, so two combinations that run one network count as one) is drawn again,
    up to ``retries`` times, then replaced by a uniformly random unseen arch. Optuna's TPE
    and GP samplers, left alone, propose a good arch again once they have converged; that
    would spend an evaluation on a known result. Trials with fixed params (enqueued on
    purpose, e.g. to measure an arch again) are left as they are.

    Args:
        inner: The sampler that proposes.
        choices: The search space: name -> values.
        canonical: Params -> the params of the arch they run, or None.
        seed: Seeds the random fallback.
        retries: Fresh draws from ``inner`` before the fallback.
    """

    def __init__(
        self,
        inner: BaseSampler,
        choices: Mapping[str, Sequence[Any]],
        *,
        canonical: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None,
        seed: int | None = None,
        retries: int = 8,
    ) -> None:
        self.inner = inner
        self._choices = {k: tuple(v) for k, v in choices.items()}
        self._canonical = canonical
        self._seed = seed
        self._retries = retries

    def _key(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        values = dict(self._canonical(dict(params))) if self._canonical else dict(params)
        return tuple(values[k] for k in self._choices)

    def reseed_rng(self) -> None:
        """Reseeds the inner sampler."""
        self.inner.reseed_rng()

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Lets the inner sampler prepare the trial (NSGA-II records its generation)."""
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: Any, values: Any) -> None:
        """Lets the inner sampler see the finished trial."""
        self.inner.after_trial(study, trial, state, values)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """Returns the whole space: every param of an arch is decided together."""
        return {k: CategoricalDistribution(v) for k, v in self._choices.items()}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """Returns the inner sampler's value for a param outside the space."""
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """Returns a whole arch's params that no earlier trial has."""
        if "fixed_params" in trial.system_attrs:
            return {}
        seen = {self._key(t.params) for t in study.get_trials(deepcopy=False)
                if t.number != trial.number and all(k in t.params for k in self._choices)}
        params: dict[str, Any] = {}
        for attempt in range(self._retries + 1):
            params = self._draw(study, trial)
            if self._key(params) not in seen:
                if attempt:
                    logger.debug("trial %d: arch drawn %d times to be new", trial.number, attempt + 1)
                return params
        rng = np.random.default_rng(None if self._seed is None else [self._seed, trial.number])
        for _ in range(10_000):
            params = {k: v[int(rng.integers(len(v)))] for k, v in self._choices.items()}
            if self._key(params) not in seen:
                return params
        logger.warning("trial %d: no unseen arch found; the space may be exhausted", trial.number)
        return params

    def _draw(self, study: Study, trial: FrozenTrial) -> dict[str, Any]:
        relative_space = {
            k: d for k, d in self.inner.infer_relative_search_space(study, trial).items()
            if k in self._choices and isinstance(d, CategoricalDistribution)
            and tuple(d.choices) == self._choices[k]
        }
        params = dict(self.inner.sample_relative(study, trial, relative_space)) if relative_space else {}
        for name, values in self._choices.items():
            if name not in params:
                params[name] = self.inner.sample_independent(
                    study, trial, name, CategoricalDistribution(values))
        return params
