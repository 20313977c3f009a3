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
