"""The samplers that come with the toolkit: Optuna's own, and the model-based one."""

from __future__ import annotations

import optuna
from pydantic import BaseModel, ConfigDict, Field

from nas.samplers._model_based import ModelBasedSampler
from nas.samplers._registry import SamplerContext, register_sampler


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NSGA2Options(_Options):
    """``search.sampler: {name: nsga2, ...}``."""

    population_size: int = Field(default=16, ge=2)


class TPEOptions(_Options):
    """``search.sampler: {name: tpe, ...}``."""

    multivariate: bool = False
    n_startup_trials: int = Field(default=10, ge=0)


class GPOptions(_Options):
    """``search.sampler: {name: gp, ...}``."""

    n_startup_trials: int = Field(default=10, ge=1)


class ModelBasedOptions(_Options):
    """``search.sampler: {name: model_based, ...}``: see :class:`ModelBasedSampler`."""

    n_startup_trials: int = Field(default=5, ge=1)
    max_enumerate: int = Field(default=20_000, ge=1)
    pool_size: int = Field(default=4_000, ge=10)
    mc_samples: int = Field(default=64, ge=8)
    copula: bool = True
    cheap_objectives: bool = True


@register_sampler
def random(options: None, context: SamplerContext) -> optuna.samplers.BaseSampler:
    """Uniform random archs (Optuna's ``RandomSampler``)."""
    return optuna.samplers.RandomSampler(seed=context.seed)


@register_sampler(options=NSGA2Options)
def nsga2(options: NSGA2Options, context: SamplerContext) -> optuna.samplers.BaseSampler:
    """Optuna's ``NSGAIISampler``; constraints set on trials are honoured."""
    return optuna.samplers.NSGAIISampler(seed=context.seed, population_size=options.population_size)


@register_sampler(options=TPEOptions)
def tpe(options: TPEOptions, context: SamplerContext) -> optuna.samplers.BaseSampler:
    """Optuna's ``TPESampler`` (``multivariate`` models the choices jointly)."""
    return optuna.samplers.TPESampler(seed=context.seed, multivariate=options.multivariate,
                                      n_startup_trials=options.n_startup_trials)


@register_sampler(options=GPOptions)
def gp(options: GPOptions, context: SamplerContext) -> optuna.samplers.BaseSampler:
    """Optuna's ``GPSampler`` (multi-objective: log expected hypervolume improvement)."""
    return optuna.samplers.GPSampler(seed=context.seed, n_startup_trials=options.n_startup_trials,
                                     warn_independent_sampling=False)


@register_sampler(options=ModelBasedOptions)
def model_based(options: ModelBasedOptions, context: SamplerContext) -> optuna.samplers.BaseSampler:
    """The toolkit's :class:`ModelBasedSampler`, with the context's cheap objectives
    (unless ``cheap_objectives: false``) and the space's features."""
    return ModelBasedSampler(
        seed=context.seed, choices=context.choices or None,
        cheap_objectives=context.cheap_objectives if options.cheap_objectives else None,
        features=context.features, canonical=context.canonical, n_startup_trials=options.n_startup_trials,
        max_enumerate=options.max_enumerate, pool_size=options.pool_size,
        mc_samples=options.mc_samples, copula=options.copula,
    )
