"""What the page says, as plain values for the template: summaries, the recommendation per
latency budget, the per-model sections and the tables. Nothing here is HTML: the template
escapes every string."""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pareto import budget_steps, choose_deployed
from reports._run import RunData
from search_spaces import Arch, ChoiceSpace, SearchSpaceError, get_search_space

STAGE_NAMES = {"supernet": "supernet training", "search": "search", "pareto": "Pareto set",
               "compress": "compression"}
SHOWN_PACKAGES = ("torch", "onnxruntime", "onnx", "optuna", "ray", "nvidia-modelopt",
                  "torch-pruning", "tensorrt", "hwnas")


@dataclass
class Link:
    """A relative link to an artifact of a run."""

    text: str
    href: str


@dataclass
class ModelSection:
    """One Pareto model: its arch at a glance, its compression and latency figures."""

    run: str
    model_id: str
    trials: str
    arch: str
    layout: list[tuple[str, list[str]]]
    metrics: list[tuple[str, str]]
    waterfall: str | None = None  # figure id
    latency: str | None = None
    stages: list[dict[str, str]] = field(default_factory=list)
    decision: str = ""  # what the model ships and why
    note: str = ""
    links: list[Link] = field(default_factory=list)


class ArchNames:
    """Turns an arch's JSON into its compact form with the run's search space (cached)."""

    def __init__(self) -> None:
        self._spaces: dict[str, ChoiceSpace | None] = {}

    def space(self, run: RunData) -> ChoiceSpace | None:
        """Returns the run's search space, or ``None`` when this install cannot build it."""
        if run.label not in self._spaces:
            config = dict(run.config.get("search_space") or {})
            name = str(config.pop("name", ""))
            try:
                space = get_search_space(name, **config)
            except (KeyError, ValueError, TypeError, SearchSpaceError):
                space = None
            self._spaces[run.label] = space if isinstance(space, ChoiceSpace) else None
        return self._spaces[run.label]

    def arch(self, run: RunData, arch_json: str) -> Arch | None:
        """Returns the arch, or ``None`` when the text is not an arch of the run's space."""
        try:
            return Arch.from_json(arch_json)
        except (ValueError, TypeError):
            return None

    def __call__(self, run: RunData, arch_json: str) -> str:
        space, arch = self.space(run), self.arch(run, arch_json)
        if space is None or arch is None:
            return arch_json
        try:
            return space.summarize(arch)
        except (KeyError, ValueError, TypeError):
            return arch_json

    def layout(self, run: RunData, arch_json: str) -> list[tuple[str, list[str]]]:
        """Returns the arch's rows at a glance (one per stage), or one row of raw JSON."""
        space, arch = self.space(run), self.arch(run, arch_json)
        if space is not None and arch is not None:
            try:
                return space.layout(arch)
            except (KeyError, ValueError, TypeError):
                pass
        return [("arch", [arch_json])]


def fmt(value: Any, digits: int = 4) -> str:
    """Returns a table cell: numbers to ``digits`` significant digits, thousands grouped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if float(value).is_integer() and abs(value) >= 1000:
            return f"{int(value):,}"
        return f"{float(value):.{digits}g}"
    return str(value)


def relative(path: Path, output_dir: Path) -> str:
    """Returns ``path`` relative to the report's folder, with forward slashes."""
    return Path(os.path.relpath(path, output_dir)).as_posix()


def reproduce_command(run: RunData) -> str:
    """Returns the command line that made the run, as the user typed it (``nas ...``)."""
    if not run.argv:
        return f"nas search {shlex.quote(str(run.root / 'config.yaml'))} --run-dir <new directory>"
    return shlex.join(["nas", *run.argv[1:]])


def summary(run: RunData) -> list[tuple[str, str]]:
    """Returns the run's summary as (label, value) rows."""
    cfg = run.config
    data = cfg.get("data", {}) or {}
    space = cfg.get("search_space", {}) or {}
    hardware = cfg.get("hardware", {}) or {}
    search = cfg.get("search", {}) or {}
    env = run.environment.get("search") or next(iter(run.environment.values()), {})
    info = run.data_info
    dataset = str(data.get("dataset", "?"))
    if data.get("path"):
        dataset += f" ({data['path']})"
    if info:
        dataset += (f"; {len(info.get('classes', []))} classes, input {info.get('input_shape')}, "
                    f"train/val/test {info.get('train')}/{info.get('val')}/{info.get('test')}")
    options = ", ".join(f"{k}={v}" for k, v in space.items() if k != "name")
    counts = run.trials["state"].value_counts().to_dict() if not run.trials.empty else {}
    packages = env.get("packages", {})
    rows = [
        ("experiment", run.experiment),
        ("run directory", str(run.root)),
        ("data set", dataset),
        ("search space", str(space.get("name", "?")) + (f" ({options})" if options else "")),
        ("hardware profile", str(hardware.get("profile", env.get("profile", "?")))),
        ("device measured on", (f"{env.get('device_name')} ({env.get('backend')}, {env.get('precision')}); "
                                f"host {env.get('host')}, {env.get('cpu_count')} CPU cores")
         if env else run.missing.get("environment", "not recorded")),
        ("objectives", ", ".join(f"{n} ({d}imise)" for n, d in run.objectives.items())),
        ("constraints", ", ".join(f"{k} <= {v:g}" for k, v in run.constraints.items()) or "none"),
        ("sampler", (f"{search.get('sampler', '?')}, {search.get('n_trials', '?')} trials, "
                    f"{search.get('max_concurrent', '?')} at a time, seed "
                    f"{(cfg.get('experiment') or {}).get('seed', '?')}")),
        ("trials", ", ".join(f"{n} {s.lower()}" for s, n in counts.items()) or "none"),
        ("runtime", f"Python {env.get('python', '?')}; " + ", ".join(
            f"{p} {packages[p]}" for p in SHOWN_PACKAGES if p in packages)
         if env else run.missing.get("environment", "not recorded")),
    ]
    if env and "tensorrt" not in packages:
        rows[-1] = (rows[-1][0], rows[-1][1] + "; TensorRT not installed")
    return rows


def stage_times(run: RunData) -> list[tuple[str, str, str]]:
    """Returns (stage, wall time, detail) per recorded stage, in pipeline order."""
    rows = []
    for key, name in STAGE_NAMES.items():
        info = run.stages.get(key)
        if info is None:
            rows.append((name, "not run", ""))
            continue
        seconds = info.get("seconds")
        detail = ""
        if key == "search":
            detail = (f"{info.get('trials', '?')} trials; Ray started in "
                      f"{info.get('ray_start_seconds', 0):.1f} s; "
                      f"{info.get('eval_seconds_per_trial', 0):.2f} s evaluation and "
                      f"{info.get('overhead_seconds_per_trial', 0):.2f} s overhead per trial")
        elif key in ("pareto", "compress"):
            detail = f"{info.get('models', '?')} models"
        rows.append((name, f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "–", detail))
    return rows


def recommendations(run: RunData, output_dir: Path) -> tuple[list[dict[str, str]], str]:
    """Returns, for each latency budget, the most accurate deployable model within it
    (steps of the deployed front, or of the search front before compression), and a
    sentence on where the numbers come from."""
    if "latency_ms" not in run.objectives or "accuracy" not in run.objectives:
        return [], "the recommendation needs the accuracy and latency_ms objectives"
    if run.deployed is not None and not run.deployed.empty:
        front = run.deployed.rename(columns={"model_id": "model"})
        source = ("Deployed models after compression: test-split accuracy and latency measured "
                  "on the profile, with the file to ship.")
    elif run.pareto is not None and not run.pareto.empty:
        front = run.pareto.drop_duplicates("arch").assign(
            model=lambda f: "trial_" + f["number"].astype(str), stage="search (not compressed)",
            artifact="")
        source = ("No compression results, so these are the search's models (validation "
                  "accuracy of the fp32 subnet). " + run.missing.get("compression", ""))
    else:
        return [], run.missing.get("pareto", "no Pareto set")
    # a slower model that is not more accurate is never the answer
    steps = budget_steps(front)
    rows = []
    for i, r in enumerate(steps.itertuples()):
        nxt = steps["latency_ms"].iloc[i + 1] if i + 1 < len(steps) else None
        artifact = str(getattr(r, "artifact", "") or "")
        href = relative(run.root / "models" / artifact, output_dir) if artifact else ""
        rows.append({
            "run": run.label,
            "budget": f"{float(r.latency_ms):.4f} ms" + (f" to {float(nxt):.4f} ms" if nxt is not None else " or more"),
            "budget_ms": f"{float(r.latency_ms):.6f}",
            "model": str(r.model), "stage": str(r.stage), "accuracy": f"{float(r.accuracy):.4f}",
            "latency": f"{float(r.latency_ms):.4f}", "artifact": artifact, "href": href,
            "why": _why(run, str(r.model), str(r.stage)),
        })
    return rows, source


def pareto_rows(run: RunData, names: ArchNames) -> list[dict[str, Any]]:
    """Returns the search's Pareto set, one row per arch (every trial that found it named)."""
    if run.pareto is None or run.pareto.empty:
        return []
    deployed = _final_stages(run)
    rows = []
    for arch, group in run.pareto.groupby("arch", sort=False):
        first = group.iloc[0]
        model = _model_id(run, group)
        final = deployed.get(model)
        rows.append({
            "run": run.label, "trials": ", ".join(str(int(n)) for n in group["number"]),
            "accuracy": first.get("accuracy"), "latency_ms": first.get("latency_ms"),
            "latency_cv": first.get("latency_cv"), "params": first.get("params"),
            "mmacs": float(first.get("macs", math.nan)) / 1e6, "arch": names(run, str(arch)),
            "deployed": (f"{final['stage']}: {final['accuracy']:.4f} / {final['latency_ms']:.4f} ms"
                         if final else ""),
            "anchor": f"{run.label}-{model}",
        })
    return rows


def trial_rows(run: RunData, names: ArchNames) -> list[dict[str, Any]]:
    """Returns every trial of the run for the filterable table, failures with their error."""
    rows = []
    for t in run.trials.to_dict("records"):
        rows.append({
            "run": run.label, "number": int(t["number"]), "state": str(t["state"]),
            "accuracy": t.get("accuracy"), "latency_ms": t.get("latency_ms"),
            "latency_cv": t.get("latency_cv"), "params": t.get("params"),
            "mmacs": float(t.get("macs", math.nan)) / 1e6,
            "feasible": bool(t.get("feasible", False)), "seconds": t.get("seconds"),
            "arch": names(run, str(t.get("arch", ""))), "error": _trial_note(t),
        })
    return rows


def _trial_note(trial: dict[str, Any]) -> str:
    """Returns a trial's error, or for a COMPLETE trial the doubt about its latency."""
    error = str(trial.get("error", "") or "")
    if not error and trial.get("latency_reliable", True) is False:
        return f"latency not measured reliably, off the front: {trial.get('latency_note', '')}"
    return error


def _model_id(run: RunData, group: pd.DataFrame) -> str:
    """Returns the model id of a Pareto arch: the compressed one among its trials, if any."""
    ids = [f"trial_{int(n)}" for n in group["number"]]
    if run.compression is not None and not run.compression.empty:
        compressed = set(run.compression["model_id"])
        for model in ids:
            if model in compressed:
                return model
    return ids[0]


def _final_stages(run: RunData) -> dict[str, dict[str, Any]]:
    """Returns per model the stage it ships (the one marked ``deployed``, or for a run that
    did not mark it, ``pareto.choose_deployed``'s choice)."""
    if run.compression is None or run.compression.empty:
        return {}
    chosen: dict[str, dict[str, Any]] = {}
    for model, rows in run.compression.groupby("model_id", sort=False):
        if "deployed" in rows.columns and rows["deployed"].astype(bool).any():
            chosen[str(model)] = rows[rows["deployed"].astype(bool)].iloc[0].to_dict()
            continue
        index = choose_deployed(rows)
        if index is not None:
            chosen[str(model)] = rows.loc[index].to_dict()
    return chosen


def _why(run: RunData, model: str, stage: str) -> str:
    """Returns why ``model`` ships ``stage``: its measured speed-up, and which later stages
    were slower or over the accuracy budget."""
    if run.compression is None or run.compression.empty:
        return ""
    rows = run.compression[run.compression["model_id"] == model]
    base = rows[rows["stage"] == "baseline"]["latency_ms"].astype(float)
    mine = rows[rows["stage"] == stage]["latency_ms"].astype(float)
    parts = []
    if len(base) and len(mine) and stage != "baseline":
        parts.append(f"{float(base.iloc[0]) / float(mine.iloc[0]):.2f}x faster than its baseline")
    for r in rows.itertuples():
        if r.status == "slower":
            parts.append(f"{r.stage} was slower on this profile")
        elif r.status == "unconfirmed":
            parts.append(f"{r.stage} could not be measured reliably on this profile")
        elif r.status == "rejected":
            parts.append(f"{r.stage} lost too much accuracy")
    return "; ".join(parts)


def _unreliable(row: Any) -> bool:
    """Returns whether a compression row's latency was flagged unreliable (rows of runs from
    before the flag was kept have none, and count as they were recorded)."""
    reliable = getattr(row, "latency_reliable", True)
    return reliable is not None and not pd.isna(reliable) and not bool(reliable)


def _stage_reason(row: Any) -> str:
    """Returns a compression row's reason, and that its latency is unreliable if it is."""
    reason = str(row.reason or "")
    if _unreliable(row):
        note = f"latency not measured reliably: {getattr(row, 'latency_note', '')}"
        reason = f"{reason}; {note}" if reason else note
    return reason


def decision(run: RunData, model: str) -> str:
    """Returns one sentence on what ``model`` ships and why, from its compression rows."""
    chosen = _final_stages(run).get(model)
    if chosen is None:
        return "Nothing deployable: no stage has a measured test accuracy and latency."
    artifact = Path(str(chosen.get("artifact") or "")).name or "(no file)"
    why = _why(run, model, str(chosen["stage"]))
    if chosen["stage"] == "baseline":
        lead = "no later stage was both within the accuracy budget and faster"
    else:
        lead = "the fastest stage within the accuracy budget and no slower than the baseline"
    if _unreliable(pd.Series(chosen)):
        why = (f"{why}; " if why else "") + (
            f"its latency could not be measured reliably ({chosen.get('latency_note', '')}), "
            "so measure it again on a quieter device")
    return (f"Ships {artifact} ({chosen['stage']}: test accuracy {float(chosen['accuracy']):.4f}, "
            f"{float(chosen['latency_ms']):.4f} ms): {lead}" + (f"; {why}." if why else "."))


def model_sections(
    run: RunData, names: ArchNames, output_dir: Path, add_figure: Any
) -> list[ModelSection]:
    """Returns one section per Pareto arch, fastest first. ``add_figure(fig)`` stores a
    figure and returns its id."""
    from reports._figures import latency_figure, waterfall_figure

    if run.pareto is None or run.pareto.empty:
        return []
    sections = []
    front = run.pareto.sort_values("latency_ms")
    for arch, group in front.groupby("arch", sort=False):
        first = group.iloc[0]
        model = _model_id(run, group)
        label = f"{run.label} · {model}" if run.label else model
        rows = None
        if run.compression is not None and not run.compression.empty:
            rows = run.compression[run.compression["model_id"] == model]
            rows = rows if not rows.empty else None
        section = ModelSection(
            run=run.label, model_id=model, trials=", ".join(str(int(n)) for n in group["number"]),
            arch=names(run, str(arch)), layout=names.layout(run, str(arch)),
            metrics=[(n, fmt(first.get(n))) for n in
                     dict.fromkeys([*run.names, "latency_cv", "params", "macs"]) if n in first.index],
        )
        if rows is not None:
            section.waterfall = add_figure(waterfall_figure(rows, label))
            base = rows[rows["stage"] == "baseline"]["latency_ms"].astype(float)
            base_ms = float(base.iloc[0]) if len(base) else math.nan
            shipped = _final_stages(run).get(model, {}).get("stage")
            section.stages = [{
                "stage": str(r.stage), "status": str(r.status), "accuracy": fmt(r.accuracy),
                "latency_ms": fmt(r.latency_ms), "reason": _stage_reason(r),
                "speedup": fmt(base_ms / float(r.latency_ms)) if pd.notna(r.latency_ms) else "",
                "deployed": "yes" if r.stage == shipped else "",
            } for r in rows.itertuples()]
            section.decision = decision(run, model)
        elif run.compression is not None:
            compress = run.config.get("compress", {}) or {}
            section.note = (f"Not compressed: compress.top_k = {compress.get('top_k')} with "
                            f"compress.select = {compress.get('select')} chose other models "
                            "of the front (top_k 0 compresses them all).")
        else:
            section.note = run.missing.get("compression", "")
        figure = latency_figure(run.latency_samples.get(str(arch), []), rows, label)
        section.latency = add_figure(figure) if figure is not None else None
        folder = run.root / "models" / model
        for name in ("model.int8.onnx", "model.onnx", "model.engine", "model.pt", "prune_plan.json"):
            if (folder / name).exists():
                section.links.append(Link(name, relative(folder / name, output_dir)))
        sections.append(section)
    return sections


def artifact_links(run: RunData, output_dir: Path) -> list[Link]:
    """Returns links to the run's tables and files that exist."""
    names = ("config.yaml", "trials.parquet", "pareto.csv", "compression.parquet",
             "deployed_pareto.csv", "study.db", "stages.json", "environment.json", "tune")
    return [Link(n, relative(run.root / n, output_dir)) for n in names if (run.root / n).exists()]


def resolved_config(run: RunData) -> str:
    """Returns the run's resolved config as YAML (without the recorded command line)."""
    return str(yaml.safe_dump(run.config, sort_keys=False))


def missing_notes(runs: Sequence[RunData]) -> list[str]:
    """Returns one sentence per artifact a run lacks, saying why."""
    return [f"{run.label}: {why}" for run in runs for why in run.missing.values()]
