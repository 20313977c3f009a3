"""Stage 4: compress the selected Pareto models and find the deployed front."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
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
    LayerLatencyTable,
    ModelContext,
    PruneSettings,
)
from evaluators import recalibrate_batchnorm
from evaluators.latency import DeviceLock, LatencyCache, LatencyMeter
from hwprofiles import describe_environment
from nas._config import CompressConfig
from nas._errors import RunDirError
from nas._stage import RunContext, Stage
from pareto import deployed_front
from search_spaces import Arch

STAGE_COUNT = 5  # baseline, pruned, distilled, int8, tensorrt


def settings_from_config(config: CompressConfig, seed: int, batch_size: int) -> CompressSettings:
    """Returns the compress package's settings for a run's ``compress:`` section."""
    p, d = config.prune, config.distill
    return CompressSettings(
        finetune_epochs=config.finetune_epochs, max_accuracy_drop=config.max_accuracy_drop,
        calibration_batches=config.calibration_batches, calibrator=config.calibrator,
        batch_size=batch_size, lr=config.lr, seed=seed,
        prune=PruneSettings(speedup=p.speedup, macs_ratio=p.macs_ratio, latency_ms=p.latency_ms,
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
        if chosen.empty:  # nothing measured reliably within the constraints: nothing to ship
            ctx.console.print(
                "[yellow]compress: the Pareto front is empty (no trial within the constraints "
                "with a reliably measured latency), so no model was compressed; see the "
                "search's table of trials kept off the front, and search again on a quieter "
                "device or with looser constraints[/]")
            run.mark_done(self.name, settings=digest, models=0, seconds=0.0)
            return
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
        run = ctx.run
        models = ModelSource(ctx, settings)
        lock = DeviceLock(ctx.profile.device, lock_dir=ctx.spec.hardware.lock_dir)
        # the layer table persists in the run's latency cache: reruns and later models reuse it
        cache = LatencyCache(run.latency_cache)
        meter = LatencyMeter(ctx.profile, lock=lock, cache=cache)
        table = LayerLatencyTable(ctx.profile, cache=cache, lock=lock)
        pipeline = CompressionPipeline()
        with Progress(
            TextColumn("compress {task.fields[model]} {task.fields[stage]}"), BarColumn(),
            MofNCompleteColumn(), TextColumn("stages"), TimeElapsedColumn(), console=ctx.console,
        ) as progress:
            task = progress.add_task("c", total=len(todo) * STAGE_COUNT, model="", stage="")
            for row in todo:
                model_id = f"trial_{row.number}"
                progress.update(task, model=model_id, stage="baseline")
                model_ctx, model = models.context(row, meter=meter, table=table, lock=lock,
                                                  out_dir=run.models / model_id)

                def on_stage(record: object) -> None:
                    progress.advance(task)
                    progress.update(task, stage=getattr(record, "stage", ""))

                records = pipeline.run(model_ctx, model, on_stage=on_stage)
                new = pd.DataFrame([r.to_dict() for r in records])
                rows = new if rows.empty else pd.concat([rows[rows["model_id"] != model_id], new], ignore_index=True)
                run.write_frame(run.compression, rows)
        return rows


class ModelSource:
    """The Pareto models of a run as the compression chain takes them: the trained supernet
    (loaded once), its largest subnet as the distillation teacher, and per model its
    extracted subnet with the ``ModelContext`` of its stages."""

    def __init__(self, ctx: RunContext, settings: CompressSettings) -> None:
        self.ctx, self.settings = ctx, settings
        data, space = ctx.data, ctx.space
        self.supernet = space.build_supernet(num_classes=data.num_classes,
                                             in_channels=data.input_shape[1])
        self.supernet.load_state_dict(ctx.run.load_state_dict(ctx.run.supernet))
        self.supernet.eval()
        self.teacher = self.supernet.extract(space.max_arch())
        recalibrate_batchnorm(self.teacher, data.loader(
            "train", settings.batch_size, shuffle=True, seed=settings.seed), 8)

    def context(
        self, row: Any, *, meter: LatencyMeter, table: LayerLatencyTable, lock: DeviceLock,
        out_dir: Path, settings: CompressSettings | None = None,
    ) -> tuple[ModelContext, nn.Module]:
        """Returns the context of the Pareto row ``row`` (``number``, ``arch``) compressed on
        ``meter``'s profile into ``out_dir``, and its extracted subnet; writes ``spec.json``."""
        ctx, data, space = self.ctx, self.ctx.data, self.ctx.space
        spec = ctx.spec
        arch = Arch.from_json(row.arch)
        model_id = f"trial_{row.number}"

        def build_unpruned(arch: Arch = arch) -> nn.Module:
            return space.build_supernet(
                num_classes=data.num_classes, in_channels=data.input_shape[1]
            ).extract(arch)

        space_info = {"name": spec.search_space.name, **spec.search_space.options()}
        model_ctx = ModelContext(
            model_id=model_id, arch_json=arch.key(), build_unpruned=build_unpruned,
            teacher=self.teacher, data=data, profile=meter.profile, meter=meter,
            settings=settings or self.settings, out_dir=out_dir,
            metadata={
                "preprocessing": data.normalization.to_dict(), "input_layout": "NCHW",
                "classes": list(data.classes), "arch": arch.to_dict(), "search_space": space_info,
            },
            compute_guard=lock.compute, latency_table=table,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        ctx.run.write_json(out_dir / "spec.json", {
            "model_id": model_id, "arch": arch.to_dict(), "search_space": space_info,
            "num_classes": data.num_classes, "input_shape": list(data.input_shape),
            "preprocessing": data.normalization.to_dict(), "classes": list(data.classes),
        })
        return model_ctx, self.supernet.extract(arch)


def fmt(value: float, spec: str) -> str:
    """Returns ``value`` formatted, or ``-`` when it is missing."""
    return "-" if pd.isna(value) else format(value, spec)


def compression_table(rows: pd.DataFrame) -> Table:
    """Returns a rich table of every model and stage, the shipped artifact starred."""
    table = Table(title="Compression (test accuracy, latency measured on the hardware profile)")
    columns = ("model", "stage", "status", "accuracy", "latency ms", "speedup", "MMACs",
               "MACs ratio", "size KiB", "note")
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "stage", "status", "note")
                         else "right")
    for model_id, group in rows.groupby("model_id", sort=False):
        base = group[group["stage"] == "baseline"]
        base_latency = float(base["latency_ms"].iloc[0]) if len(base) else float("nan")
        base_macs = float(base["macs"].iloc[0]) if len(base) else float("nan")
        for r in group.itertuples():
            speedup = base_latency / r.latency_ms if not pd.isna(r.latency_ms) else float("nan")
            deployed = bool(getattr(r, "deployed", False))
            note = "shipped" if deployed else (r.reason if r.status != "ok" else "")
            table.add_row(
                str(model_id), ("* " if deployed else "") + str(r.stage), str(r.status),
                fmt(r.accuracy, ".4f"), fmt(r.latency_ms, ".4f"), fmt(speedup, ".2f"),
                fmt(r.macs / 1e6, ".2f"), fmt(base_macs / r.macs, ".2f"),
                fmt(r.size_bytes / 1024, ".1f"), escape(str(note)[:90]),
            )
    return table
