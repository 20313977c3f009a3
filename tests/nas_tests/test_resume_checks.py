"""What a resume verifies before it skips work: checksums, the study, the stage records,
leftovers of killed writes, a report that is no longer current."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch

from evaluators.latency import LatencyCache
from nas._config import RunSpec
from nas._errors import RunDirError
from nas._rundir import RunDir
from nas._stage import RunContext
from nas._supernet_stage import SupernetStage


def test_a_recorded_artifact_that_changed_is_found(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.save_state_dict(run.supernet, {"w": torch.ones(3)})
    run.mark_done("supernet", artifacts=[run.supernet], seconds=1.0)
    assert run.damaged_artifacts("supernet") == []
    run.supernet.write_bytes(run.supernet.read_bytes()[:-8])
    assert run.damaged_artifacts("supernet") == ["supernet.pt"]
    run.supernet.unlink()
    assert run.damaged_artifacts("supernet") == ["supernet.pt"]


def test_a_changed_supernet_is_refused_once_trials_used_it(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.save_state_dict(run.supernet, {"w": torch.ones(3)})
    run.mark_done("supernet", artifacts=[run.supernet])
    run.supernet.write_bytes(b"\0" * 64)
    run.study.write_bytes(b"")  # a search has begun
    with pytest.raises(RunDirError, match="supernet.pt: missing, or not what was written"):
        SupernetStage().run(RunContext(spec=RunSpec(), run=run))


def test_a_damaged_weights_file_is_a_user_error_naming_it(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    for content in (b"", b"PK\x03\x04garbage", b"\x80\x02}q\x00."):
        run.supernet.write_bytes(content)
        with pytest.raises(RunDirError, match="supernet.pt: damaged"):
            run.load_state_dict(run.supernet)


@pytest.mark.parametrize("content", ["", "{\"supernet\": {", "[1, 2]", "\xff\xfe"])
def test_damaged_stage_records_are_named_with_a_way_out(tmp_path: Path, content: str) -> None:
    run = RunDir(tmp_path)
    run.stages.write_text(content, encoding="latin-1")
    with pytest.raises(RunDirError, match="stages.json: damaged.*another --run-dir"):
        run.done_stages()


def test_a_damaged_or_emptied_study_is_refused(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.check_study()  # none yet: fine
    study = optuna.create_study(storage=run.storage_url(), study_name="s")
    study.add_trial(optuna.trial.create_trial(value=1.0))
    del study
    run.check_study()  # sound
    run.mark_done("search", trials=1)
    good = run.study.read_bytes()
    run.study.write_bytes(good[: len(good) // 3])
    with pytest.raises(RunDirError, match="study.db: damaged, not a readable SQLite database"):
        run.check_study()
    run.study.write_bytes(b"")
    with pytest.raises(RunDirError, match="holds no trials, yet this run recorded some"):
        run.check_study()


def test_a_damaged_latency_cache_is_set_aside_and_a_fresh_one_starts(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.latency_cache.write_bytes(b"not a database at all" * 100)
    aside = run.set_aside_damaged_cache()
    assert aside is not None and aside.name == "latency_cache.db.damaged"
    assert not run.latency_cache.exists()
    assert len(LatencyCache(run.latency_cache)) == 0  # a fresh cache opens
    assert run.set_aside_damaged_cache() is None


def test_leftovers_of_killed_writes_are_removed_and_nothing_else(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    keep = [run.root / "trials.parquet", run.tune / "search-0" / "result.json",
            run.models / "trial_1" / "model.onnx"]
    leftovers = [run.root / ".report.html.x1y2.tmp", run.models / "trial_1" / ".model.onnx.k.tmp",
                 run.tune / "search-0" / "trial_1" / "result.json",
                 run.tune / "search-0" / "events.out.tfevents.1"]
    for path in keep + leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" if path in keep or path.suffix == ".tmp" else b"")
    assert sorted(run.remove_leftovers()) == sorted(leftovers)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in leftovers)


def test_a_report_from_before_the_run_changed_is_marked_stale(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.report.write_text("<html>old</html>")
    run.mark_report_stale()
    assert not run.report.exists() and run.stale_report.read_text() == "<html>old</html>"


def test_stage_records_keep_checksums_in_json(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    (run.root / "a.bin").write_bytes(b"abc")
    run.mark_done("x", artifacts=[run.root / "a.bin"], n=1)
    record = json.loads(run.stages.read_text())["x"]
    assert record["n"] == 1 and record["artifacts"] == {
        "a.bin": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}


def test_models_are_never_compressed_from_a_changed_supernet(tmp_path: Path) -> None:
    from nas._compress_stage import ModelSource, settings_from_config

    run = RunDir(tmp_path)
    run.save_state_dict(run.supernet, {"w": torch.ones(3)})
    run.mark_done("supernet", artifacts=[run.supernet])
    run.save_state_dict(run.supernet, {"w": torch.zeros(3)})  # loads fine, other weights
    spec = RunSpec()
    with pytest.raises(RunDirError, match="supernet.pt: missing, or not what was written"):
        ModelSource(RunContext(spec=spec, run=run), settings_from_config(spec.compress, 0, 8))
