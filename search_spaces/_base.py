"""The contracts every search space and supernet implements."""

from __future__ import annotations

import itertools
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import ClassVar

from torch import nn

from search_spaces._arch import Arch, ArchValue


class SearchSpaceError(ValueError):
    """An arch, option or name that the search space does not accept."""


class ChoiceSpace(ABC):
    """A finite set of architectures described by flat, named categorical choices.

    This is all a search driver needs: it suggests one value per choice, then asks the
    space to ``decode`` the suggestion into a canonical ``Arch``. Spaces that can also be
    trained as a weight-sharing supernet subclass ``SearchSpace``.
    """

    name: str = ""

    @abstractmethod
    def choices(self) -> dict[str, tuple[ArchValue, ...]]:
        """Returns the flat, ordered choices: name -> allowed values (first is the default)."""

    @abstractmethod
    def decode(self, params: Mapping[str, ArchValue]) -> Arch:
        """Returns the canonical arch for suggested ``params``.

        Raises:
            SearchSpaceError: a choice is missing, unknown, or has a value not allowed.
        """

    def features(self, params: Mapping[str, ArchValue]) -> list[float]:
        """Returns numbers describing the structure ``params`` decode to (how much of the
        network runs, its mean widths, ...) that a sampler's surrogate learns from beside
        the choices themselves; none by default.

        Raises:
            SearchSpaceError: ``params`` is not an arch of this space.
        """
        self.decode(params)
        return []

    def summarize(self, arch: Arch) -> str:
        """Returns a short human-readable form of ``arch`` for tables and logs."""
        return " ".join(f"{name}={value}" for name, value in arch.items())

    def layout(self, arch: Arch) -> list[tuple[str, list[str]]]:
        """Returns ``arch`` at a glance: one ``(row label, cells)`` pair per stage of the
        network. Spaces without stages give one row with a ``name=value`` cell per choice."""
        return [("choices", [f"{name}={value}" for name, value in arch.items()])]

    def sample(self, rng: random.Random) -> Arch:
        """Returns a uniformly sampled arch (over the flat choices) drawn with ``rng``."""
        return self.decode({name: rng.choice(values) for name, values in self.choices().items()})

    def enumerate(self, limit: int = 1_000_000) -> Iterator[Arch]:
        """Yields every distinct arch once.

        Raises:
            SearchSpaceError: the flat product of choices exceeds ``limit``.
        """
        choices = self.choices()
        size = 1
        for values in choices.values():
            size *= len(values)
        if size > limit:
            raise SearchSpaceError(
                f"search space {self.name!r} has {size} choice combinations, more than the "
                f"limit of {limit} for enumeration; use a smaller configuration"
            )
        seen: set[Arch] = set()
        names = list(choices)
        for combo in itertools.product(*(choices[n] for n in names)):
            arch = self.decode(dict(zip(names, combo)))
            if arch not in seen:
                seen.add(arch)
                yield arch

    def canonical_values(self, params: Mapping[str, ArchValue]) -> dict[str, ArchValue]:
        """Returns ``params`` checked, each value replaced by the equal allowed one (so numpy
        numbers, or ``1`` given for ``1.0``, decode to the same arch); a building block of
        ``decode``.

        Raises:
            SearchSpaceError: a choice is missing, unknown or has a value not allowed (a
                bool is never taken for a number).
        """
        self.validate_params(params)
        values: dict[str, ArchValue] = {}
        for name, allowed in self.choices().items():
            value = params[name]
            if isinstance(value, bool) and not any(isinstance(a, bool) for a in allowed):
                raise SearchSpaceError(
                    f"search space {self.name!r}: choice {name!r} must be one of "
                    f"{list(allowed)}, got {value!r}"
                )
            values[name] = allowed[list(allowed).index(value)]
        return values

    def validate_params(self, params: Mapping[str, ArchValue]) -> None:
        """Checks that ``params`` gives an allowed value for every choice.

        Raises:
            SearchSpaceError: naming the first missing, unknown or disallowed choice.
        """
        choices = self.choices()
        unknown = sorted(set(params) - set(choices))
        if unknown:
            raise SearchSpaceError(
                f"search space {self.name!r} has no choice {unknown[0]!r}; "
                f"its choices are {sorted(choices)}"
            )
        for name, values in choices.items():
            if name not in params:
                raise SearchSpaceError(f"search space {self.name!r}: choice {name!r} is missing")
            if params[name] not in values:
                raise SearchSpaceError(
                    f"search space {self.name!r}: choice {name!r} must be one of "
                    f"{list(values)}, got {params[name]!r}"
                )


class Supernet(nn.Module, ABC):
    """A weight-sharing network whose forward pass runs the currently active subnet."""

    @abstractmethod
    def set_active(self, arch: Arch) -> None:
        """Makes ``arch`` the subnet that ``forward`` runs.

        Raises:
            SearchSpaceError: ``arch`` does not belong to this supernet's space.
        """

    @abstractmethod
    def extract(self, arch: Arch) -> nn.Module:
        """Returns a static module with copied weights whose outputs equal the supernet's
        with ``arch`` active (in eval mode); it exports to ONNX and prunes like any model.

        Raises:
            SearchSpaceError: ``arch`` does not belong to this supernet's space.
        """

    def residual_branch_norms(self) -> list[nn.BatchNorm2d]:
        """Returns the BatchNorm layer that ends each residual branch (the branch whose output
        is added to a shortcut), or an empty list where the supernet has none.

        Zeroing their scale starts every residual block as its shortcut alone (Goyal et al.,
        2017; BigNAS, Yu et al., 2020), so a block that a shallower subnet skips starts out
        doing nothing in the deeper ones.
        """
        return []


class SearchSpace(ChoiceSpace):
    """A choice space that can be trained as one weight-sharing supernet.

    ``max_arch`` and ``min_arch`` take every choice's last and first value: a space lists
    each choice's values from cheapest to most expensive, or overrides them.
    """

    #: options that change only how the supernet shares weights, never a subnet it extracts:
    #: what is kept per subnet (subnets trained alone, say) holds whatever their values
    supernet_only_options: ClassVar[frozenset[str]] = frozenset()

    def max_arch(self) -> Arch:
        """Returns the largest subnet (every choice at its most expensive value)."""
        return self.decode({name: values[-1] for name, values in self.choices().items()})

    def min_arch(self) -> Arch:
        """Returns the smallest subnet (every choice at its cheapest value)."""
        return self.decode({name: values[0] for name, values in self.choices().items()})

    @abstractmethod
    def build_supernet(self, num_classes: int, in_channels: int) -> Supernet:
        """Returns a freshly initialised supernet for the given classifier shape."""

    def describe(self) -> str:
        """Returns a one-paragraph, human-readable summary of the space."""
        choices = self.choices()
        return f"{len(choices)} choices"
