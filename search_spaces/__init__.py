"""Search spaces: elastic supernets, the choices they expose, and a registry by name.

Example:
    >>> from search_spaces import get_search_space, list_search_spaces
    >>> list_search_spaces("mobilenet*")
    ['mobilenet_elastic']
    >>> space = get_search_space("mobilenet_elastic")
    >>> space.decode(space.max_arch()) == space.max_arch()
    True
"""

from __future__ import annotations

# Built-in spaces register themselves on import; import them all here so that the
# registry's contents never depend on what a caller imported first.
from search_spaces import mobilenet_elastic as _mobilenet_elastic  # noqa: F401
from search_spaces import resnet_elastic as _resnet_elastic  # noqa: F401
from search_spaces._arch import Arch, ArchValue
from search_spaces._base import ChoiceSpace, SearchSpace, SearchSpaceError, Supernet
from search_spaces._cell import CellSpace
from search_spaces._registry import (
    get_search_space,
    get_search_space_options,
    list_search_spaces,
    register_search_space,
)
from search_spaces._table import TableSpace
from search_spaces.mobilenet_elastic import MobileNetElasticOptions
from search_spaces.resnet_elastic import ResNetElasticOptions

__all__ = [
    "Arch",
    "ArchValue",
    "CellSpace",
    "ChoiceSpace",
    "MobileNetElasticOptions",
    "ResNetElasticOptions",
    "SearchSpace",
    "SearchSpaceError",
    "Supernet",
    "TableSpace",
    "get_search_space",
    "get_search_space_options",
    "list_search_spaces",
    "register_search_space",
]
