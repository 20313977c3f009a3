"""End to end: ``nas search`` on a tiny budget leaves a complete run directory, then resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
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
        "--set", "search.recalibration_batches=2", "--set", "compress.top_k=1",
        "--set", "compress.finetune_epochs=1", "--set", "compress.prune.iterations=1",
        "--set", "compress.prune.finetune_epochs=1", "--set", "compress.distill.epochs=1",
        "--set", "compress.max_accuracy_drop=100",  # the budget has its own tests
        "--set", "search.remeasure=0",  # so do re-measurements (they add trials)
        # and the shipped profiles' protocol: here a shorter one keeps the chain quick
        "--set", f"hardware.profile={Path(__file__).with_name('cpu-quick.yaml')}"]

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

    # compression: one model through every stage, its artifacts and the deployed front
    rows = pd.read_parquet(run / "compression.parquet")
    assert list(rows.columns) == ["model_id", "stage", "accuracy", "latency_ms", "latency_cv",
                                  "params", "macs", "size_bytes", "artifact", "status", "reason",
                                  "latency_samples_ms", "input_stage", "speedup", "deployed",
                                  "latency_reliable", "latency_note"]
    assert rows["stage"].tolist() == ["baseline", "pruned", "distilled", "int8", "tensorrt"]
    assert rows.loc[rows["stage"] == "tensorrt", "status"].item() == "skipped"
    # the budget is off here; a stage the device could not compare reliably is unconfirmed
    assert set(rows["status"]) <= {"ok", "slower", "unconfirmed", "skipped"}
    by_stage = rows.set_index("stage")
    base_ms = by_stage.loc["baseline", "latency_ms"]
    # what ships was measured no slower than the baseline, and every accepted stage no
    # slower than the model it started from
    shipped = rows[rows["deployed"]]
    assert len(shipped) == 1 and shipped["latency_ms"].item() <= base_ms
    for r in rows[(rows["status"] == "ok") & (rows["stage"] != "baseline")
                  & rows["latency_ms"].notna()].itertuples():
        assert r.latency_ms <= by_stage.loc[r.input_stage, "latency_ms"], r
        # and that on figures the device measured reliably, its own and the baseline's
        assert r.latency_reliable and by_stage.loc["baseline", "latency_reliable"], r
    for r in rows[rows["status"] == "unconfirmed"].itertuples():
        assert "never reliably" in r.reason and not (run / "models" / r.artifact).exists()
    model_dir = run / "models" / rows["model_id"].iloc[0]
    summary = json.loads((model_dir / "deployed.json").read_text())
    assert summary["stage"] == shipped["stage"].item()
    assert (run / "models" / shipped["artifact"].item()).is_file()
    onnx_files = ["model.onnx"] + [f"{s}.onnx" for s in ("baseline", "pruned", "distilled")
                                   if by_stage.loc[s, "status"] == "ok"]
    if by_stage.loc["int8", "status"] == "ok":
        onnx_files.append("model.int8.onnx")
        ops = {n.op_type for n in onnx.load(model_dir / "model.int8.onnx").graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    else:  # a slower INT8 graph is recorded, never written where a deployer would take it
        assert not (model_dir / "model.int8.onnx").exists()
    for name in onnx_files:
        proto = onnx.load(model_dir / name)
        onnx.checker.check_model(proto)
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
        meta = {p.key: json.loads(p.value) for p in proto.metadata_props if p.key in
                ("preprocessing", "input_layout", "classes", "arch", "stage")}
        assert set(meta) == {"preprocessing", "input_layout", "classes", "arch", "stage"}
        assert meta["classes"] == [str(i) for i in range(10)] and meta["input_layout"] == "NCHW"
    assert torch.load(model_dir / "model.pt", weights_only=True)
    deployed = pd.read_csv(run / "deployed_pareto.csv")
    assert shipped["stage"].item() in set(deployed["stage"])
    assert (deployed["latency_ms"] <= base_ms).all() and (deployed["status"] == "ok").all()

    # the report, and what it tells: the device measured on, trial times, stage timings
    html = (run / "report.html").read_text()
    assert "report: " in out and "opens offline" in out
    assert "Recommendation" in html and rows["model_id"].iloc[0] in html
    assert shipped["artifact"].item() in html  # the recommendation names the shipped file
    environment = json.loads((run / "environment.json").read_text())
    assert set(environment) == {"search", "compress"}
    assert environment["search"]["packages"]["torch"] == torch.__version__
    assert (trials["finished_at"] >= trials["started_at"]).all()
    assert json.loads((run / "stages.json").read_text())["compress"]["seconds"] > 0
    assert len(json.loads(rows.loc[rows["stage"] == "int8", "latency_samples_ms"].item())) > 5

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
    assert "already finished, skipped" in out and "already compressed, skipped" in out


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
    # a real budget here: stages that lose the bars are rejected, INT8 starts from a good model
    nas("search", "bars.yaml", *TINY, "--set", "search.n_trials=2", "--set", "ray.dashboard=false",
        "--set", "compress.max_accuracy_drop=5", cwd=tmp_path)
    run = tmp_path / "runs" / "quickstart"
    trials = pd.read_parquet(run / "trials.parquet")
    assert len(trials) == 2 and (trials["state"] == "COMPLETE").all()
    data = json.loads((run / "data.json").read_text())
    assert data["classes"] == ["horizontal", "vertical", "noise"]
    assert data["input_shape"] == [1, 3, 20, 20] and len(data["normalization"]["mean"]) == 3

    # a deployer with the file the model ships (fp32 or INT8, whichever measured faster)
    # alone classifies the raw images
    import onnxruntime as ort

    from evaluators._splits import split_indices

    model_dir = next((run / "models").iterdir())
    shipped = json.loads((model_dir / "deployed.json").read_text())
    proto = onnx.load(run / "models" / shipped["artifact"])
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props
            if p.key in ("preprocessing", "classes")}
    pre = meta["preprocessing"]
    mean = np.array(pre["mean"], dtype=np.float32)[None, :, None, None]
    std = np.array(pre["std"], dtype=np.float32)[None, :, None, None]
    inputs = (x.astype(np.float32) * pre["scale"] - mean) / std  # already 20x20, as the graph
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    predicted = [meta["classes"][int(session.run(None, {name: img[None]})[0].argmax())] for img in inputs]
    truth = [["horizontal", "vertical", "noise"][i] for i in y]
    hit = np.array([p == t for p, t in zip(predicted, truth)])
    # on the run's own test images the file alone scores what the pipeline recorded for it
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    _, _, test = split_indices(y, val_fraction=resolved["data"]["val_fraction"],
                               test_fraction=resolved["data"]["test_fraction"],
                               seed=resolved["experiment"]["seed"])
    recorded = shipped["accuracy"]
    assert abs(hit[test].mean() - recorded) <= 1.5 / len(test), (recorded, hit[test].mean())
    # bars are easy (chance is 1/3): the model learnt them, within the 5-point budget
    assert recorded > 0.8 and hit.mean() > 0.75, (recorded, hit.mean())


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


def test_peak_memory_is_an_objective_end_to_end(tmp_path: Path) -> None:
    run = tmp_path / "run"
    nas("search", str(QUICKSTART), "--run-dir", str(run), *TINY, "--set", "search.n_trials=3",
        "--set", "search.objectives={accuracy: max, latency_ms: min, peak_memory_mb: min}",
        "--set", "ray.dashboard=false", cwd=tmp_path)
    trials = pd.read_parquet(run / "trials.parquet")
    assert (trials["state"] == "COMPLETE").all()
    assert (trials["peak_memory_mb"] > 0).all() and (trials["size_mb"] > 0).all()
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{run / 'study.db'}")
    assert study.metric_names == ["accuracy", "latency_ms", "peak_memory_mb"]
    front = pd.read_csv(run / "pareto.csv")
    assert len(front) >= 1 and front["peak_memory_mb"].notna().all()
    html = (run / "report.html").read_text()
    for pair in ("accuracy vs latency_ms", "accuracy vs peak_memory_mb",
                 "peak_memory_mb vs latency_ms"):
        assert pair in html, pair  # the plot's menu offers every pair of the three objectives
