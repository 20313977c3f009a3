"""Run directories for report tests, written by the product's own writers (a real Optuna
study told through the study adapter, the latency cache, the run directory) without
training anything: the report only reads files."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from compress._pipeline import StageRecord
from evaluators.latency import Latency, LatencyCache
from hwprofiles import describe_environment, load_profile
from nas import RunDir, StudyAdapter, load_config, make_sampler, open_study, pareto_frame
from pareto import choose_deployed, deployed_front
from search_spaces import get_search_space

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'

MakeRun = Callable[..., Path]
UNRELIABLE_NOTE = ("busy device: other processes used 0.93 of core 0 over 0.41 s, above "
                   "max_load 0.25 (after 3 attempts)")


def _fake_metrics(arch: dict, rng: random.Random) -> dict[str, float]:
    size = sum(int(v) for k, v in arch.items() if k[0] in "dke") - 64  # 0 to about 56
    return {"accuracy": 0.85 + 0.0015 * size + rng.uniform(0, 0.03),
            "latency_ms": 0.02 + 0.0005 * size + rng.uniform(0, 0.006),
            "latency_cv": rng.uniform(0.01, 0.08), "params": 1000.0 * size, "macs": 50000.0 * size}


def build_run(
    root: Path, *, trials: int = 24, compressed: bool = True, failures: int = 2,
    name: str = "report-test", error: str = "RuntimeError: simulated out of memory", seed: int = 0,
    overrides: tuple[str, ...] = (), int8_slower: bool = False, unreliable: int = 0,
) -> Path:
    """Writes a finished run directory with ``trials`` trials (``failures`` of them FAIL
    with ``error``), its Pareto set, latency samples and, if ``compressed``, compression
    results for its two fastest Pareto models (with ``int8_slower``, INT8 measured slower
    than its input, so the models ship fp32). The last ``unreliable`` trials are the most
    accurate and fastest, but their latency was measured on a busy device."""
    overrides = [f"search.n_trials={trials}", f"experiment.seed={seed}", *overrides]
    if not compressed:
        overrides.append("compress.enabled=false")
    spec = load_config(ROOT / "configs" / "quickstart.yaml", overrides)
    run = RunDir(root)
    run.prepare(spec, ["/usr/bin/nas", "search", "configs/quickstart.yaml", "--run-dir", str(root)])
    raw = yaml.safe_load(run.config.read_text())
    raw["experiment"]["name"] = name  # as a hand-edited config could say: the report must cope
    run.config.write_text(yaml.safe_dump(raw, sort_keys=False))
    space = get_search_space(spec.search_space.name, **spec.search_space.options())
    from nas import Objectives

    objectives = Objectives(dict(spec.search.objectives), dict(spec.search.constraints))
    study = open_study(run.storage_url(), "report-test", objectives,
                       make_sampler("random", seed=seed, objectives=objectives))
    adapter = StudyAdapter(study, space, objectives)
    rng = random.Random(seed)
    profile = load_profile("cpu")
    with LatencyCache(run.latency_cache) as cache:
        for i in range(trials):
            number, arch = adapter.ask()
            if i < failures:
                adapter.tell_result(number, None, error)
                continue
            metrics: dict[str, object] = dict(_fake_metrics(dict(arch.items()), rng))
            if i >= trials - unreliable:
                metrics.update(accuracy=0.999, latency_ms=0.001, latency_reliable=0.0,
                               latency_note=UNRELIABLE_NOTE)
            adapter.tell_result(number, metrics, None)
            samples = [metrics["latency_ms"] * rng.uniform(0.95, 1.1) for _ in range(40)]
            cache.put(arch.key(), profile.fingerprint(), (1, 1, 16, 16), Latency.from_samples(samples))
    frame = adapter.frame()
    run.write_frame(run.trials, frame)
    front = pareto_frame(frame, objectives).sort_values("latency_ms")
    run.write_frame(run.pareto, front)
    run.mark_done("supernet", seconds=12.5)
    run.mark_done("search", trials=trials, seconds=30.0, ray_start_seconds=3.0,
                  eval_seconds_per_trial=1.0, overhead_seconds_per_trial=0.3)
    run.mark_done("pareto", models=len(front))
    run.record_environment("search", describe_environment(profile))
    if compressed:
        rows = []
        for trial in front.head(2).itertuples():
            model = f"trial_{trial.number}"
            (run.models / model).mkdir(parents=True, exist_ok=True)
            acc, lat = float(trial.accuracy), float(trial.latency_ms)
            int8 = ((acc - 0.001, lat * 1.3, "slower", ("0.0300 ms is 1.30x the distilled "
                     "model's: slower than its input")) if int8_slower else
                    (acc - 0.001, lat * 0.7, "ok", "path=onnxruntime static QDQ"))
            stages = [("baseline", acc, lat, "ok", "", ""),
                      ("pruned", acc - 0.03, lat * 0.8, "rejected",
                       "test accuracy fell 3.00 points below the baseline's (budget 1)", "baseline"),
                      ("distilled", acc - 0.002, lat * 0.9, "ok", "", "baseline"),
                      ("int8", *int8, "distilled")]
            for stage, a, t, status, reason, parent in stages:
                samples = [t * rng.uniform(0.95, 1.1) for _ in range(30)]
                artifact = f"{model}/{'model.int8' if stage == 'int8' else stage}.onnx"
                if status == "ok":
                    (run.models / artifact).write_bytes(b"onnx")
                rows.append(StageRecord(model, stage, a, t, 0.03, 1e4, 1e5, 1e5, artifact,
                                        status, reason, json.dumps(samples), parent,
                                        lat / t).to_dict())
            rows.append(StageRecord(model, "tensorrt", *[float("nan")] * 6, "", "skipped",
                                    "TensorRT engine not built: tensorrt is not installed").to_dict())
        table = pd.DataFrame(rows)
        for _, group in table.groupby("model_id"):
            table.loc[choose_deployed(group), "deployed"] = True
        table["deployed"] = table["deployed"].fillna(False).astype(bool)
        run.write_frame(run.compression, table)
        run.write_frame(run.deployed_pareto, deployed_front(table))
        run.mark_done("compress", models=2, seconds=40.0)
    return run.root


@pytest.fixture(scope="session")
def run_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    """Returns ``make(name, **options)``: a run directory built once per session and name."""
    built: dict[str, Path] = {}

    def make(key: str, **options: object) -> Path:
        if key not in built:
            built[key] = build_run(tmp_path_factory.mktemp("runs") / key, **options)  # type: ignore[arg-type]
        return built[key]

    yield make


CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Returns headless Chromium (Debian's package) driven by Playwright. Skips where the
    browser is missing, except under CI (``CI=true``), where that is a failure."""
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs /usr/bin/chromium: .ci/run installs the Debian package")
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=LAUNCH_ARGS)
        yield browser
        browser.close()
