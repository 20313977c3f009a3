"""The registry of samplers by name: the name is the key ``search.sampler`` takes."""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import numpy as np
import optuna
from pydantic import BaseModel

__all__ = [
    "CheapObjectives",
    "SamplerContext",
    "build_sampler",
    "get_sampler_options",
    "list_samplers",
    "register_sampler",
]

#: Values of objectives that cost (almost) nothing to know, for many candidates at once:
#: given each candidate's params, returns an ``(n_candidates, n_objectives)`` array in the
#: study's objective order, NaN where a value is not known without evaluating.
CheapObjectives = Callable[[Sequence[dict[str, Any]]], np.ndarray]


@dataclass(frozen=True)
class SamplerContext:
    """What a sampler factory may use besides its own options.

    Attributes:
        seed: The run's seed (``experiment.seed``).
        objectives: The objective names in the study's order.
        choices: The search space's named categorical choices, as Optuna suggests them.
        cheap_objectives: Objectives known without an expensive evaluation (the table's
            latency column, a latency model's prediction), or None.
        features: Structural features of an arch the space declares (params -> numbers), or
            None.
        canonical: Params -> the params of the arch they decode to, where several
            combinations of choices are one network, or None.
        max_concurrent: How many trials run at once.
    """

    seed: int
    objectives: tuple[str, ...] = ()
    choices: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    cheap_objectives: CheapObjectives | None = None
    features: Callable[[dict[str, Any]], Sequence[float]] | None = None
    canonical: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    max_concurrent: int = 1


SamplerFactory = Callable[[Any, SamplerContext], optuna.samplers.BaseSampler]
_F = TypeVar("_F", bound=SamplerFactory)


@dataclass(frozen=True)
class _Entry:
    factory: SamplerFactory
    options: type[BaseModel] | None


_SAMPLERS: dict[str, _Entry] = {}


class SamplerError(ValueError):
    """A sampler name that is not registered, or options it does not take."""


@overload
def register_sampler(fn: _F, *, options: type[BaseModel] | None = None) -> _F: ...


@overload
def register_sampler(
    fn: None = None, *, options: type[BaseModel] | None = None
) -> Callable[[_F], _F]: ...


def register_sampler(
    fn: _F | None = None, *, options: type[BaseModel] | None = None
) -> _F | Callable[[_F], _F]:
    """Registers a sampler factory under its function name (the ``search.sampler`` key).

    The factory takes the validated options instance (None when the sampler has no options
    model) and a :class:`SamplerContext`, and returns an ``optuna.samplers.BaseSampler``.
    Registering a name twice warns and replaces the earlier factory.

    Args:
        fn: The factory, when used as a bare decorator.
        options: The pydantic model of the sampler's options; it must forbid extra keys
            and be frozen.

    Returns:
        The factory itself, or a decorator when called with keyword arguments only.

    Raises:
        TypeError: ``options`` is not a frozen pydantic model that forbids extra keys.

    Example:
        >>> import optuna
        >>> from nas.samplers import register_sampler
        >>> @register_sampler
        ... def quasi_random(options, context):
        ...     return optuna.samplers.QMCSampler(seed=context.seed)
    """

    def decorator(factory: _F) -> _F:
        _add(factory, options)
        return factory

    if fn is None:
        return decorator
    _add(fn, options)
    return fn


def _add(factory: SamplerFactory, options: type[BaseModel] | None) -> None:
    name = factory.__name__
    if options is not None:
        config = options.model_config if isinstance(options, type) and issubclass(
            options, BaseModel) else {}
        if config.get("extra") != "forbid" or not config.get("frozen"):
            raise TypeError(
                f"sampler {name!r}: options must be a pydantic model class with "
                "model_config = ConfigDict(extra='forbid', frozen=True)")
    if name in _SAMPLERS:
        warnings.warn(f"sampler {name!r} is already registered; the new factory replaces it",
                      UserWarning, stacklevel=3)
    _SAMPLERS[name] = _Entry(factory, options)


def list_samplers(filter: str = "") -> list[str]:
    """Returns the sorted names of the registered samplers matching the ``fnmatch``
    pattern ``filter`` (every name when empty)."""
    names = sorted(_SAMPLERS)
    return fnmatch.filter(names, filter) if filter else names


def _entry(name: str) -> _Entry:
    try:
        return _SAMPLERS[name]
    except KeyError:
        raise SamplerError(f"unknown sampler {name!r}; registered samplers are: "
                           f"{', '.join(list_samplers()) or '(none)'}") from None


def get_sampler_options(name: str) -> type[BaseModel] | None:
    """Returns the options model of the sampler ``name`` (None if it takes none).

    Raises:
        SamplerError: ``name`` is not registered.
    """
    return _entry(name).options


def build_sampler(name: str, context: SamplerContext, **options: Any) -> optuna.samplers.BaseSampler:
    """Returns the sampler registered as ``name``, built with validated ``options``.

    Raises:
        SamplerError: ``name`` is not registered, or options are given to a sampler that
            takes none.
        pydantic.ValidationError: the options do not validate (the config layer maps each
            error to its YAML key).
        TypeError: the factory did not return an Optuna sampler.
    """
    entry = _entry(name)
    if entry.options is None:
        if options:
            raise SamplerError(f"sampler {name!r} takes no options, got {sorted(options)}")
        sampler = entry.factory(None, context)
    else:
        sampler = entry.factory(entry.options.model_validate(options), context)
    if not isinstance(sampler, optuna.samplers.BaseSampler):
        raise TypeError(f"the factory of sampler {name!r} returned {type(sampler).__name__}, "
                        "not an optuna.samplers.BaseSampler")
    return sampler
