"""Nothing a search starts listens beyond loopback: the listening sockets of a running `nas
search` and of every process it started (Ray's GCS, raylet, workers, dashboard and its
agent, metrics endpoints), sampled while trials run; and Ray's token is its user's alone."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from nas._ports import free_port
from tests.nas_tests.conftest import QUICKSTART, TINY_RUN

pytestmark = pytest.mark.slow

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def listening(root: psutil.Process) -> dict[tuple[str, int], str]:
    """Returns ``{(ip, port): process name}`` of the sockets ``root`` and its descendants
    listen on now."""
    found: dict[tuple[str, int], str] = {}
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return found
    for proc in tree:
        try:
            name = " ".join(proc.cmdline()[:1])[-40:] or proc.name()
            for conn in proc.net_connections("inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found[(conn.laddr.ip, conn.laddr.port)] = name
        except psutil.Error:
            continue
    return found


def test_a_search_listens_on_loopback_only(copy_run: Callable[[str], Path]) -> None:
    run = copy_run("run")
    port = free_port("127.0.0.1")
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nas._cli", "search", str(QUICKSTART), "--run-dir", str(run),
         *TINY_RUN, "--set", "search.n_trials=6", "--set", "compress.enabled=false",
         "--set", f"ray.dashboard_port={port}"],
        cwd=run.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: dict[tuple[str, int], str] = {}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        seen.update(listening(root))
        time.sleep(0.5)
    out = proc.communicate()[0]
    assert proc.returncode == 0, out[-4000:]
    assert ("127.0.0.1", port) in seen, f"the dashboard was never seen listening: {seen}"
    assert len(seen) >= 5, seen  # GCS, raylet, object manager, workers, dashboard ...
    beyond = {addr: name for addr, name in seen.items() if addr[0] not in LOOPBACK}
    print("listening:", sorted(seen.items()))
    assert not beyond, f"listening beyond loopback: {beyond}"
    token = Path.home() / ".ray" / "auth_token"
    if token.exists():
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
