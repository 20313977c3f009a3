"""The compression table printed after ``nas compress`` and the per-model records it resumes
from: what each stage's note says, and which records are kept."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from rich.console import Console

from compress import StageRecord
from nas._compress_stage import compression_table


def _render(rows: pd.DataFrame) -> str:
    console = Console(record=True, width=400)
    console.print(compression_table(rows))
    return console.export_text()


def test_a_latency_the_device_could_not_measure_reliably_is_named_in_the_note() -> None:
    note = "busy device: other processes used 1.50 of 2 cores"
    rows = pd.DataFrame([r.to_dict() for r in (
        StageRecord("trial_3", "baseline", 0.95, 0.20, 0.3, 1e4, 1e5, 1e5, "trial_3/baseline.onnx",
                    "ok", "", latency_reliable=False, latency_note=note),
        StageRecord("trial_3", "pruned", 0.95, 0.10, 0.3, 1e4, 1e5, 1e5, "trial_3/pruned.onnx",
                    "unconfirmed", "never reliably", latency_reliable=False, latency_note=note),
        StageRecord("trial_3", "tensorrt", *[math.nan] * 6, "", "skipped", "no TensorRT"),
    )])
    text = _render(rows)
    baseline = next(line for line in text.splitlines() if "baseline" in line)
    pruned = next(line for line in text.splitlines() if "pruned" in line)
    assert f"latency unreliable: {note}" in baseline
    assert "unconfirmed" in pruned and f"never reliably; latency unreliable: {note}" in pruned
    assert "unreliable" not in next(line for line in text.splitlines() if "tensorrt" in line)
    # rows of a run from before the flag was kept have no such columns, and no such note
    old = rows.drop(columns=["latency_reliable", "latency_note"])
    assert "unreliable" not in _render(old)


def test_a_model_recorded_before_latency_reliability_was_kept_is_compressed_again(
    tmp_path: Path,
) -> None:
    from nas._compress_stage import ModelRecord

    row = StageRecord("trial_3", "baseline", 0.95, 0.20, 0.03, 1e4, 1e5, 1e5,
                      "trial_3/baseline.onnx", "ok", "").to_dict()
    record = ModelRecord(tmp_path / "trial_3")
    record.root.mkdir()
    (record.root / "baseline.onnx").write_bytes(b"onnx")
    record.write("digest", [row])
    rows, why = record.verified("digest")
    assert rows is not None and why == "" and bool(rows["latency_reliable"].iloc[0])
    # the same record without the flag: its verdicts may rest on flagged figures
    old = {k: v for k, v in row.items() if k not in ("latency_reliable", "latency_note")}
    record.write("digest", [old])
    assert record.verified("digest") == (
        None, "it was recorded before each latency's reliability was kept")
