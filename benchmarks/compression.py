"""What compression buys, measured: latency-targeted against MACs-targeted pruning, per profile.

For each selected Pareto model of a finished search, the compression chain (pruned,
distilled, INT8) runs once per hardware profile and pruning target, all from the same
fine-tuned baseline and at the same accuracy budget (``compress.max_accuracy_drop``):

* ``latency``: the run's measured-speed-up target (``compress.prune.speedup``, 1.5 by
  default), channels cut where the profile's measured layer table says time goes;
* ``macs``: uniform pruning to the MACs ratio the latency target reached on that model and
  profile, so the two compare at equal MACs (2.0 where the latency target cut nothing).

One table follows, per model, profile, target and stage: test accuracy (and points
against the baseline), latency measured on the profile, speed-up over the baseline, the
MACs ratio, the stage's status and whether it is the artifact the model ships.

    python benchmarks/compression.py runs/cpu-64 [--profiles cpu cpu-openvino] [--top-k 2]

Artifacts go to ``RUN_DIR/benchmarks/compression/<profile>-<target>/``; the run's own
``models/`` and tables are left alone. Run it on a quiet machine: latency is measured.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import time
from pathlib import Path

import pandas as pd
from torch import nn

from compress import (
    CompressionPipeline,
    CompressionStage,
    LayerLatencyTable,
    ModelContext,
    StageOutput,
    StageRecord,
)
from compress._baseline import BaselineStage
from compress._distilled import DistilledStage
from compress._int8_stage import Int8Stage
from compress._pruned import PrunedStage
from evaluators.latency import DeviceLock, LatencyCache, LatencyMeter
from hwprofiles import load_profile
from nas._compress_stage import ModelSource, select_models, settings_from_config
from nas._rundir import RunDir
from nas._stage import RunContext


class Given(CompressionStage):
    """The ``baseline`` stage with a model fine-tuned once, shared by every chain."""

    name = "baseline"

    def __init__(self, model: nn.Module, files: dict[str, bytes]) -> None:
        self.model, self.files = model, files

    def apply(self, ctx: ModelContext, model: nn.Module) -> StageOutput:
        """Returns a copy of the shared baseline."""
        return StageOutput(model=copy.deepcopy(self.model), files=dict(self.files))


def chain(ctx: ModelContext, baseline: Given, model: nn.Module) -> list[StageRecord]:
    """Runs given baseline -> pruned -> distilled -> int8 (-> tensorrt) on ``ctx``."""
    stages = [baseline, PrunedStage(), DistilledStage(), Int8Stage()]
    return CompressionPipeline(stages).run(ctx, model)


def table(rows: pd.DataFrame) -> str:
    """Returns the results as a Markdown table."""
    lines = [("| model | profile | pruning target | stage | status | test acc | Δ pt | latency ms "
             "| speed-up | MACs ratio | shipped |"), "|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(value: float, spec: str) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
            else format(value, spec)

    for (model, profile, target), group in rows.groupby(["model_id", "profile", "target"],
                                                        sort=False):
        base = group[group["stage"] == "baseline"].iloc[0]
        for r in group.itertuples():
            if r.stage == "tensorrt" and r.status == "skipped":
                continue
            delta = 100 * (r.accuracy - base["accuracy"])
            lines.append(
                f"| {model} | {profile} | {target} | {r.stage} | {r.status} | "
                f"{f(r.accuracy, '.4f')} | {f(delta, '+.2f')} | {f(r.latency_ms, '.4f')} | "
                f"{f(base['latency_ms'] / r.latency_ms, '.2f')}x | "
                f"{f(base['macs'] / r.macs, '.2f')} | {'yes' if r.deployed else ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory with a finished search")
    parser.add_argument("--profiles", nargs="+", default=["cpu", "cpu-openvino"],
                        help="hardware profiles to compress for (default: cpu cpu-openvino)")
    parser.add_argument("--top-k", type=int, default=None,
                        help="Pareto models to compress (default: the run's compress.top_k)")
    args = parser.parse_args(argv)
    run = RunDir(args.run_dir)
    spec = run.load_spec()
    ctx = RunContext(spec=spec, run=run)
    settings = settings_from_config(spec.compress, spec.experiment.seed, spec.data.batch_size)
    if settings.prune.speedup is None:
        settings = dataclasses.replace(settings, prune=dataclasses.replace(
            settings.prune, speedup=1.5, macs_ratio=None, latency_ms=None))
    top_k = spec.compress.top_k if args.top_k is None else args.top_k
    chosen = select_models(pd.read_csv(run.pareto), top_k, spec.compress.select)
    source = ModelSource(ctx, settings)
    out = run.root / "benchmarks" / "compression"
    results = []
    start = time.perf_counter()
    for row in chosen.itertuples():
        model_id = f"trial_{row.number}"
        baseline: Given | None = None
        for name in args.profiles:
            profile = load_profile(name)
            lock = DeviceLock(profile.device, lock_dir=spec.hardware.lock_dir)
            cache = LatencyCache(out / "latency_cache.db")
            meter = LatencyMeter(profile, lock=lock, cache=cache)
            layer_table = LayerLatencyTable(profile, cache=cache, lock=lock)
            if baseline is None:  # fine-tuned once: every chain starts from the same weights
                model_ctx, model = source.context(row, meter=meter, table=layer_table, lock=lock,
                                                  out_dir=out / "baseline" / model_id)
                trained = BaselineStage().apply(model_ctx, model)
                assert trained.model is not None
                baseline = Given(trained.model, trained.files)
            macs_ratio = None
            for target in ("latency", "macs"):
                prune = settings.prune if target == "latency" else dataclasses.replace(
                    settings.prune, speedup=None, macs_ratio=macs_ratio)
                model_ctx, model = source.context(
                    row, meter=meter, table=layer_table, lock=lock,
                    out_dir=out / f"{name}-{target}" / model_id,
                    settings=dataclasses.replace(settings, prune=prune))
                records = chain(model_ctx, baseline, model)
                frame = pd.DataFrame([r.to_dict() for r in records]).assign(
                    profile=name, target=target)
                results.append(frame)
                pruned = frame[frame["stage"] == "pruned"]
                base_macs = float(frame.loc[frame["stage"] == "baseline", "macs"].iloc[0])
                if target == "latency" and len(pruned) and math.isfinite(pruned["macs"].iloc[0]):
                    macs_ratio = max(1.01, base_macs / float(pruned["macs"].iloc[0]))
                else:
                    macs_ratio = macs_ratio or 2.0
                print(f"{model_id} {name} {target}: done after {time.perf_counter() - start:.0f} s",
                      file=sys.stderr, flush=True)
    rows = pd.concat(results, ignore_index=True)
    rows.to_csv(out / "compression_benchmark.csv", index=False)
    print(f"run {run.root} ({spec.search_space.name}, input {list(ctx.data.input_shape)}), "
          f"accuracy budget {settings.max_accuracy_drop:g} points, latency target "
          f"{settings.prune.speedup}x; {time.perf_counter() - start:.0f} s")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
