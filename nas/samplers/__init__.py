"""Samplers by registration: ``search.sampler`` takes any registered name and its options.

Built in: ``random``, ``nsga2``, ``tpe``, ``gp`` (Optuna's) and ``model_based``
(:class:`ModelBasedSampler`, which also runs in plain Optuna).
"""

from __future__ import annotations

from nas.samplers import _builtin  # noqa: F401  (registers the built-in samplers)
from nas.samplers._distinct import DistinctArchSampler
from nas.samplers._model_based import ModelBasedSampler
from nas.samplers._registry import (
    CheapObjectives,
    SamplerContext,
    SamplerError,
    build_sampler,
    get_sampler_options,
    list_samplers,
    register_sampler,
)

__all__ = [
    "CheapObjectives", "DistinctArchSampler", "ModelBasedSampler", "SamplerContext", "SamplerError", "build_sampler",
    "get_sampler_options", "list_samplers", "register_sampler",
]
