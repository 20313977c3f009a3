"""A stage reads and writes only the run directory; the pipeline chains stages."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property

from rich.console import Console

from evaluators import DataSplits, load_dataset
from hwprofiles import HardwareProfile
from nas._config import RunSpec
from nas._rundir import RunDir
from nas._study import Objectives
from search_spaces import SearchSpace, get_search_space


@dataclass
class RunContext:
    """What every stage gets: the validated spec, the run directory and the console."""

    spec: RunSpec
    run: RunDir
    console: Console = field(default_factory=Console)

    @cached_property
    def profile(self) -> HardwareProfile:
        """Returns the hardware profile latency is measured on."""
        return self.spec.hardware.load()

    @cached_property
    def space(self) -> SearchSpace:
        """Returns the configured search space."""
        config = self.spec.search_space
        space = get_search_space(config.name, **config.options())
        assert isinstance(space, SearchSpace)
        return space

    @cached_property
    def data(self) -> DataSplits:
        """Returns the data splits (loaded once per process; raises DataError)."""
        d = self.spec.data
        return load_dataset(
            d.dataset, path=d.path, image_size=d.image_size, val_fraction=d.val_fraction,
            test_fraction=d.test_fraction, seed=self.spec.experiment.seed,
            max_bytes=d.max_bytes,
        )

    @cached_property
    def objectives(self) -> Objectives:
        """Returns the objectives and constraints of the search."""
        return Objectives(dict(self.spec.search.objectives), dict(self.spec.search.constraints))


class Stage(ABC):
    """One step of a run. ``run`` skips work whose outputs are already complete."""

    name: str = ""

    @abstractmethod
    def run(self, ctx: RunContext) -> None:
        """Does (or resumes) the stage's work and records it in the run directory.

        Raises:
            NasError, ValueError: bad input; other exceptions are internal failures.
        """


def run_pipeline(ctx: RunContext, stages: list[Stage]) -> None:
    """Runs ``stages`` in order on ``ctx``."""
    for stage in stages:
        stage.run(ctx)
