"""Stage 4: compress the selected Pareto models and find the deployed front."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np
import pandas as pd
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn

from compress import (
    CompressionPipeline,
    CompressSettings,
    DistillSettings,
    ModelContext,
    PruneSettings,
)
from evaluators import recalibrate_batchnorm
from evaluators.latency import DeviceLock, LatencyMeter
from hwprofiles import describe_environment
from nas._config import CompressConfig
from nas._errors import RunDirError
from nas._stage import RunContext, Stage
from reports import pareto_mask
from search_spaces import Arch

STAGE_COUNT = 5  # baseline, pruned, distilled, int8, tensorrt


def settings_from_config(config: CompressConfig, seed: int, batch_size: int) -> CompressSettings:
    """Returns the compress package's settings for a run's ``compress:`` section."""
    p, d = config.prune, config.distill
    return CompressSettings(
        finetune_epochs=config.finetune_epochs, max_accuracy_drop=config.max_accuracy_drop,
        calibration_batches=config.calibration_batches, calibrator=config.calibrator,
        batch_size=batch_size, lr=config.lr, seed=seed,
        prune=PruneSettings(macs_ratio=p.macs_ratio, latency_ms=p.latency_ms,
                            importance=p.importance, iterations=p.iterations,
                            finetune_epochs=p.finetune_epochs),
        distill=DistillSettings(epochs=d.epochs, temperature=d.temperature, alpha=d.alpha,
                                feature_weight=d.feature_weight, teacher=d.teacher),
    )


def select_models(pareto: pd.DataFrame, top_k: int, rule: str) -> pd.DataFrame:
    """Returns the Pareto rows to compress: one per arch, ``top_k`` of them by ``rule``.

    ``spread`` takes models evenly along the front (by latency), ``accuracy`` the most
    accurate, ``latency`` the fastest; ``top_k`` 0 takes them all.
    """
    front = pareto.drop_duplicates("arch").sort_values("latency_ms").reset_index(drop=True)
    if top_k == 0 or top_k >= len(front):
        return front
    if rule == "accuracy":
        return front.nlargest(top_k, "accuracy").sort_values("latency_ms")
    if rule == "latency":
        return front.head(top_k)
    picks = sorted({round(float(i)) for i in np.linspace(0, len(front) - 1, top_k)})
    return front.iloc[picks]


class CompressStage(Stage):
    """Runs the compression pipeline on each selected model; resumes model by model."""

    name = "compress"

    def run(self, ctx: RunContext) -> None:
        """Writes ``models/<id>/``, ``compression.parquet`` and ``deployed_pareto.csv``."""
        run, spec = ctx.run, ctx.spec
        if not run.pareto.exists():
            raise RunDirError(f"{run.root}: no pareto.csv; run `nas search` first")
        settings = settings_from_config(spec.compress, spec.experiment.seed, spec.data.batch_size)
        digest = hashlib.sha256(json.dumps(spec.compress.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]
        done = run.done_stages().get(self.name, {})
        rows = pd.read_parquet(run.compression) if run.compression.exists() else pd.DataFrame()
        if done.get("settings") != digest:
            rows = pd.DataFrame()  # other settings: earlier results describe another pipeline
        chosen = select_models(pd.read_csv(run.pareto), spec.compress.top_k, spec.compress.select)
        finished = set(rows["model_id"]) if not rows.empty else set()
        todo = [r for r in chosen.itertuples() if f"trial_{r.number}" not in finished]
        seconds = float(done.get("seconds", 0.0)) if done.get("settings") == digest else 0.0
        if not todo:
            ctx.console.print(f"[dim]compress: {len(chosen)} models already compressed, skipped[/]")
        else:
            run.record_environment(self.name, describe_environment(ctx.profile))
            start = time.perf_counter()
            rows = self._compress(ctx, settings, todo, rows)
            seconds += time.perf_counter() - start
        run.mark_done(self.name, settings=digest, models=len(chosen), seconds=seconds)
        deployed = deployed_front(rows)
        run.write_frame(run.deployed_pareto, deployed)
        ctx.console.print(compression_table(rows))
        ctx.console.print(f"deployed front: {len(deployed)} models -> {run.deployed_pareto.name}")

    def _compress(
        self, ctx: RunContext, settings: CompressSettings, todo: list[Any], rows: pd.DataFrame
    ) -> pd.DataFrame:
        run, spec, data, space = ctx.run, ctx.spec, ctx.data, ctx.space
        supernet = space.build_supernet(num_classes=data.num_classes, in_channels=data.input_shape[1])
        supernet.load_state_dict(run.load_state_dict(run.supernet))
        supernet.eval()
        lock = DeviceLock(ctx.profile.device, lock_dir=spec.hardware.lock_dir)
        teacher = supernet.extract(space.max_arch())
        recalibrate_batchnorm(teacher, data.loader("train", settings.batch_size, shuffle=True, seed=settings.seed), 8)
        meter = LatencyMeter(ctx.profile, lock=lock)
        pipeline = CompressionPipeline()
        with Progress(
            TextColumn("compress {task.fields[model]} {task.fields[stage]}"), BarColumn(),
            MofNCompleteColumn(), TextColumn("stages"), TimeElapsedColumn(), console=ctx.console,
        ) as progress:
            task = progress.add_task("c", total=len(todo) * STAGE_COUNT, model="", stage="")
            for row in todo:
                arch = Arch.from_json(row.arch)
                model_id = f"trial_{row.number}"

                def build_unpruned(arch: Arch = arch) -> nn.Module:
                    return space.build_supernet(
                        num_classes=data.num_classes, in_channels=data.input_shape[1]
                    ).extract(arch)

                progress.update(task, model=model_id, stage="baseline")
                model_ctx = ModelContext(
                    model_id=model_id, arch_json=arch.key(),
                    build_unpruned=build_unpruned,
                    teacher=teacher, data=data, profile=ctx.profile, meter=meter,
                    settings=settings, out_dir=run.models / model_id,
                    metadata={
                        "preprocessing": data.normalization.to_dict(), "input_layout": "NCHW",
                        "classes": list(data.classes), "arch": arch.to_dict(),
                        "search_space": {"name": spec.search_space.name, **spec.search_space.options()},
                    },
                    compute_guard=lock.compute,
                )
                model_ctx.out_dir.mkdir(parents=True, exist_ok=True)
                run.write_json(model_ctx.out_dir / "spec.json", {
                    "model_id": model_id, "arch": arch.to_dict(),
                    "search_space": {"name": spec.search_space.name, **spec.search_space.options()},
                    "num_classes": data.num_classes, "input_shape": list(data.input_shape),
                    "preprocessing": data.normalization.to_dict(), "classes": list(data.classes),
                })

                def on_stage(record: object, model_id: str = model_id) -> None:
                    progress.advance(task)
                    progress.update(task, stage=getattr(record, "stage", ""))

                records = pipeline.run(model_ctx, supernet.extract(arch), on_stage=on_stage)
                new = pd.DataFrame([r.to_dict() for r in records])
                rows = new if rows.empty else pd.concat([rows[rows["model_id"] != model_id], new], ignore_index=True)
                run.write_frame(run.compression, rows)
        return rows


def deployed_front(rows: pd.DataFrame) -> pd.DataFrame:
    """Returns the final deployable artifact of each model, non-dominated in (accuracy, latency).

    A model's final artifact is its last accepted stage with a measured accuracy and latency.
    """
    if rows.empty:
        return rows
    measured = rows[(rows["status"] == "ok") & rows["accuracy"].notna() & rows["latency_ms"].notna()]
    final = measured.groupby("model_id", sort=False).tail(1).reset_index(drop=True)
    mask = pareto_mask(final[["accuracy", "latency_ms"]].to_numpy(dtype=float), ["max", "min"])
    return final[mask].sort_values("latency_ms").reset_index(drop=True)


def fmt(value: float, spec: str) -> str:
    """Returns ``value`` formatted, or ``-`` when it is missing."""
    return "-" if pd.isna(value) else format(value, spec)


def compression_table(rows: pd.DataFrame) -> Table:
    """Returns a rich table of every model and stage."""
    table = Table(title="Compression (test accuracy, latency on the hardware profile)")
    for column in ("model", "stage", "status", "accuracy", "latency ms", "speedup", "MMACs", "size KiB", "note"):
        table.add_column(column, justify="left" if column in ("model", "stage", "status", "note") else "right")
    for model_id, group in rows.groupby("model_id", sort=False):
        base = group[group["stage"] == "baseline"]["latency_ms"]
        base_latency = float(base.iloc[0]) if len(base) else float("nan")
        for r in group.itertuples():
            speedup = base_latency / r.latency_ms if not pd.isna(r.latency_ms) else float("nan")
            note = r.reason if r.status != "ok" else ""
            table.add_row(str(model_id), r.stage, r.status, fmt(r.accuracy, ".4f"), fmt(r.latency_ms, ".4f"),
                          fmt(speedup, ".2f"), fmt(r.macs / 1e6, ".2f"), fmt(r.size_bytes / 1024, ".1f"), escape(note[:90]))
    return table
