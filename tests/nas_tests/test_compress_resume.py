"""Compression resumes model by model, and redoes a model whose files changed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import onnx
import pandas as pd
import pytest

from nas._compress_stage import ModelRecord, settings_digest
from nas._rundir import RunDir
from tests.nas_tests.conftest import run_nas

pytestmark = pytest.mark.slow

# a compress setting that changes how every model is compressed, at no extra cost
RESTART = ["--set", "compress.top_k=0", "--set", "compress.calibration_batches=4"]


def two_model_front(run: Path) -> list[str]:
    """Makes ``pareto.csv`` a front of exactly two models (the tiny search's front may hold one,
    two or more) and returns their ids in compression order."""
    pareto, trials = pd.read_csv(run / "pareto.csv"), pd.read_parquet(run / "trials.parquet")
    extra = trials[(trials["state"] == "COMPLETE") & ~trials["arch"].isin(pareto["arch"])]
    front = pd.concat([pareto, extra], ignore_index=True).head(2)
    assert front["arch"].nunique() == 2
    front.to_csv(run / "pareto.csv", index=False)
    rundir = RunDir(run)  # record the new table's checksum, as the pareto stage would
    info = {k: v for k, v in rundir.done_stages()["pareto"].items()
            if k not in ("finished_at", "artifacts")}
    rundir.mark_done("pareto", artifacts=[rundir.pareto], **{**info, "models": len(front)})
    return [f"trial_{n}" for n in front.sort_values("latency_ms")["number"]]


def files_of(model_dir: Path) -> dict[str, int]:
    """Returns ``{name: mtime_ns}`` of a model's files."""
    return {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}


def test_a_killed_compression_resumes_at_the_model_it_stopped_in(
    copy_run: Callable[[str], Path], tmp_path: Path
) -> None:
    run = copy_run("run")
    first, second = two_model_front(run)
    digest = settings_digest(RunDir(run).load_spec(RESTART[1::2]).compress)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nas._cli", "compress", str(run), *RESTART],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            cwd=tmp_path)
    record = ModelRecord(run / "models" / first)
    deadline = time.monotonic() + 600
    try:
        while record.verified(digest)[0] is None:
            assert proc.poll() is None and time.monotonic() < deadline, "compress ended early"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert ModelRecord(run / "models" / second).verified(digest)[0] is None
    kept = files_of(run / "models" / first)

    out = run_nas("compress", str(run), *RESTART, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 of 2 models already compressed and verified, kept" in out.stdout
    assert files_of(run / "models" / first) == kept  # not one file of it written again
    rows = pd.read_parquet(run / "compression.parquet")
    assert rows["model_id"].unique().tolist() == [first, second]
    assert ModelRecord(run / "models" / second).verified(digest)[0] is not None
    assert json.loads((run / "stages.json").read_text())["compress"]["settings"] == digest


def test_a_truncated_model_is_compressed_again_not_skipped(
    copy_run: Callable[[str], Path], tmp_path: Path
) -> None:
    run = copy_run("run")
    shipped = pd.read_csv(run / "deployed_pareto.csv")["artifact"].iloc[0]  # trial_N/x.onnx
    onnx_file = run / "models" / shipped
    onnx_file.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])

    report = run_nas("report", str(run), cwd=tmp_path)  # never recommends the broken file
    assert report.returncode == 2 and onnx_file.name in report.stdout, report.stdout
    assert f"nas compress {run}" in report.stdout

    out = run_nas("compress", str(run), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{onnx_file.parent.name} again: {onnx_file.name} missing or damaged" in out.stdout
    assert "already compressed, skipped" not in out.stdout
    # measured again, the stages may rank otherwise: whatever ships now loads, and the cut
    # file is either whole again or gone with its stage
    for artifact in pd.read_csv(run / "deployed_pareto.csv")["artifact"]:
        onnx.checker.check_model(onnx.load(run / "models" / artifact))
    if onnx_file.exists():
        onnx.checker.check_model(onnx.load(onnx_file))
    assert run_nas("report", str(run), cwd=tmp_path).returncode == 0
