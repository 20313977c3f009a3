"""The registry of search spaces by name: the name is the key a YAML config uses."""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from pydantic import BaseModel

from search_spaces._base import SearchSpace, SearchSpaceError

__all__ = [
    "get_search_space",
    "get_search_space_options",
    "list_search_spaces",
    "register_search_space",
]

SpaceFactory = Callable[..., SearchSpace]
_F = TypeVar("_F", bound=Callable[..., SearchSpace])


@dataclass(frozen=True)
class _Entry:
    factory: SpaceFactory
    options: type[BaseModel] | None


_SEARCH_SPACES: dict[str, _Entry] = {}


def _check_options_model(name: str, options: type[BaseModel]) -> None:
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise TypeError(f"search space {name!r}: options must be a pydantic model class")
    config = options.model_config
    if config.get("extra") != "forbid" or not config.get("frozen"):
        raise TypeError(
            f"search space {name!r}: options model {options.__name__} must set "
            "model_config = ConfigDict(extra='forbid', frozen=True)"
        )


@overload
def register_search_space(fn: _F, *, options: type[BaseModel] | None = None) -> _F: ...


@overload
def register_search_space(
    fn: None = None, *, options: type[BaseModel] | None = None
) -> Callable[[_F], _F]: ...


def register_search_space(
    fn: _F | None = None, *, options: type[BaseModel] | None = None
) -> _F | Callable[[_F], _F]:
    """Registers a search space factory under its function name.

    The factory takes the validated options instance (or None when the space has no
    options model) and returns a ``SearchSpace``. Registering a name twice warns and
    replaces the earlier factory.

    Args:
        fn: The factory, when used as a bare decorator.
        options: The pydantic model of the space's options; it must forbid extra keys and
            be frozen.

    Returns:
        The factory itself, or a decorator when called with keyword arguments only.

    Raises:
        TypeError: ``options`` is not a frozen pydantic model that forbids extra keys.

    Example:
        >>> from search_spaces import register_search_space
        >>> @register_search_space
        ... def my_space(options):
        ...     return MySpace()  # doctest: +SKIP
    """

    def decorator(factory: _F) -> _F:
        _add(factory, options)
        return factory

    if fn is None:
        return decorator
    _add(fn, options)
    return fn


def _add(factory: SpaceFactory, options: type[BaseModel] | None) -> None:
    name = factory.__name__
    if options is not None:
        _check_options_model(name, options)
    if name in _SEARCH_SPACES:
        # stacklevel 3: the module that applies the decorator.
        warnings.warn(
            f"search space {name!r} is already registered; the new factory replaces it",
            UserWarning,
            stacklevel=3,
        )
    _SEARCH_SPACES[name] = _Entry(factory, options)


def list_search_spaces(filter: str = "") -> list[str]:
    """Returns the sorted names of the registered search spaces.

    Args:
        filter: An ``fnmatch`` pattern such as ``"mobilenet*"``; empty keeps every name.

    Returns:
        The matching names, sorted.
    """
    names = sorted(_SEARCH_SPACES)
    return fnmatch.filter(names, filter) if filter else names


def _entry(name: str) -> _Entry:
    try:
        return _SEARCH_SPACES[name]
    except KeyError:
        raise SearchSpaceError(
            f"unknown search space {name!r}; registered search spaces are: "
            f"{', '.join(list_search_spaces()) or '(none)'}"
        ) from None


def get_search_space(name: str, **options: Any) -> SearchSpace:
    """Builds the search space registered as ``name`` with validated options.

    Args:
        name: The registered name (the factory's function name).
        **options: The space's options; validated by its options model.

    Returns:
        The search space; its ``name`` attribute is set to ``name``.

    Raises:
        SearchSpaceError: ``name`` is not registered (the message lists the registered
            names), or options are given to a space that takes none.
        pydantic.ValidationError: the options do not validate; raised unchanged so that
            the config layer can map each error location to its YAML key.

    Example:
        >>> from search_spaces import get_search_space
        >>> space = get_search_space("mobilenet_elastic", depths=[1, 2])
        >>> space.name
        'mobilenet_elastic'
    """
    entry = _entry(name)
    if entry.options is None:
        if options:
            raise SearchSpaceError(
                f"search space {name!r} takes no options, got {sorted(options)}"
            )
        space = entry.factory(None)
    else:
        space = entry.factory(entry.options.model_validate(options))
    if not isinstance(space, SearchSpace):
        raise TypeError(
            f"the factory of search space {name!r} returned {type(space).__name__}, "
            "not a SearchSpace"
        )
    space.name = name
    return space


def get_search_space_options(name: str) -> type[BaseModel] | None:
    """Returns the options model of the search space ``name`` (None if it takes none).

    Raises:
        SearchSpaceError: ``name`` is not registered.
    """
    return _entry(name).options
