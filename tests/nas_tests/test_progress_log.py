"""Progress in a log: without a terminal, the stages print one plain line per step."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from rich.console import Console

from nas import RunDir, RunSpec, load_config
from nas._compress_stage import CompressStage
from nas._progress import log_line, trial_line
from nas._search_stage import SearchStage
from nas._stage import RunContext
from nas._supernet_stage import SupernetStage

QUICK_PROFILE = Path(__file__).with_name("cpu-quick.yaml")
TRIAL = re.compile(r"^trial (\d+) (COMPLETE|FAIL|PRUNED)\b(.*)$", re.MULTILINE)


def _config(tmp_path: Path, tiny_options: dict[str, Any], **sections: Any) -> Path:
    """Writes a config that trains and searches a two-stage space on 12x12 digits."""
    config = {
        "experiment": {"name": "tiny", "seed": 0},
        "data": {"dataset": "digits", "image_size": 12, "batch_size": 128},
        "search_space": {"name": "mobilenet_elastic", **tiny_options},
        "supernet": {"epochs": 2, "random_subnets": 1},
        "search": {"sampler": {"name": "random"}, "n_trials": 2, "max_concurrent": 1,
                   "objectives": {"accuracy": "max", "latency_ms": "min"},
                   "recalibration_batches": 2, "remeasure": 0},
        "hardware": {"profile": str(QUICK_PROFILE), "lock_dir": str(tmp_path / "locks")},
        "ray": {"dashboard": False, "num_cpus": 2},
        "compress": {"top_k": 1, "finetune_epochs": 1, "max_accuracy_drop": 100,
                     "prune": {"iterations": 1, "finetune_epochs": 1}, "distill": {"epochs": 1}},
        **sections,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _log_context(spec: RunSpec, run: RunDir) -> tuple[RunContext, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    return RunContext(spec=spec, run=run, console=console), out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_options: dict[str, Any],
            one_thread: None) -> tuple[RunSpec, RunDir, str]:
    """A run directory whose supernet was trained (2 epochs) with a log console; its log."""
    tmp_path = tmp_path_factory.mktemp("progress")
    spec = load_config(_config(tmp_path, tiny_options))
    run = RunDir(tmp_path / "run")
    run.prepare(spec, ["nas", "search"])
    ctx, out = _log_context(spec, run)
    SupernetStage().run(ctx)
    return spec, run, out.getvalue()


def test_supernet_training_prints_a_line_per_epoch(trained: tuple[RunSpec, RunDir, str]) -> None:
    _, run, text = trained
    epochs = re.findall(r"^supernet epoch (\d)/2 loss (\d+\.\d+) \((\d+\.\d) s\)$", text,
                        re.MULTILINE)
    assert [e[0] for e in epochs] == ["1", "2"], text
    losses = json.loads(run.supernet_info.read_text())["losses"]
    assert [float(e[1]) for e in epochs] == pytest.approx(losses, abs=1e-4)


def test_a_terminal_gets_no_lines_and_markup_in_a_log_line_stays_text() -> None:
    terminal, log = io.StringIO(), io.StringIO()
    log_line(Console(file=terminal, force_terminal=True), "trial 1 COMPLETE")
    assert terminal.getvalue() == ""
    reason = "ValueError: [bold]bad[/bold] :thumbs_up:\nsecond line"
    log_line(Console(file=log, force_terminal=False, width=20),
             trial_line(3, "FAIL", {}, 1.25, reason=reason))
    # one unwrapped line, the user's text verbatim (no markup or emoji applied)
    assert log.getvalue() == ("trial 3 FAIL (1.2 s): ValueError: [bold]bad[/bold] "
                              ":thumbs_up: second line\n")


def test_a_compression_stage_prints_a_line(trained: tuple[RunSpec, RunDir, str]) -> None:
    spec, run, _ = trained
    space = RunContext(spec=spec, run=run).space
    arch = space.min_arch().to_json()
    run.write_frame(run.pareto, pd.DataFrame(
        [{"number": 0, "state": "COMPLETE", "accuracy": 0.5, "latency_ms": 0.1, "arch": arch}]))
    ctx, out = _log_context(spec, run)
    CompressStage().run(ctx)
    text = out.getvalue()
    lines = re.findall(r"^compress trial_0 (\w+) (\w+) accuracy=(\S+) latency_ms=(\S+) "
                       r"speedup=(\S+) \(\d+\.\d s\)(.*)$", text, re.MULTILINE)
    rows = pd.read_parquet(run.compression)
    assert [line[0] for line in lines] == rows["stage"].tolist(), text
    assert {line[1] for line in lines} <= {"ok", "rejected", "slower", "unconfirmed", "skipped"}
    baseline = lines[0]
    assert baseline[0] == "baseline" and float(baseline[2]) > 0 and float(baseline[3]) > 0
    assert baseline[4] == "1.00x"
    assert lines[-1][:2] == ("tensorrt", "skipped") and lines[-1][5].startswith(": ")


@pytest.mark.slow
def test_a_search_prints_a_line_per_trial(trained: tuple[RunSpec, RunDir, str]) -> None:
    spec, run, _ = trained
    ctx, out = _log_context(spec, run)
    SearchStage().run(ctx)
    text = out.getvalue()
    trials = pd.read_parquet(run.trials)
    found = TRIAL.findall(text)
    assert [(int(n), state) for n, state, _ in found] == list(
        zip(trials["number"], trials["state"], strict=True)), text
    for (_, state, rest), row in zip(found, trials.itertuples(), strict=True):
        if state == "COMPLETE":
            assert f"accuracy={row.accuracy:.4g} latency_ms={row.latency_ms:.4g} " in rest
        assert re.search(rf"\[{row.number + 1}/2 done, front \d, hypervolume ", rest), rest


@pytest.mark.slow
def test_nas_search_with_stdout_to_a_file_logs_every_trial(
    tmp_path: Path, tiny_options: dict[str, Any]
) -> None:
    config = _config(tmp_path, tiny_options, supernet={"epochs": 1, "random_subnets": 1})
    log = tmp_path / "search.log"
    with log.open("w") as stdout:  # as under nohup: stdout is a file, no terminal
        proc = subprocess.run(
            [sys.executable, "-m", "nas._cli", "search", str(config), "--run-dir",
             str(tmp_path / "run"), "--set", "compress.enabled=false"],
            stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=300,
            check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})  # tiny nets: 1 thread
    text = log.read_text()
    assert proc.returncode == 0, text + proc.stderr
    assert re.search(r"^supernet epoch 1/1 loss \d", text, re.MULTILINE), text
    assert [(int(n), s) for n, s, _ in TRIAL.findall(text)] == [(0, "COMPLETE"), (1, "COMPLETE")]
