"""The search driver: CLI, configuration, run directory, Ray Tune + Optuna search."""

from __future__ import annotations

from nas._config import RunSpec, load_config, validate_config
from nas._errors import ConfigError, NasError, RunDirError
from nas._rundir import RunDir
from nas._study import (
    Objectives,
    StudyAdapter,
    cheap_objectives,
    make_sampler,
    open_study,
    pareto_frame,
    trials_frame,
)

__all__ = [
    "ConfigError", "NasError", "Objectives", "RunDir", "RunDirError", "RunSpec", "StudyAdapter",
    "cheap_objectives", "load_config", "make_sampler", "open_study", "pareto_frame", "trials_frame", "validate_config",
]
