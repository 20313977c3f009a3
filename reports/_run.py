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

from evaluators import mismatched
from hwprofiles._yaml import UserYamlError, read_user_yaml
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


def _read_json(path: Path, missing: dict[str, str] | None = None) -> dict[str, Any]:
    """Returns the JSON object in ``path``; ``{}`` when it is missing, and when it is damaged
    too, saying so in ``missing`` (the report shows what it could not read)."""
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        value = exc
    if not isinstance(value, dict):
        if missing is not None:
            missing[path.stem] = f"{path.name} is damaged and was not read"
        return {}
    return value


#: what each record of a run directory holds and what to do when it is damaged
_RECORDS = {
    "stages.json": "it records which stages of this run finished and the checksums of their "
                   "artifacts. Restore it from a backup, or start over in another --run-dir",
    "environment.json": "it records the device and library versions each stage ran with. "
                        "Restore it from a backup, or delete it (the report then shows those "
                        "versions as not recorded)",
}


def _read_record(path: Path) -> dict[str, Any]:
    """Returns the JSON object in the record ``path`` (one of ``_RECORDS``); ``{}`` when it
    is missing.

    Raises:
        ReportError: it is damaged, naming it and what to do.
    """
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        why = type(exc).__name__
    else:
        if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
            return value
        why = "not a mapping of stage records"
    raise ReportError(f"{path}: damaged ({why}); {_RECORDS[path.name]}.")


#: what to do about a damaged ``config.yaml``
_CONFIG_REDO = ("it is the run's resolved config: restore it from a backup, or delete it and run "
                "`nas search` with the run's original config and this --run-dir to write it "
                "again")

#: how each table of a run directory is written again, for the message when it is damaged
_REWRITTEN_BY = {
    "trials.parquet": "run `nas search` with the run's config and --run-dir again (it is "
                      "derived from study.db)",
    "pareto.csv": "run `nas search` with the run's config and --run-dir again (it is derived "
                  "from study.db)",
    "compression.parquet": "run `nas compress RUN_DIR` (it is rebuilt from the models' records)",
    "deployed_pareto.csv": "run `nas compress RUN_DIR` (it is rebuilt from the models' records)",
}


def _read_frame(path: Path) -> pd.DataFrame | None:
    """Returns the table in ``path``, ``None`` when it is missing.

    Raises:
        ReportError: the table is damaged (naming it and how to write it again).
    """
    if not path.exists():
        return None
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow and the CSV parser raise many kinds
        how = _REWRITTEN_BY.get(path.name, "write it again").replace("RUN_DIR", str(path.parent))
        raise ReportError(f"{path}: damaged, not a readable table ({type(exc).__name__}); "
                          f"{how}") from exc


def verify_models(root: Path, compression: pd.DataFrame | None,
                  deployed: pd.DataFrame | None) -> None:
    """Checks the files of every compressed model the report links (the models of
    ``compression.parquet``, and each artifact ``deployed_pareto.csv`` recommends) against
    the checksums the model recorded when it was written (``models/<id>/compressed.json``).

    Raises:
        ReportError: a file is missing or changed, or a model's record is damaged, naming
            it and the command that compresses its model again.
    """
    shown: dict[str, set[str]] = {}  # model id: the artifacts recommended of it
    for frame in (compression, deployed):
        if frame is not None and "model_id" in frame.columns:
            for model_id in frame["model_id"].dropna().astype(str).unique():
                shown.setdefault(model_id, set())
    if deployed is not None and "artifact" in deployed.columns:
        for artifact in deployed["artifact"].dropna().astype(str).unique():
            model_id, _, name = artifact.partition("/")
            shown.setdefault(model_id, set()).add(name)
    for model_id, artifacts in sorted(shown.items()):
        model_dir = root / "models" / model_id
        record = model_dir / "compressed.json"
        again = f"run `nas compress {root}` to compress {model_id} again"
        if not record.exists():
            continue  # a run from before models recorded checksums: nothing to check against
        try:
            files = dict(json.loads(record.read_text(encoding="utf-8"))["files"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ReportError(f"{record}: damaged, the record of the model's files cannot be "
                              f"read; {again}") from None
        unrecorded = [n for n in artifacts
                      if not any(k == n or k.startswith(n + "/") for k in files)]
        wrong = sorted(set(unrecorded) | set(mismatched(model_dir, files)))
        if wrong:
            raise ReportError(f"{model_dir / wrong[0]}: missing or damaged (not the file that "
                              f"was written: its checksum differs); {again}")


def _objectives(config: dict[str, Any]) -> dict[str, Direction]:
    raw = config.get("search", {}).get("objectives") or {"accuracy": "max", "latency_ms": "min"}
    return {str(k): ("max" if str(v).startswith("max") else "min") for k, v in raw.items()}


def read_latency_samples(path: Path, arch_keys: set[str]) -> dict[str, list[float]]:
    """Returns ``{arch_key: samples_ms}`` from a latency cache database for ``arch_keys``
    (the measurement with the most samples where one arch was measured more than once)."""
    if not path.exists() or not arch_keys:
        return {}
    found: dict[str, list[float]] = {}
    try:
        rows = _latency_rows(path, "mode=ro")
    except sqlite3.OperationalError:  # a read-only directory: WAL mode cannot open its -shm
        rows = _latency_rows(path, "immutable=1")
    for key, samples in rows:
        if key in arch_keys:
            values = [float(v) for v in json.loads(samples)]
            if len(values) > len(found.get(key, [])):
                found[key] = values
    return found


def _latency_rows(path: Path, mode: str) -> list[tuple[str, str]]:
    db = sqlite3.connect(f"file:{path}?{mode}", uri=True)
    try:
        return db.execute("SELECT arch_key, samples_ms FROM latency").fetchall()
    finally:
        db.close()


def _check_recorded_tables(root: Path, stages: dict[str, Any]) -> None:
    """Checks the tables whose stage recorded their checksum (``pareto.csv``,
    ``deployed_pareto.csv``): a CSV cut at a row's end still parses, with rows lost.

    Raises:
        ReportError: a table no longer has its recorded checksum, naming it and the
            command that writes it again.
    """
    for stage in ("pareto", "compress"):
        recorded = (stages.get(stage) or {}).get("artifacts") or {}
        for name in mismatched(root, dict(recorded)):
            path = root / name
            if path.exists():  # a missing table is told as missing where it is read
                how = _REWRITTEN_BY.get(path.name, "write it again").replace("RUN_DIR", str(root))
                raise ReportError(f"{path}: damaged (its checksum differs from the one recorded "
                                  f"when it was written); {how}")


def load_run(root: Path, label: str | None = None) -> RunData:
    """Returns the run in ``root`` read for the report.

    Raises:
        ReportError: ``root`` has no ``config.yaml`` or no trials table (no search ran), its
            config or a table is damaged, or a compressed model's file no longer matches
            its record (each naming the file and what to do).
    """
    root = Path(root).resolve()
    config_path = root / "config.yaml"
    if not config_path.exists():
        raise ReportError(f"{root}: no config.yaml here; is this a run directory of `nas search`?")
    try:
        config = read_user_yaml(config_path, "run config")
    except UserYamlError as exc:
        raise ReportError(f"{exc}; {_CONFIG_REDO}") from None
    if not isinstance(config, dict):
        raise ReportError(f"{config_path}: not a mapping of config sections; {_CONFIG_REDO}")
    if "argv" not in config:  # `nas search` writes it last: a file cut short lacks it
        raise ReportError(f"{config_path}: damaged, cut short (it lacks the argv: that "
                          f"`nas search` writes last); {_CONFIG_REDO}")
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
    verify_models(root, compression, deployed)
    stages = _read_record(root / "stages.json")
    _check_recorded_tables(root, stages)
    environment = _read_record(root / "environment.json")
    if not environment:
        missing["environment"] = "environment.json is missing (a run from before it was recorded)"
    keys = set(pareto["arch"].astype(str)) if pareto is not None else set()
    try:
        samples = read_latency_samples(root / "latency_cache.db", keys)
    except (sqlite3.Error, ValueError):
        samples = {}
        missing["latency_cache"] = ("latency_cache.db is damaged: latency distributions are "
                                    "not shown (the next `nas search` on the run rebuilds it)")
    return RunData(
        root=root, label=label or root.name, config=config, argv=argv,
        objectives=_objectives(config),
        constraints={str(k): float(v) for k, v in (config.get("search", {}).get("constraints") or {}).items()},
        trials=trials, pareto=pareto, compression=compression, deployed=deployed,
        stages=stages, environment=environment, data_info=_read_json(root / "data.json", missing),
        latency_samples=samples, missing=missing,
    )


def load_runs(roots: list[Path]) -> list[RunData]:
    """Returns the runs in ``roots``, labelled by directory name (made unique).

    Raises:
        ReportError: a path is not a run directory.
    """
    names = [Path(r).resolve().name for r in roots]
    labels = [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]
    return [load_run(Path(r), label) for r, label in zip(roots, labels)]
