"""The search driver: CLI, configuration, run directory, Ray Tune + Optuna search, Pareto math."""

from __future__ import annotations

from nas._config import RunSpec, load_config, validate_config
from nas._errors import ConfigError, NasError, RunDirError
from nas._rundir import RunDir
from nas._study import (
    Objectives,
    StudyAdapter,
    make_sampler,
    open_study,
    pareto_frame,
    trials_frame,
)
from reports import hypervolume, normalized, pareto_mask

__all__ = [
    "ConfigError", "NasError", "Objectives", "RunDir", "RunDirError", "RunSpec", "StudyAdapter",
    "hypervolume", "load_config", "make_sampler", "normalized", "open_study", "pareto_frame",
    "pareto_mask", "trials_frame", "validate_config",
]
