"""One run directory, read (never written) for the report: its tables, config and records."""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pareto import REFERENCE_MARGIN, Direction


class ReportError(ValueError):
    """A path given to the report is not a run directory it can render."""


@dataclass
class RunData:
    """Everything the report shows of one run; a missing artifact is ``None`` with the
    reason in ``missing``."""

    root: Path
    label: str
    config: dict[str, Any]
    argv: list[str]
    objectives: dict[str, Direction]
    constraints: dict[str, float]
    trials: pd.DataFrame
    pareto: pd.DataFrame | None
    compression: pd.DataFrame | None
    deployed: pd.DataFrame | None
    stages: dict[str, dict[str, Any]]
    environment: dict[str, dict[str, Any]]
    data_info: dict[str, Any]
    latency_samples: dict[str, list[float]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def experiment(self) -> str:
        """Returns the experiment's name from its config."""
        return str(self.config.get("experiment", {}).get("name", self.root.name))

    @property
    def names(self) -> list[str]:
        """Returns the objective names in the study's order."""
        return list(self.objectives)

    @cached_property
    def reference_point(self) -> list[float]:
        """Returns the search's hypervolume reference point as recorded by the search, or
        (for a run that did not record it) 0 for gains and 1.1x the worst value seen for
        costs."""
        recorded = (self.stages.get("search") or {}).get("reference_point")
        if isinstance(recorded, list) and len(recorded) == len(self.names):
            return [float(v) for v in recorded]
        frame = self.valued
        return [0.0 if d == "max" else REFERENCE_MARGIN * float(frame[n].astype(float).max())
                if not frame.empty else 1.0 for n, d in self.objectives.items()]

    @cached_property
    def valued(self) -> pd.DataFrame:
        """Returns the trials that have a finite value of every objective."""
        frame = self.trials
        if frame.empty or any(n not in frame.columns for n in self.names):
            return frame.iloc[0:0]
        finite = frame[self.names].apply(pd.to_numeric, errors="coerce")
        return frame[finite.notna().all(axis=1) & finite.abs().lt(math.inf).all(axis=1)]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _read_frame(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def _objectives(config: dict[str, Any]) -> dict[str, Direction]:
    raw = config.get("search", {}).get("objectives") or {"accuracy": "max", "latency_ms": "min"}
    return {str(k): ("max" if str(v).startswith("max") else "min") for k, v in raw.items()}


def read_latency_samples(path: Path, arch_keys: set[str]) -> dict[str, list[float]]:
    """Returns ``{arch_key: samples_ms}`` from a latency cache database for ``arch_keys``
    (the measurement with the most samples where one arch was measured more than once)."""
    if not path.exists() or not arch_keys:
        return {}
    found: dict[str, list[float]] = {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT arch_key, samples_ms FROM latency").fetchall()
    for key, samples in rows:
        if key in arch_keys:
            values = [float(v) for v in json.loads(samples)]
            if len(values) > len(found.get(key, [])):
                found[key] = values
    return found


def load_run(root: Path, label: str | None = None) -> RunData:
    """Returns the run in ``root`` read for the report.

    Raises:
        ReportError: ``root`` has no ``config.yaml`` or no trials table (no search ran).
    """
    root = Path(root).resolve()
    config_path = root / "config.yaml"
    if not config_path.exists():
        raise ReportError(f"{root}: no config.yaml here; is this a run directory of `nas search`?")
    config = yaml.safe_load(config_path.read_text()) or {}
    if not isinstance(config, dict):
        raise ReportError(f"{config_path}: not a mapping")
    argv = [str(a) for a in config.pop("argv", []) or []]
    trials = _read_frame(root / "trials.parquet")
    if trials is None:
        raise ReportError(f"{root}: no trials.parquet yet; the search has not run a trial")
    missing: dict[str, str] = {}
    pareto = _read_frame(root / "pareto.csv")
    if pareto is None:
        missing["pareto"] = "pareto.csv is missing: the search has not finished"
    compression = _read_frame(root / "compression.parquet")
    deployed = _read_frame(root / "deployed_pareto.csv")
    compress_cfg = config.get("compress", {}) or {}
    if compression is None:
        missing["compression"] = (
            "no compression results: compression is switched off in this run's config "
            "(compress.enabled: false); run `nas compress` on the run directory to add them"
            if compress_cfg.get("enabled") is False
            else "no compression results yet: run `nas compress` on the run directory"
        )
    stages = _read_json(root / "stages.json")
    environment = _read_json(root / "environment.json")
    if not environment:
        missing["environment"] = "environment.json is missing (a run from before it was recorded)"
    keys = set(pareto["arch"].astype(str)) if pareto is not None else set()
    return RunData(
        root=root, label=label or root.name, config=config, argv=argv,
        objectives=_objectives(config),
        constraints={str(k): float(v) for k, v in (config.get("search", {}).get("constraints") or {}).items()},
        trials=trials, pareto=pareto, compression=compression, deployed=deployed,
        stages=stages, environment=environment, data_info=_read_json(root / "data.json"),
        latency_samples=read_latency_samples(root / "latency_cache.db", keys), missing=missing,
    )


def load_runs(roots: list[Path]) -> list[RunData]:
    """Returns the runs in ``roots``, labelled by directory name (made unique).

    Raises:
        ReportError: a path is not a run directory.
    """
    names = [Path(r).resolve().name for r in roots]
    labels = [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]
    return [load_run(Path(r), label) for r, label in zip(roots, labels)]
