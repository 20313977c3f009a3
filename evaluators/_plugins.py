"""Importing the user's own registrations (search spaces, importance criteria, latency
backends) named by a config's ``plugins:`` list, in the driver and in every trial worker."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["PluginError", "import_plugins"]


class PluginError(ImportError):
    """A plugin that cannot be imported; the message names it and why."""


def import_plugins(entries: Sequence[str]) -> None:
    """Imports each entry once: a module name (``my_pkg.spaces``) or the path of a ``.py`` file.

    Importing a module runs its registration decorators, so the names it registers are
    accepted by the config from then on.

    Raises:
        PluginError: an entry does not import; the message names it and the cause.
    """
    for i, entry in enumerate(entries):
        try:
            if entry.endswith(".py"):
                _import_file(Path(entry))
            else:
                importlib.import_module(entry)
        except PluginError:
            raise
        except Exception as exc:  # any error of the user's module is reported, not raised raw
            raise PluginError(
                f"plugins[{i}]: cannot import {entry!r} ({type(exc).__name__}: {exc})"
            ) from exc


def _import_file(path: Path) -> None:
    name = f"hwnas_plugin_{path.stem}"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return
    if not path.is_file():
        raise PluginError(f"plugins: {path} is not a file")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugins: {path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
