"""A throwaway PostgreSQL server for the storage tests: initdb in a temporary folder, listening
on 127.0.0.1 only (no Unix socket outside that folder), trust login for one user, stopped
after the session. As root it runs as ``nobody`` (the server refuses to run as root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

USER = "hwnas"


def server_binaries() -> Path | None:
    """Returns the folder of ``initdb`` and ``pg_ctl`` (on PATH, or Debian's versioned
    folder), or ``None`` when PostgreSQL's server is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def postgres_server(root: Path) -> Iterator[str]:
    """Runs a PostgreSQL server with its data in ``root`` (as root: in a folder of its own,
    removed after); yields the URL of its
    ``postgres`` database (``postgresql://hwnas@127.0.0.1:PORT/postgres``).

    Raises:
        FileNotFoundError: PostgreSQL's server is not installed.
        subprocess.CalledProcessError: it did not start (its log is in ``root/server.log``).
    """
    binaries = server_binaries()
    if binaries is None:
        raise FileNotFoundError("initdb/pg_ctl not found: install Debian's postgresql")
    as_user: list[str] = []
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # pytest's folders are root's alone: the server gets its own
        nobody = pwd.getpwnam("nobody")
        as_user = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                   "--clear-groups"]
        root = Path(tempfile.mkdtemp(prefix="hwnas-postgres-"))
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
    data, log = root / "data", root / "server.log"
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data), "-U", USER,
                    "--auth=trust", "--no-sync", "-E", "UTF8"],
                   check=True, capture_output=True, env=env)
    options = (f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
               "-c full_page_writes=off -c max_connections=200")
    subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o",
                    options, "-w", "-t", "60", "start"], check=True, capture_output=True, env=env)
    try:
        yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast",
                        "-w", "stop"], check=False, capture_output=True, env=env)
        if as_user:
            shutil.rmtree(root, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """Creates an empty database on the server; returns its URL."""
    import psycopg

    name = f"study_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"
