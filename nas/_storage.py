"""Where a study is kept: the run's SQLite file, a PostgreSQL server, or an Optuna journal file.

``search.storage`` takes an SQLAlchemy URL (``sqlite:///PATH``, ``postgresql://USER@HOST/DB``)
or ``journal:PATH`` (Optuna's JournalStorage, an append-only file for shared file systems).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
from collections.abc import Iterator

import optuna

from nas._errors import StorageError

#: the forms ``search.storage`` accepts, for messages
STORAGE_FORMS = ("sqlite:///PATH", "postgresql://USER:PASSWORD@HOST:PORT/DB", "journal:PATH")
JOURNAL_PREFIX = "journal:"
_POSTGRES_SCHEMES = ("postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://",
                     "postgres://")
#: the module each PostgreSQL driver of SQLAlchemy imports (``postgresql://`` is psycopg 3)
_DRIVERS = {"postgresql+psycopg2": ("psycopg2", "psycopg2-binary")}


def check_storage_url(url: str) -> str:
    """Returns ``url`` in its canonical form (``postgres://`` becomes ``postgresql://``).

    Raises:
        ValueError: it is none of ``STORAGE_FORMS``, or its database driver is missing
            (saying what to install).
    """
    if url.startswith(JOURNAL_PREFIX):
        if not url.removeprefix(JOURNAL_PREFIX).strip():
            raise ValueError(f"{url!r}: give the journal file's path, e.g. journal:/shared/study.log")
        return url
    if url.startswith("sqlite:///"):
        return url
    if url.startswith(_POSTGRES_SCHEMES):
        url = "postgresql://" + url.removeprefix("postgres://") if url.startswith("postgres://") else url
        module, package = _DRIVERS.get(url.partition("://")[0], ("psycopg", "'hwnas[postgres]'"))
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"a PostgreSQL study needs the {module} driver: pip install "
                             f"{package}")
        return url
    scheme = url.partition(":")[0][:20]  # never the rest: it may hold a password
    raise ValueError(f"a storage of scheme {scheme!r} is not one this toolkit opens; use one "
                     f"of {', '.join(STORAGE_FORMS)}")


def redacted(url: str) -> str:
    """Returns ``url`` as it may be printed: a database URL's password replaced by ``***``."""
    if url.startswith(JOURNAL_PREFIX) or url.startswith("sqlite"):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.partition(":")[0] + "://***"


def open_storage(url: str, *, read_only: bool = False) -> optuna.storages.BaseStorage:
    """Returns the Optuna storage at ``url`` (one of ``STORAGE_FORMS``). ``read_only``
    opens a database so that it cannot be written (SQLite ``mode=ro``, a PostgreSQL
    session in read-only transactions) and refuses every write through the returned
    storage (``ReadOnlyStorage``).

    Raises:
        ValueError: ``url`` is none of them.
        StorageError: the database server cannot be reached or refuses the login, or the
            journal file cannot be opened.
    """
    url = check_storage_url(url)
    if read_only:
        from nas._readonly_storage import ReadOnlyStorage

        return ReadOnlyStorage(_open(url, read_only=True))
    return _open(url)


def _open(url: str, *, read_only: bool = False) -> optuna.storages.BaseStorage:
    """Returns the storage at a checked ``url``; see ``open_storage``."""
    rdb = optuna.storages.RDBStorage
    try:
        if url.startswith(JOURNAL_PREFIX):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            path = url.removeprefix(JOURNAL_PREFIX)
            if read_only and not os.path.exists(path):
                raise FileNotFoundError(errno.ENOENT, "no such file", path)
            return JournalStorage(JournalFileBackend(path))
        if url.startswith("sqlite"):
            if read_only:  # SQLite itself refuses to write through this connection
                path = url.removeprefix("sqlite:///")
                return rdb(f"sqlite:///file:{path}?mode=ro&uri=true",
                           skip_table_creation=True, skip_compatibility_check=True)
            # several processes write the run's file: wait for each other's locks
            return rdb(url, engine_kwargs={"connect_args": {"timeout": 30}})
        # a server's connection may have been closed while the search waited on a trial
        engine: dict[str, object] = {"pool_pre_ping": True}
        if read_only:
            engine["connect_args"] = {"options": "-c default_transaction_read_only=on"}
            return rdb(url, engine_kwargs=engine, skip_table_creation=True,
                       skip_compatibility_check=True)
        with _schema_lock(url):
            return rdb(url, engine_kwargs=engine)
    except OSError as exc:
        raise StorageError(f"search.storage {redacted(url)}: cannot open the journal file "
                           f"({exc.strerror or exc}); check the path and its permissions") from exc
    except Exception as exc:
        from sqlalchemy.exc import OperationalError

        if not isinstance(exc, OperationalError) or url.startswith("sqlite"):
            raise  # the run's own study.db: RunDir.check_study and the CLI name it
        first = str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0][:200]
        raise StorageError(f"search.storage {redacted(url)}: cannot open the study's database "
                           f"({first}); check that the server runs and accepts this user, "
                           "or choose another search.storage") from exc


#: the PostgreSQL advisory lock under which a driver creates (or checks) Optuna's tables
_SCHEMA_LOCK_KEY = int.from_bytes(b"hwnas-db", "big") >> 1


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """Holds a PostgreSQL advisory lock for the block: drivers started together on an empty
    database would otherwise all create Optuna's tables and types at once, and all but one
    fail on a duplicate. The lock ends with its session, however the process ends.

    Raises:
        sqlalchemy.exc.OperationalError: the server cannot be reached.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"),
                                   {"key": _SCHEMA_LOCK_KEY})
                connection.commit()
    finally:
        engine.dispose()


def is_shared(url: str) -> bool:
    """Returns whether the study at ``url`` may be written by drivers on other machines
    (a server or a shared journal) rather than by this run alone (its SQLite file)."""
    return not url.startswith("sqlite")
