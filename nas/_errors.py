"""The errors the CLI turns into exit status 2 (bad input) with a one-paragraph message."""

from __future__ import annotations

from evaluators import DataError, WriteError
from evaluators.latency._lockdir import LockDirError
from hwprofiles import ProfileError
from reports import ReportError
from search_spaces import SearchSpaceError


class NasError(Exception):
    """Root of this package's errors."""


class ConfigError(NasError, ValueError):
    """A configuration file or override that does not validate; names the YAML key."""


class RunDirError(NasError, ValueError):
    """A run directory that cannot be used as asked (another experiment, missing stage)."""


class StorageError(NasError, ValueError):
    """The study's storage (``search.storage``) cannot be opened: server unreachable, login
    refused, journal not writable."""


class SearchInterrupted(NasError):
    """The search stopped (Ctrl-C, a stopped cluster) before it reached ``n_trials``."""


#: Errors caused by the user's input: reported without a traceback, exit status 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, RunDirError, DataError, ProfileError, SearchSpaceError, ReportError,
    WriteError, LockDirError, StorageError,
)
