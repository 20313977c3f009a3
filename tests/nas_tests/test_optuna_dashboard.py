"""optuna-dashboard opens a run's study.db as it is: objective names, trials, values and the
user attributes a user filters by (arch, params, MACs, latency CV)."""

from __future__ import annotations

import io
import json
import wsgiref.util
from pathlib import Path
from typing import Any

from nas import Objectives, StudyAdapter, make_sampler, open_study
from search_spaces import get_search_space

OBJECTIVES = Objectives({"accuracy": "max", "latency_ms": "min"}, {"latency_ms": 2.0})


def call(app: Any, path: str, query: str = "") -> tuple[int, Any]:
    """Calls a WSGI app in-process; returns the status code and the decoded JSON body."""
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
                               "wsgi.input": io.BytesIO(b""), "wsgi.errors": io.StringIO()}
    wsgiref.util.setup_testing_defaults(environ)
    status: list[str] = []
    body = app(environ, lambda s, headers, exc_info=None: status.append(s))
    try:
        data = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return int(status[0].split()[0]), json.loads(data)


def test_optuna_dashboard_lists_the_study_with_every_trial(tmp_path: Path, tiny_options: dict) -> None:
    from optuna_dashboard import wsgi

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(url, "quickstart", OBJECTIVES, make_sampler("random", seed=0, objectives=OBJECTIVES))
    adapter = StudyAdapter(study, get_search_space("mobilenet_elastic", **tiny_options), OBJECTIVES)
    told = {}
    for i in range(5):
        number, arch = adapter.ask()
        if i == 4:
            adapter.tell_result(number, None, "RuntimeError: simulated out of memory")
            continue
        metrics = {"accuracy": 0.9 + i / 100, "latency_ms": 0.05 + i / 100, "latency_cv": 0.02,
                   "params": 1000.0 + i, "macs": 2e6 + i}
        adapter.tell_result(number, metrics, None)
        told[number] = (metrics, arch.key())

    app = wsgi(url)
    code, listing = call(app, "/api/studies")
    assert code == 200
    [summary] = [s for s in listing["study_summaries"] if s["study_name"] == "quickstart"]
    assert summary["directions"] == ["maximize", "minimize"]
    code, detail = call(app, f"/api/studies/{summary['study_id']}", "after=0")
    assert code == 200
    assert detail["objective_names"] == ["accuracy", "latency_ms"]
    assert len(detail["trials"]) == 5
    for trial in detail["trials"]:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        if trial["number"] not in told:
            assert trial["state"] == "Fail" and "out of memory" in attrs["error"]
            continue
        metrics, arch = told[trial["number"]]
        assert trial["state"] == "Complete"
        assert trial["values"] == [metrics["accuracy"], metrics["latency_ms"]]
        assert attrs["arch"] == arch
        for key in ("params", "macs", "latency_cv"):
            assert float(attrs[key]) == metrics[key]
    assert {a["key"] for a in detail["union_user_attrs"]} >= {"arch", "params", "macs", "latency_cv"}


def _request(method: str, url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except urllib.error.URLError:
        return 0  # not listening yet


def test_nas_dashboard_serves_a_read_only_view_on_loopback(tmp_path: Path, tiny_options: dict) -> None:
    """`nas dashboard RUN` lists the study, and its API cannot delete the study or change a
    trial (it can, served by optuna-dashboard on the study itself)."""
    import os
    import subprocess
    import sys
    import time

    import psutil

    from nas._config import load_config
    from nas._ports import free_port
    from nas._rundir import RunDir
    from tests.nas_tests.conftest import QUICKSTART

    spec = load_config(QUICKSTART, [])
    run = RunDir(tmp_path / "run")
    run.prepare(spec, ["nas", "search", str(QUICKSTART)])
    study = open_study(run.storage_url(), spec.experiment.name, OBJECTIVES,
                       make_sampler("random", seed=0, objectives=OBJECTIVES))
    adapter = StudyAdapter(study, get_search_space("mobilenet_elastic", **tiny_options), OBJECTIVES)
    for i in range(3):
        number, _ = adapter.ask()
        adapter.tell_result(number, {"accuracy": 0.9, "latency_ms": 0.1 + i}, None)
    before = run.study.read_bytes()
    port = free_port("127.0.0.1")
    server = subprocess.Popen([sys.executable, "-m", "nas._cli", "dashboard", str(run.root),
                               "--port", str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "COLUMNS": "200"})
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while _request("GET", f"{base}/api/studies") != 200:
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
            time.sleep(0.3)
        listening = [c.laddr for c in psutil.Process(server.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and all(a.ip == "127.0.0.1" for a in listening), listening
        assert _request("DELETE", f"{base}/api/studies/1") >= 400
        assert _request("DELETE", f"{base}/api/studies/1?remove_associated_artifacts=true") >= 400
        assert _request("GET", f"{base}/api/studies/1?after=0") == 200
    finally:
        server.terminate()
        out = server.communicate(timeout=30)[0]
    assert "(read-only)" in out and f"http://127.0.0.1:{port}" in out
    assert run.study.read_bytes() == before
    again = open_study(run.storage_url(), spec.experiment.name, OBJECTIVES)
    assert [t.state.name for t in again.trials] == ["COMPLETE"] * 3
