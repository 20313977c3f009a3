"""Stage 4: compress the selected Pareto models and find the deployed front."""

from __future__ import annotations

import hashlib
import json
import shutil
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
    StageRecord,
)
from evaluators import atomic_write_text, digests, mismatched, recalibrate_batchnorm
from evaluators.latency import DeviceLock, LatencyCache, LatencyMeter
from hwprofiles import describe_environment
from nas._config import CompressConfig
from nas._errors import RunDirError
from nas._progress import StageLog
from nas._rundir import RunDir
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
        """Writes ``models/<id>/``, ``compression.parquet`` and ``deployed_pareto.csv``.

        A model counts as compressed when its ``models/<id>/compressed.json`` was written
        with today's settings and every file it lists still has its checksum; any other
        model is compressed (again). ``compression.parquet`` is rebuilt from those records.

        Raises:
            RunDirError: the run has no (readable) ``pareto.csv``.
        """
        run, spec = ctx.run, ctx.spec
        settings = settings_from_config(spec.compress, spec.experiment.seed, spec.data.batch_size)
        digest = settings_digest(spec.compress)
        done = run.done_stages().get(self.name, {})
        chosen = select_models(read_pareto(run), spec.compress.top_k, spec.compress.select)
        if chosen.empty:  # nothing measured reliably within the constraints: nothing to ship
            ctx.console.print(
                "[yellow]compress: the Pareto front is empty (no trial within the constraints "
                "with a reliably measured latency), so no model was compressed; see the "
                "search's table of trials kept off the front, and search again on a quieter "
                "device or with looser constraints[/]")
            run.mark_done(self.name, settings=digest, models=0, seconds=0.0)
            return
        finished: dict[str, pd.DataFrame] = {}
        for row in chosen.itertuples():
            model_id = f"trial_{row.number}"
            records, why = ModelRecord(run.models / model_id).verified(digest)
            if records is not None:
                finished[model_id] = records
            elif why:
                ctx.console.print(f"compress: {model_id} again: {escape(why)}")
        todo = [r for r in chosen.itertuples() if f"trial_{r.number}" not in finished]
        seconds = float(done.get("seconds", 0.0)) if done.get("settings") == digest else 0.0
        if not todo:
            ctx.console.print(f"[dim]compress: {len(chosen)} models already compressed, skipped[/]")
        else:
            if finished:
                ctx.console.print(f"compress: {len(finished)} of {len(chosen)} models already "
                                  "compressed and verified, kept")
            run.record_environment(self.name, describe_environment(ctx.profile))
            start = time.perf_counter()
            self._compress(ctx, settings, digest, todo, finished, chosen)
            seconds += time.perf_counter() - start
        rows = ordered_rows(finished, chosen)
        run.write_frame(run.compression, rows)
        deployed = deployed_front(rows)
        run.write_frame(run.deployed_pareto, deployed)
        run.mark_done(self.name, artifacts=[run.deployed_pareto], settings=digest,
                      models=len(chosen), seconds=seconds)
        ctx.console.print(compression_table(rows))
        ctx.console.print(f"deployed front: {len(deployed)} models -> {run.deployed_pareto.name}")

    def _compress(
        self, ctx: RunContext, settings: CompressSettings, digest: str, todo: list[Any],
        finished: dict[str, pd.DataFrame], chosen: pd.DataFrame,
    ) -> None:
        """Compresses each model of ``todo``, adding its rows to ``finished`` and writing its
        record (and ``compression.parquet``) as soon as it is done."""
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
                model_record = ModelRecord(run.models / model_id)
                model_record.clear()  # what the directory holds now is not a finished model
                model_ctx, model = models.context(row, meter=meter, table=table, lock=lock,
                                                  out_dir=model_record.root)

                log_stage = StageLog(ctx.console, model_id)  # a line per stage in a log

                def on_stage(record: StageRecord, log_stage: StageLog = log_stage) -> None:
                    progress.advance(task)
                    progress.update(task, stage=record.stage)
                    log_stage(record)

                rows = [r.to_dict() for r in pipeline.run(model_ctx, model, on_stage=on_stage)]
                model_record.write(digest, rows)
                finished[model_id] = pd.DataFrame(rows)
                run.write_frame(run.compression, ordered_rows(finished, chosen))


#: keys of ``compress:`` that choose which models are compressed, not how
_SELECTION_KEYS = {"enabled", "top_k", "select"}


def settings_digest(config: CompressConfig) -> str:
    """Returns a short digest of how a ``compress:`` section compresses a model (which
    models it selects left out): equal digests, same pipeline."""
    how = {k: v for k, v in config.model_dump(mode="json").items() if k not in _SELECTION_KEYS}
    text = json.dumps(how, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_pareto(run: RunDir) -> pd.DataFrame:
    """Returns the run's ``pareto.csv``.

    Raises:
        RunDirError: it is missing or damaged (naming the file and how to rewrite it).
    """
    if not run.pareto.exists():
        raise RunDirError(f"{run.root}: no pareto.csv; run `nas search` first")
    try:
        pareto = pd.read_csv(run.pareto)
    except (OSError, ValueError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
        raise RunDirError(_derived_damaged(run, run.pareto, exc)) from exc
    if not {"number", "arch", "latency_ms", "accuracy"} <= set(pareto.columns):
        raise RunDirError(_derived_damaged(run, run.pareto, "columns missing"))
    if run.pareto.name in run.damaged_artifacts("pareto"):  # e.g. cut at a row's end
        raise RunDirError(_derived_damaged(run, run.pareto, "its checksum differs from the "
                                           "one recorded when it was written"))
    return pareto


def _derived_damaged(run: RunDir, path: Path, why: object) -> str:
    reason = type(why).__name__ if isinstance(why, Exception) else str(why)
    return (f"{path}: damaged ({reason}); it is derived from the search: run `nas search` "
            f"with this run's config and --run-dir {run.root} to write it again")


def ordered_rows(finished: dict[str, pd.DataFrame], chosen: pd.DataFrame) -> pd.DataFrame:
    """Returns the rows of the finished models, in the order of ``chosen``."""
    frames = [finished[f"trial_{n}"] for n in chosen["number"] if f"trial_{n}" in finished]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class ModelRecord:
    """``models/<id>/compressed.json``: written when a model's compression finished, with
    the settings digest, its stage rows and the checksum of every file of the model."""

    NAME = "compressed.json"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / self.NAME

    def write(self, digest: str, rows: list[dict[str, Any]]) -> None:
        """Records the model as compressed with settings ``digest``: its stage ``rows`` and
        the checksums of every file now in the model's directory."""
        files = [p for p in self.root.rglob("*") if p.is_file() and p != self.path
                 and not p.name.endswith(".tmp")]
        record = {"settings": digest, "files": digests(self.root, files), "rows": rows}
        atomic_write_text(self.path, json.dumps(record, indent=1))

    def clear(self) -> None:
        """Removes the model's directory, record first: its compression starts again."""
        self.path.unlink(missing_ok=True)
        if self.root.exists():
            shutil.rmtree(self.root)

    def verified(self, digest: str) -> tuple[pd.DataFrame | None, str]:
        """Returns the model's rows when it was compressed with settings ``digest`` and every
        file still matches, else ``None`` and why it must be compressed again ("" when it
        never was)."""
        if not self.path.exists():
            return None, ""
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
            files, rows = dict(record["files"]), pd.DataFrame(record["rows"])
        except (OSError, ValueError, KeyError, TypeError):
            return None, f"{self.path.name} is damaged"
        if record.get("settings") != digest:
            return None, "the compress settings changed"
        if rows.empty:
            return None, f"{self.path.name} records no stage"
        if "latency_reliable" not in rows.columns:
            # its verdicts may rest on figures the device had flagged: it cannot tell
            return None, "it was recorded before each latency's reliability was kept"
        wrong = mismatched(self.root, files)
        if wrong:
            return None, f"{', '.join(wrong[:3])} missing or damaged (checksum differs)"
        return rows, ""


class ModelSource:
    """The Pareto models of a run as the compression chain takes them: the trained supernet
    (loaded once), its largest subnet as the distillation teacher, and per model its
    extracted subnet with the ``ModelContext`` of its stages."""

    def __init__(self, ctx: RunContext, settings: CompressSettings) -> None:
        self.ctx, self.settings = ctx, settings
        state = ctx.run.load_supernet("the models are compressed from it")
        data, space = ctx.data, ctx.space
        self.supernet = space.build_supernet(num_classes=data.num_classes,
                                             in_channels=data.input_shape[1])
        self.supernet.load_state_dict(state)
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
            reliable = getattr(r, "latency_reliable", True)  # absent in older runs
            if not pd.isna(reliable) and not reliable:
                note = (f"{note}; " if note else "") + f"latency unreliable: {r.latency_note}"
            table.add_row(
                str(model_id), ("* " if deployed else "") + str(r.stage), str(r.status),
                fmt(r.accuracy, ".4f"), fmt(r.latency_ms, ".4f"), fmt(speedup, ".2f"),
                fmt(r.macs / 1e6, ".2f"), fmt(base_macs / r.macs, ".2f"),
                fmt(r.size_bytes / 1024, ".1f"), escape(str(note)[:90]),
            )
    return table
