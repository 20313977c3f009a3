"""A search whose every latency stayed unreliable has an empty front: compression says so
instead of failing."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
from rich.console import Console

from nas import RunDir, load_config
from nas._compress_stage import CompressStage
from nas._stage import RunContext

ROOT = Path(__file__).resolve().parents[2]


def test_an_empty_front_compresses_nothing_and_says_why(tmp_path: Path) -> None:
    spec = load_config(ROOT / "configs" / "quickstart.yaml")
    run = RunDir(tmp_path / "run")
    run.prepare(spec, ["nas", "search"])
    columns = ["number", "state", "accuracy", "latency_ms", "latency_cv", "arch"]
    run.write_frame(run.pareto, pd.DataFrame(columns=columns))
    out = io.StringIO()
    ctx = RunContext(spec=spec, run=run, console=Console(file=out, width=200))
    CompressStage().run(ctx)
    text = out.getvalue()
    assert "Pareto front is empty" in text and "no model was compressed" in text
    assert not run.compression.exists() and not run.models.exists()
    assert run.done_stages()["compress"]["models"] == 0
