"""The supernet-ranking benchmark on a tiny space and a few hundred shapes: it runs end to end
in worker processes, reports tau and rho with their intervals, reuses what it trained, and
leaves no worker behind when it is killed."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import supernet_ranking  # noqa: E402
from nas._config import load_config  # noqa: E402


@pytest.fixture()
def config(tmp_path: Path, tiny_options: dict[str, Any]) -> Path:
    path = tmp_path / "ranking.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": {"name": "ranking-smoke", "seed": 0},
        "data": {"dataset": "digits", "image_size": 12, "val_fraction": 0.25,
                 "test_fraction": 0.1, "batch_size": 32},
        "search_space": {"name": "mobilenet_elastic", **tiny_options},
        "supernet": {"epochs": 1},
        "hardware": {"profile": "cpu"},
    }))
    return path


@pytest.mark.slow
def test_the_benchmark_reports_rank_agreement_and_reuses_what_it_trained(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = [str(config), "--data", "config", "--subnets", "5", "--standalone-epochs", "2",
            "--standalone-seeds", "2", "--workers", "2", "--out", str(out)]
    assert supernet_ranking.main(argv) == 0
    report = json.loads((out / "ranking.json").read_text())
    assert report["standalone_seeds"] == [0, 1] and report["standalone_epochs"] == 2
    (recipe,) = report["recipes"]
    tau = (recipe["kendall_tau_low"], recipe["kendall_tau"], recipe["kendall_tau_high"])
    assert -1.0 <= tau[0] <= tau[1] <= tau[2] <= 1.0
    assert -1.0 <= recipe["spearman_rho"] <= 1.0
    assert len(recipe["subnets"]) == 5
    for subnet in recipe["subnets"]:
        assert len(subnet["standalone_runs"]) == 2 and 0.0 <= subnet["inherited"] <= 1.0
        assert subnet["standalone"] == pytest.approx(sum(subnet["standalone_runs"]) / 2)
    assert report["reference_agreement"]["pairs"]  # two seeds: their agreement is reported
    ceiling = report["noise_ceiling"]  # and how far any ranking could agree with their mean
    assert ceiling["seeds"] == 2 and ceiling["noise_sd"] >= 0.0
    # a seed held out leaves one run, no mean, to rank against: from three seeds on
    assert report["held_out"] is None and recipe["held_out"] is None
    printed = capsys.readouterr().out
    assert "Kendall tau" in printed and "noise ceiling" in printed

    # a second run with the same settings trains nothing: every score and the supernet are
    # read back, and the report is the same
    kept = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "ranking.json"}
    assert any(n.startswith("supernet-") for n in kept)
    assert supernet_ranking.main(argv) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()
            if p.name != "ranking.json"} == kept
    again = json.loads((out / "ranking.json").read_text())
    assert again["recipes"][0]["subnets"] == recipe["subnets"]

    # an option of the supernet alone (learned kernel transforms) trains a new supernet, but
    # reuses every subnet trained alone
    assert supernet_ranking.main([*argv, "--set", "search_space.kernel_transform=true"]) == 0
    added = {p.name for p in out.iterdir()} - set(kept) - {"ranking.json"}
    assert len(added) == 2 and all(n.startswith("supernet-") for n in added)
    assert all((out / n).stat().st_mtime_ns == t for n, t in kept.items())
    transformed = json.loads((out / "ranking.json").read_text())["recipes"][0]["subnets"]
    assert [s["standalone_runs"] for s in transformed] == [
        s["standalone_runs"] for s in recipe["subnets"]]
    assert [s["inherited"] for s in transformed] != [s["inherited"] for s in recipe["subnets"]]


def test_glyphs_are_drawn_at_the_configs_image_size_and_keyed_by_it(
    config: Path, tmp_path: Path
) -> None:
    args = argparse.Namespace(data="glyphs", glyphs_n=800, shapes_n=4000, image_size=None)
    data, key = supernet_ranking.load_data(args, load_config(config, []), tmp_path)
    assert key == "glyphs:800:12:0.25:0.1"  # the caches of another size or split differ
    assert (tmp_path / "glyphs-800-12.npz").exists()
    assert data.num_classes == 40 and tuple(data.input_shape) == (1, 3, 12, 12)
    assert int(data.y_train.numel() + data.y_val.numel() + data.y_test.numel()) == 800


def test_a_killed_benchmark_leaves_no_worker_training(tmp_path: Path) -> None:
    # a parent process gives its pool of stand-alone workers a long job, then is killed
    # with SIGKILL (no cleanup of its own runs): its workers exit on their own
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import multiprocessing, os, sys, time
        from concurrent.futures import ProcessPoolExecutor
        sys.path.insert(0, {str(BENCHMARKS)!r})
        from supernet_ranking import start_worker

        def train_long(pids):
            with open(pids, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            time.sleep(600)

        if __name__ == "__main__":
            pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=start_worker, initargs=(1, os.getpid()))
            jobs = [pool.submit(train_long, sys.argv[1]) for _ in range(2)]
            time.sleep(600)
    """))
    pids = tmp_path / "workers.txt"
    parent = subprocess.Popen([sys.executable, str(script), str(pids)])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (
                not pids.exists() or len(pids.read_text().split()) < 2):
            time.sleep(0.2)
        workers = [int(p) for p in pids.read_text().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [p for p in workers if _alive(p)]
    for pid in alive:  # do not leave them to the rest of the suite either
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived their killed parent"


def _alive(pid: int) -> bool:
    """Returns whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_recipe_sets_how_subnets_are_scored_apart_from_how_the_supernet_trains(
    config: Path,
) -> None:
    spec = load_config(config, [])
    plain = supernet_ranking.parse_recipe("config", spec)
    tuned = supernet_ranking.parse_recipe("ft:finetune_epochs=2,recalibration_batches=16", spec)
    assert (plain.finetune_epochs, plain.recalibration_batches) == (0, 8)
    assert tuned.scoring() == {"finetune_epochs": 2, "recalibration_batches": 16}
    assert tuned.supernet == plain.supernet
    # scoring does not change the supernet: a fine-tuning recipe reuses the trained one
    assert tuned.digest("d", "s", 0) == plain.digest("d", "s", 0)
    longer = supernet_ranking.parse_recipe("long:epochs=3,shrink_epochs=1", spec)
    assert longer.digest("d", "s", 0) != plain.digest("d", "s", 0)
    # a bare word is a string value
    uniform = supernet_ranking.parse_recipe("spos:sampling=uniform,random_subnets=4", spec)
    assert (uniform.supernet.sampling, uniform.supernet.random_subnets) == ("uniform", 4)
    for bad in ("x:finetune_epochs=-1", "x:epochs=0", "x:batch_size=8", "x:sampling=fair"):
        with pytest.raises(SystemExit, match="--recipe"):
            supernet_ranking.parse_recipe(bad, spec)
