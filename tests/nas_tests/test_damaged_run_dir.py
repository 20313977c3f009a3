"""The damaged-file corpus: every artifact of a finished run directory emptied, cut to its
first half or garbled, under each command that reads it.

Each case must end in one of: exit 2 with a message that names the file (and no
traceback); exit 0 with the file written again (readable, or matching its recorded
checksum; a damaged latency cache set aside for a fresh one); or, for a command that does
not read the file, exit 0 leaving it as it was. Never exit 1, and never exit 0 while the
file stays damaged under a command that reads it (not even with the report saying so).
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from evaluators import mismatched
from nas._cli import main
from tests.nas_tests.conftest import QUICKSTART, TINY_RUN

pytestmark = pytest.mark.slow

DAMAGES = ("empty", "truncated", "garbled")
#: the run directory's own files (all of them in a finished run of the fixture)
RUN_FILES = ("config.yaml", "supernet.pt", "supernet.json", "data.json", "study.db",
             "trials.parquet", "pareto.csv", "latency_cache.db", "stages.json", "search.json",
             "environment.json", "compression.parquet", "deployed_pareto.csv", "report.html")
#: the files ``nas search`` reads on a finished run
SEARCH_FILES = ("config.yaml", "supernet.pt", "study.db", "stages.json", "trials.parquet",
                "latency_cache.db", "environment.json", "data.json")
#: one compressed model's files (the report links or recommends every one of them)
MODEL_FILES = ("model.onnx", "compressed.json", "deployed.json", "spec.json", "model.pt",
               "baseline.onnx", "pruned.onnx", "distilled.onnx", "baseline.pt", "pruned.pt",
               "distilled.pt", "prune_plan.json")
#: model files whose damage ``nas compress`` repairs by compressing the model again (slow:
#: only the cut-short form of each)
RECOMPRESSED = ("model.onnx", "compressed.json", "deployed.json", "spec.json")
#: the commands that never read a file on a finished run (it is left as it is)
NOT_READ = {"supernet.pt": {"report", "compress"}, "study.db": {"report", "compress"},
            "supernet.json": {"report", "compress", "search"},
            "search.json": {"report", "compress", "search"}}
MODEL = "models/MODEL/"  # the compressed model's folder, found in the run

CASES = (
    [(f, d, c) for f in RUN_FILES for d in DAMAGES for c in ("report", "compress")]
    + [(f, d, "search") for f in SEARCH_FILES for d in DAMAGES]
    + [(MODEL + f, d, "report") for f in MODEL_FILES for d in DAMAGES]
    + [(MODEL + f, "truncated", "compress") for f in RECOMPRESSED]
)
SUMMARY: list[tuple[str, str, str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints the corpus table (file, damage, command, outcome) and its counts at the end."""
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None or not SUMMARY:
        return
    counts = pd.Series([row[3] for row in SUMMARY]).value_counts()
    with capture.global_and_fixture_disabled():
        reporter.write_line("\ndamaged-file corpus: file, damage, command -> outcome")
        for row in SUMMARY:
            reporter.write_line("  {:<32} {:<10} {:<9} {}".format(*row))
        reporter.write_line("  " + ", ".join(f"{n} {k}" for k, n in counts.items())
                            + f" ({len(SUMMARY)} cases)")


def damage(path: Path, how: str) -> bytes:
    """Damages the file at ``path`` (``empty``: 0 bytes; ``truncated``: its first half;
    ``garbled``: a block in its middle overwritten with seeded random bytes); returns what
    it now holds."""
    data = path.read_bytes()
    if how == "empty":
        data = b""
    elif how == "truncated":
        data = data[: len(data) // 2]
    else:
        size = max(1, min(len(data) // 4, 4096))
        start = (len(data) - size) // 2
        noise = random.Random(path.name).randbytes(size)
        data = data[:start] + noise + data[start + size:]
    path.write_bytes(data)
    return data


def model_dir(run: Path) -> Path:
    """Returns the folder of the run's first compressed model."""
    return min(run.glob("models/*/compressed.json")).parent


def recorded_files(folder: Path) -> dict[str, str]:
    """Returns ``{file: sha256}`` recorded in a model's ``compressed.json``."""
    return dict(json.loads((folder / "compressed.json").read_text(encoding="utf-8"))["files"])


def sound(path: Path, run: Path) -> bool:
    """Returns whether the artifact at ``path`` is whole again: its model's files match
    their record, the supernet its recorded checksum, any other file reads as its kind."""
    try:
        if path.parent.parent.name == "models":
            files = recorded_files(path.parent)
            listed = path.name in files or path.name == "compressed.json"
            return listed and not mismatched(path.parent, files)
        if path.name == "supernet.pt":
            stages = json.loads((run / "stages.json").read_text(encoding="utf-8"))
            return not mismatched(run, stages["supernet"]["artifacts"])
        if path.suffix == ".json":
            return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
        if path.suffix == ".yaml":
            return "argv" in yaml.safe_load(path.read_text(encoding="utf-8"))
        if path.suffix == ".parquet":
            return not pd.read_parquet(path).empty
        if path.suffix == ".csv":
            return len(pd.read_csv(path).columns) > 1
        if path.suffix == ".html":
            return path.read_text(encoding="utf-8").rstrip().endswith("</html>")
        if path.suffix == ".db":
            return _sound_database(path)
        if path.suffix == ".pt":
            return isinstance(torch.load(path, weights_only=True), dict)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, sqlite3.Error):
        return False
    raise AssertionError(f"no check for {path.name}")


def _sound_database(path: Path) -> bool:
    """Returns whether a run database is sound: the study holds its trials, the latency
    cache (or its fresh replacement, or none: a damaged one set aside) its table."""
    if path.name == "latency_cache.db" and not path.exists():
        return path.with_name(path.name + ".damaged").exists()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            return False
        table = "trials" if path.name == "study.db" else "latency"
        count = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        return count > 0 or path.name != "study.db"
    finally:
        db.close()


def command_line(command: str, run: Path) -> list[str]:
    """Returns the ``nas`` arguments of ``command`` on the run directory ``run``."""
    if command == "search":
        return ["search", str(QUICKSTART), "--run-dir", str(run), *TINY_RUN]
    return [command, str(run)]


def outcome(name: str, command: str, status: int, out: str, damaged: bytes, path: Path,
            run: Path) -> str:
    """Returns how the command dealt with the damaged file: ``exit 2``, ``recomputed``,
    ``not read`` or ``FAILED: why``."""
    flat = " ".join(out.split())
    if "Traceback" in out:
        return "FAILED: traceback"
    if status == 2:
        if name not in flat:
            return "FAILED: exit 2 without naming the file"
        if not any(hint in flat for hint in ("estore", "`nas ", "delete it")):
            return "FAILED: exit 2 without saying what to do"
        return "exit 2"
    if status != 0:
        return f"FAILED: exit {status}"
    still = path.exists() and path.read_bytes() == damaged
    if still and command in NOT_READ.get(name, ()):
        return "not read"
    if not still and sound(path, run):
        return "recomputed"
    # a damaged file that still parses (a CSV cut at a row's end) must not pass for whole
    return "FAILED: exit 0, the damaged file used as it is"


@pytest.mark.parametrize(("target", "how", "command"), CASES,
                         ids=[f"{t.removeprefix(MODEL)}-{d}-{c}" for t, d, c in CASES])
def test_a_damaged_file_is_refused_or_recomputed(
    copy_run: Callable[[str], Path], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, target: str, how: str, command: str,
) -> None:
    import ray

    monkeypatch.setenv("COLUMNS", "400")  # a path is never folded across lines
    run = copy_run("run")
    path = (model_dir(run) / target.removeprefix(MODEL) if target.startswith(MODEL)
            else run / target)
    if not path.exists():
        pytest.skip(f"the fixture's run has no {target}")
    damaged = damage(path, how)
    status = main(command_line(command, run))
    captured = capsys.readouterr()
    out = captured.out + captured.err
    result = outcome(path.name, command, status, out, damaged, path, run)
    SUMMARY.append((target.replace("MODEL", path.parent.name), how, command, result))
    started = ray.is_initialized()
    if started:
        ray.shutdown()
    assert not started, "a finished run's search started Ray"
    assert not result.startswith("FAILED"), f"{result}\n{out[-4000:]}"
    if result == "recomputed" and command != "report":  # the report was written again too
        assert sound(run / "report.html", run), out[-2000:]


def test_a_resumed_finished_search_does_not_start_ray(
    copy_run: Callable[[str], Path], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray

    monkeypatch.setenv("COLUMNS", "400")
    run = copy_run("run")
    status = main(command_line("search", run))
    out = capsys.readouterr().out
    assert status == 0, out[-4000:]
    assert "trials already finished, skipped" in out and "models already compressed" in out
    assert "Ray dashboard" not in out and not ray.is_initialized()


@pytest.mark.parametrize(("table", "command"), [("pareto.csv", "compress"),
                                                ("pareto.csv", "report"),
                                                ("deployed_pareto.csv", "report")])
def test_a_table_cut_at_a_row_end_is_refused(
    copy_run: Callable[[str], Path], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, table: str, command: str,
) -> None:
    """A CSV cut where a row ends still parses, with rows lost: its recorded checksum tells
    (the front would otherwise be compressed, or shown, without them)."""
    monkeypatch.setenv("COLUMNS", "400")
    run = copy_run("run")
    lines = (run / table).read_text(encoding="utf-8").splitlines(keepends=True)
    (run / table).write_text("".join(lines[:max(1, len(lines) - 1)]), encoding="utf-8")
    status = main(command_line(command, run))
    out = " ".join(capsys.readouterr().out.split())
    assert status == 2, out[-3000:]
    assert f"{run / table}: damaged" in out and "checksum differs" in out
    assert "`nas search`" in out or "`nas compress" in out
