"""End to end: ``nas search`` on a tiny budget leaves a complete run directory, then resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml

from nas import Objectives, pareto_frame
from nas._study import BASE_COLUMNS, INTERRUPTED

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
TINY = ["--set", "supernet.epochs=1", "--set", "search.max_concurrent=2",
        "--set", "search.recalibration_batches=2"]

pytestmark = pytest.mark.slow


def nas(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "nas._cli", *args], check=False, capture_output=True, text=True, cwd=cwd,
        env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_search_writes_a_complete_run_directory_and_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = nas("search", str(QUICKSTART), "--run-dir", str(run), *TINY,
              "--set", "search.n_trials=4", "--set", "ray.dashboard_port=8365", cwd=tmp_path).stdout
    assert "Ray dashboard: http://127.0.0.1:" in out
    assert "Pareto set" in out and str(run) in out

    # config.yaml is the resolved config that ran
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["search"]["n_trials"] == 4 and config["supernet"]["epochs"] == 1
    # supernet.pt is a state_dict that loads with weights_only=True
    state = torch.load(run / "supernet.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert (run / "tune").is_dir() and any((run / "tune").iterdir())

    trials = pd.read_parquet(run / "trials.parquet")
    assert list(trials.columns[: len(BASE_COLUMNS)]) == BASE_COLUMNS
    assert trials["number"].tolist() == [0, 1, 2, 3]
    complete = trials[trials["state"] == "COMPLETE"]
    assert len(complete) >= 3, trials[["state", "error"]]
    assert complete["accuracy"].between(0, 1).all() and (complete["latency_ms"] > 0).all()
    assert (complete["params"] > 0).all() and (complete["macs"] > 0).all()
    assert all(isinstance(json.loads(a), dict) for a in trials["arch"])

    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{run / 'study.db'}")
    assert study.metric_names == ["accuracy", "latency_ms"]
    for t in study.get_trials():
        row = trials[trials["number"] == t.number].iloc[0]
        assert row["state"] == t.state.name
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.values == [row["accuracy"], row["latency_ms"]]

    pareto = pd.read_csv(run / "pareto.csv")
    objectives = Objectives({"accuracy": "max", "latency_ms": "min"}, {"latency_ms": 2.0})
    expected = pareto_frame(trials, objectives)
    assert sorted(pareto["number"]) == sorted(expected["number"]) and len(pareto) >= 1
    assert list(pareto.columns) == list(trials.columns)

    # A killed driver leaves a RUNNING trial behind; the resumed run must close it.
    study.ask()
    out = nas("search", str(QUICKSTART), "--run-dir", str(run), *TINY,
              "--set", "search.n_trials=6", "--set", "ray.dashboard=false", cwd=tmp_path).stdout
    assert "already trained" in out and "4 trials kept" in out
    resumed = pd.read_parquet(run / "trials.parquet")
    assert "RUNNING" not in set(resumed["state"])
    assert resumed.loc[4, "state"] == "FAIL" and resumed.loc[4, "error"] == INTERRUPTED
    counted = resumed[resumed["error"] != INTERRUPTED]
    assert len(counted) == 6
    pd.testing.assert_frame_equal(  # finished trials are kept as they were
        resumed.iloc[:4][["number", "state", "accuracy", "latency_ms"]],
        trials[["number", "state", "accuracy", "latency_ms"]],
    )
    # and a third run with nothing left to do skips every stage
    out = nas("search", str(QUICKSTART), "--run-dir", str(run), *TINY,
              "--set", "search.n_trials=6", "--set", "ray.dashboard=false", cwd=tmp_path).stdout
    assert "already finished, skipped" in out


def test_search_on_an_unseen_npz_dataset_with_only_data_changed(tmp_path: Path) -> None:
    # three classes of 3-channel 20x20 images: horizontal bars, vertical bars, noise
    rng = np.random.default_rng(0)
    n = 60
    x = rng.integers(0, 60, size=(3 * n, 3, 20, 20), dtype=np.uint8)
    x[:n, :, ::4, :] = 255
    x[n : 2 * n, :, :, ::4] = 255
    y = np.repeat(np.arange(3), n)
    np.savez(tmp_path / "bars.npz", x=x, y=y, classes=np.array(["horizontal", "vertical", "noise"]))
    config = yaml.safe_load(QUICKSTART.read_text())
    config["data"] = {"dataset": "npz", "path": "bars.npz", "image_size": 20}
    (tmp_path / "bars.yaml").write_text(yaml.safe_dump(config))
    nas("search", "bars.yaml", *TINY, "--set", "search.n_trials=2", "--set", "ray.dashboard=false",
        cwd=tmp_path)
    run = tmp_path / "runs" / "quickstart"
    trials = pd.read_parquet(run / "trials.parquet")
    assert len(trials) == 2 and (trials["state"] == "COMPLETE").all()
    data = json.loads((run / "data.json").read_text())
    assert data["classes"] == ["horizontal", "vertical", "noise"]
    assert data["input_shape"] == [1, 3, 20, 20] and len(data["normalization"]["mean"]) == 3


def test_ctrl_c_leaves_a_truthful_study_and_the_run_resumes(tmp_path: Path) -> None:
    import signal
    import time

    run = tmp_path / "run"
    args = [sys.executable, "-m", "nas._cli", "search", str(QUICKSTART), "--run-dir", str(run),
            *TINY, "--set", "search.n_trials=30", "--set", "ray.dashboard=false"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # wait for the first trials
        if (run / "trials.parquet").exists() and len(pd.read_parquet(run / "trials.parquet")) >= 2:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out
    assert "run the same command again to resume" in " ".join(out.split())
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{run / 'study.db'}")
    states = [t.state for t in study.get_trials()]
    assert optuna.trial.TrialState.RUNNING not in states
    assert 2 <= len(states) < 30
    assert "search" not in json.loads((run / "stages.json").read_text())
    out = nas("search", str(QUICKSTART), "--run-dir", str(run), *TINY,
              "--set", "search.n_trials=4", "--set", "ray.dashboard=false", cwd=tmp_path).stdout
    trials = pd.read_parquet(run / "trials.parquet")
    assert len(trials[trials["error"] != INTERRUPTED]) >= 4
