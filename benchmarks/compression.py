"""Compression results of a run, and our pipeline against plain torch-pruning.

Part 1 prints, from ``compression.parquet``, every model and stage: test accuracy, latency
on the run's hardware profile, speedup over the baseline, size and MACs.

Part 2 takes each compressed model's baseline and prunes it with plain torch-pruning to
the same MACs ratio, fine-tuning with cross-entropy only for as many epochs as our pruned
and distilled stages train together, then compares test accuracy with our distilled model.

    python benchmarks/compression.py runs/quickstart
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from compress import MacsTarget, load_pruned, prune
from evaluators import (
    OptimConfig,
    accuracy,
    count_macs,
    cross_entropy_step,
    recalibrate_batchnorm,
    train,
)
from nas._rundir import RunDir
from nas._stage import RunContext
from search_spaces import Arch


def stage_table(rows: pd.DataFrame) -> None:
    print("| model | stage | status | test accuracy | latency ms | speedup | size KiB | MMACs |")
    print("|---|---|---|---|---|---|---|---|")
    for model_id, group in rows.groupby("model_id", sort=False):
        base = float(group.loc[group["stage"] == "baseline", "latency_ms"].iloc[0])
        for r in group.itertuples():
            def f(v: float, spec: str) -> str:
                return "-" if pd.isna(v) else format(v, spec)
            print(f"| {model_id} | {r.stage} | {r.status} | {f(r.accuracy, '.4f')} | "
                  f"{f(r.latency_ms, '.4f')} | {f(base / r.latency_ms, '.2f')} | "
                  f"{f(r.size_bytes / 1024, '.1f')} | {f(r.macs / 1e6, '.2f')} |")


def plain_pruning(ctx: RunContext, rows: pd.DataFrame) -> None:
    spec, data, space = ctx.spec, ctx.data, ctx.space
    c = spec.compress
    epochs = c.prune.iterations * c.prune.finetune_epochs + c.distill.epochs
    print()
    print(f"plain torch-pruning (magnitude, cross-entropy fine-tune for {epochs} epochs, BatchNorm "
          "refreshed) vs our "
          f"pruned + distilled, at macs_ratio {c.prune.macs_ratio}")
    print("| model | baseline acc | plain pruning acc | ours acc | MMACs plain | MMACs ours |")
    print("|---|---|---|---|---|---|")
    shape = data.input_shape
    for model_id, group in rows.groupby("model_id", sort=False):
        arch = Arch.from_json(pd.read_csv(ctx.run.pareto).set_index("number").loc[int(model_id.split("_")[1]), "arch"])
        def build(arch: Arch = arch) -> torch.nn.Module:
            return space.build_supernet(num_classes=data.num_classes, in_channels=shape[1]).extract(arch)
        baseline = load_pruned(build, ctx.run.models / model_id / "baseline.pt")
        torch.manual_seed(spec.experiment.seed)

        def finetune(model: torch.nn.Module, step: int) -> None:
            train(model, lambda e: data.loader("train", spec.data.batch_size, shuffle=True, seed=step * 100 + e),
                  cross_entropy_step(), epochs=epochs // c.prune.iterations,
                  steps_per_epoch=-(-len(data.y_train) // spec.data.batch_size), optim=OptimConfig(lr=c.lr))

        plain = prune(baseline, torch.zeros(shape), target=MacsTarget(ratio=float(c.prune.macs_ratio or 2.0)),
                      importance="magnitude", iterations=c.prune.iterations, finetune=finetune).model
        # the same BatchNorm refresh our stages get, so only distillation differs
        recalibrate_batchnorm(plain, data.loader("train", spec.data.batch_size, shuffle=True, seed=0), 8)
        ours = group.set_index("stage")
        # ours: the distilled student when pruning was accepted, else the pruned model itself
        # (the budget rejected it, so distillation never started from it)
        pruned_ok = ours.loc["pruned", "status"] == "ok"
        best = ours.loc["distilled"] if pruned_ok and ours.loc["distilled", "status"] == "ok" else ours.loc["pruned"]
        label = "" if pruned_ok else " (pruned, rejected)"
        print(f"| {model_id} | {ours.loc['baseline', 'accuracy']:.4f} | "
              f"{accuracy(plain, data.loader('test', 512)):.4f} | {best['accuracy']:.4f}{label} | "
              f"{count_macs(plain, shape) / 1e6:.2f} | {best['macs'] / 1e6:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    run = RunDir(args.run_dir)
    rows = pd.read_parquet(run.compression)
    stage_table(rows)
    plain_pruning(RunContext(spec=run.load_spec(), run=run), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
