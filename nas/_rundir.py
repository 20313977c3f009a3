"""The run directory: every artifact of a run, written atomically, and which stages are done."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from io import BytesIO
from pathlib import Path
from typing import Any

import pandas as pd
import pydantic
import torch
import yaml

from evaluators import atomic_write_bytes, atomic_write_text, digests, mismatched
from evaluators.latency import LatencyCache
from nas._config import RunSpec, read_yaml_mapping
from nas._errors import ConfigError, RunDirError

#: what each record of a run holds and what to do when it is damaged (the report says the same)
_RECORDS = {
    "stages.json": "it records which stages of this run finished and the checksums of their "
                   "artifacts. Restore it from a backup, or start over in another --run-dir",
    "environment.json": "it records the device and library versions each stage ran with. "
                        "Restore it from a backup, or delete it (the report then shows those "
                        "versions as not recorded)",
}

_REDO = ("restore it from a backup, or start over in another --run-dir (the trials of this "
         "run were evaluated with these weights)")

#: Config sections a resumed run may change (how long to search, how fast), all others
#: would make the results already in the directory describe another experiment.
_RESUMABLE_KEYS = {("search", "n_trials"), ("search", "max_concurrent"),
                   ("search", "max_retries"), ("ray",), ("compress",), ("data", "max_bytes")}


class RunDir:
    """Paths and atomic writers for ``runs/<name>/``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    config = property(lambda self: self.root / "config.yaml")
    supernet = property(lambda self: self.root / "supernet.pt")
    supernet_info = property(lambda self: self.root / "supernet.json")
    data_info = property(lambda self: self.root / "data.json")
    study = property(lambda self: self.root / "study.db")
    trials = property(lambda self: self.root / "trials.parquet")
    pareto = property(lambda self: self.root / "pareto.csv")
    tune = property(lambda self: self.root / "tune")
    latency_cache = property(lambda self: self.root / "latency_cache.db")
    stages = property(lambda self: self.root / "stages.json")
    models = property(lambda self: self.root / "models")
    compression = property(lambda self: self.root / "compression.parquet")
    deployed_pareto = property(lambda self: self.root / "deployed_pareto.csv")
    environment = property(lambda self: self.root / "environment.json")
    report = property(lambda self: self.root / "report.html")
    stale_report = property(lambda self: self.root / "report.stale.html")

    def storage_url(self) -> str:
        """Returns the SQLAlchemy URL of ``study.db``."""
        return f"sqlite:///{self.study}"

    def prepare(self, spec: RunSpec, argv: list[str]) -> None:
        """Creates the directory and writes ``config.yaml``, checking that an existing run
        is the same experiment.

        Raises:
            RunDirError: the directory holds a run of a different configuration, or its
                ``config.yaml`` is cut short.
            ConfigError: its ``config.yaml`` cannot be read as a mapping.
        """
        if self.root.exists() and not self.root.is_dir():
            raise RunDirError(f"--run-dir {self.root}: exists and is not a directory")
        if self.config.exists():
            previous = self._read_config()
            if "argv" not in previous:  # written last: a file cut short lacks it
                raise RunDirError(self._cut_short())
            previous.pop("argv", None)
            try:  # compare in today's form: a run written by an older version still resumes
                previous = RunSpec.model_validate(previous).model_dump(mode="json")
            except pydantic.ValidationError:
                pass
            changed = _changed_keys(previous, spec.model_dump(mode="json"))
            blocking = [k for k in changed if not any(k[: len(r)] == r for r in _RESUMABLE_KEYS)]
            if blocking:
                keys = ", ".join(".".join(k) for k in blocking[:5])
                raise RunDirError(
                    f"{self.root}: holds a run with a different configuration ({keys} changed); "
                    "only search.n_trials, search.max_concurrent, search.max_retries, ray.* and "
                    "compress.* may change on resume. "
                    "Choose another --run-dir, or delete this one to start over."
                )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"--run-dir {self.root}: cannot create it ({exc.strerror})") from exc
        resolved = spec.model_dump(mode="json")
        text = yaml.safe_dump(resolved, sort_keys=False) + yaml.safe_dump({"argv": argv})
        atomic_write_text(self.config, text)

    def load_spec(self, overrides: list[str] | None = None) -> RunSpec:
        """Returns the run's resolved config (``config.yaml``) with overrides applied.

        Raises:
            RunDirError: the directory holds no run, or its config is cut short.
            ConfigError: the config or an override does not validate (for the config
                itself, saying how to restore it).
        """
        from nas._config import apply_overrides, validate_config

        if not self.config.exists():
            raise RunDirError(f"{self.root}: no config.yaml here; is this a run directory?")
        raw = self._read_config()
        if "argv" not in raw:  # written last: a file cut short lacks it
            raise RunDirError(self._cut_short())
        raw.pop("argv", None)
        try:
            validate_config(raw, source=str(self.config))
        except ConfigError as exc:  # the file itself, before any override: damaged
            raise ConfigError(f"{exc}; {self._config_redo()}") from None
        return validate_config(apply_overrides(raw, overrides or []), source=str(self.config))

    def _read_config(self) -> dict[str, Any]:
        """Returns the mapping in ``config.yaml``.

        Raises:
            ConfigError: it cannot be read as a mapping (naming it and how to restore it).
        """
        try:
            return read_yaml_mapping(self.config, "run config")
        except ConfigError as exc:
            raise ConfigError(f"{exc}; {self._config_redo()}") from None

    def _cut_short(self) -> str:
        return (f"{self.config}: damaged, cut short (it lacks the argv: that `nas search` "
                f"writes last); {self._config_redo()}")

    def _config_redo(self) -> str:
        return ("it is this run's resolved config: restore it from a backup, or delete it and "
                f"run `nas search` with the run's original config and --run-dir {self.root} "
                "to write it again")

    def done_stages(self) -> dict[str, Any]:
        """Returns ``{stage: info}`` for every completed stage.

        Raises:
            RunDirError: ``stages.json`` is damaged (it cannot be recomputed: it holds the
                checksums every resume verifies).
        """
        return self._read_record(self.stages)

    def recorded_environment(self) -> dict[str, Any]:
        """Returns ``{stage: environment}`` from ``environment.json`` (``{}`` when missing).

        Raises:
            RunDirError: it is damaged (it cannot be recomputed: it records what each stage
                ran with).
        """
        return self._read_record(self.environment)

    def check_records(self) -> None:
        """Checks the run's records (``stages.json``, ``environment.json``) before anything
        is written.

        Raises:
            RunDirError: one is damaged, naming it and what to do.
        """
        self.done_stages()
        self.recorded_environment()

    def _read_record(self, path: Path) -> dict[str, Any]:
        """Returns a record of ``{stage: mapping}`` (``{}`` when missing).

        Raises:
            RunDirError: it is damaged, naming it and what to do.
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
        raise RunDirError(f"{path}: damaged ({why}); {_RECORDS[path.name]}.")

    def rewrite_damaged_data_info(self, summary: Callable[[], dict[str, Any]]) -> bool:
        """Writes ``data.json`` again from ``summary()`` (the data splits' summary) when it
        exists but is not a readable JSON mapping; returns whether it did."""
        if not self.data_info.exists():
            return False
        try:
            if isinstance(json.loads(self.data_info.read_text(encoding="utf-8")), dict):
                return False
        except (OSError, ValueError):
            pass
        self.write_json(self.data_info, summary())
        return True

    def mark_done(self, stage: str, artifacts: Iterable[Path] = (), **info: Any) -> None:
        """Records ``stage`` as complete with ``info`` (JSON-serialisable) and the checksum
        of each of its ``artifacts`` (files in the run directory), which a resume verifies."""
        stages = self.done_stages()
        record: dict[str, Any] = {"finished_at": time.time(), **info}
        if artifacts:
            record["artifacts"] = digests(self.root, artifacts)
        stages[stage] = record
        atomic_write_text(self.stages, json.dumps(stages, indent=2))

    def damaged_artifacts(self, stage: str) -> list[str]:
        """Returns the artifacts recorded by ``stage`` that are missing or no longer match
        their checksum (paths relative to the run directory); empty when all match or the
        stage recorded none."""
        recorded = self.done_stages().get(stage, {}).get("artifacts") or {}
        return mismatched(self.root, dict(recorded))

    def changed_supernet(self, name: str, used_for: str) -> RunDirError:
        """Returns the error for a ``supernet.pt`` (``name``) that is missing or no longer
        has the checksum recorded at training, saying what ``used_for`` it."""
        return RunDirError(
            f"{self.root / name}: missing, or not what was written when the supernet was "
            f"trained (its checksum differs); {used_for}. Restore it from a backup, or start "
            "over in another --run-dir.")

    def load_supernet(self, used_for: str) -> dict[str, torch.Tensor]:
        """Returns the supernet's state_dict, checked against the checksum recorded when it
        was trained (``used_for``: what it is loaded for, for the message).

        Raises:
            RunDirError: it is missing, changed or damaged.
        """
        damaged = self.damaged_artifacts("supernet")
        if damaged:
            raise self.changed_supernet(damaged[0], used_for)
        return self.load_state_dict(self.supernet)

    def remove_leftovers(self) -> list[Path]:
        """Removes what killed writers left behind: temporary files of atomic writes
        (``.NAME.*.tmp``) anywhere in the run directory, and empty files under ``tune/``
        (results and event files of a killed search; Ray's empty dot-file markers stay).
        Call it only while holding the run directory's lock. Returns the paths removed."""
        removed = [p for p in self.root.rglob(".*.tmp") if p.is_file()]
        if self.tune.is_dir():
            removed += [p for p in self.tune.rglob("*") if p.is_file() and p.stat().st_size == 0
                        and not p.name.startswith(".")]  # Ray's own markers are empty
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    def check_study(self) -> None:
        """Checks that ``study.db``, where it exists, is a sound SQLite database of Optuna's
        that still holds the trials this run recorded.

        Raises:
            RunDirError: it is damaged or emptied, naming it and what to do.
        """
        if not self.study.exists():
            return
        try:
            db = sqlite3.connect(f"file:{self.study}?mode=ro", uri=True, timeout=30.0)
            try:
                (verdict,) = db.execute("PRAGMA quick_check").fetchone()
                tables = {name for (name,) in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                trials = (db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
                          if "trials" in tables else 0)
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            verdict, trials = type(exc).__name__, 0
        recorded = self.trials.exists() or "search" in self.done_stages()
        if verdict != "ok":
            why = "damaged, not a readable SQLite database"
        elif recorded and not trials:
            why = "holds no trials, yet this run recorded some"
        else:
            return
        raise RunDirError(
            f"{self.study}: {why}; it is the record of the search's trials. Restore it from a "
            "backup, or delete it (and trials.parquet) to run the search again from its "
            "first trial (the trained supernet is kept).")

    def set_aside_damaged_cache(self) -> Path | None:
        """Renames a damaged ``latency_cache.db`` out of the way (a fresh cache replaces
        it); returns its new path, or ``None`` when it is sound or absent."""
        return LatencyCache.set_aside_if_damaged(self.latency_cache)

    def mark_report_stale(self) -> None:
        """Renames ``report.html`` to ``report.stale.html`` before the run changes, so that a
        run that fails before its report is written again leaves no report looking current
        (the report stage removes the stale copy)."""
        if self.report.exists():
            try:
                os.replace(self.report, self.stale_report)
            except OSError:
                pass  # a read-only directory: nothing in it can change either

    def forget(self, stage: str) -> None:
        """Marks ``stage`` as not complete (its inputs changed)."""
        stages = self.done_stages()
        if stages.pop(stage, None) is not None:
            atomic_write_text(self.stages, json.dumps(stages, indent=2))

    def record_environment(self, stage: str, environment: dict[str, Any]) -> None:
        """Records in ``environment.json`` the device and library versions ``stage`` ran with."""
        recorded = self.recorded_environment()
        recorded[stage] = environment
        atomic_write_text(self.environment, json.dumps(recorded, indent=2))

    def write_json(self, path: Path, value: Any) -> None:
        """Writes ``value`` as indented JSON atomically."""
        atomic_write_text(path, json.dumps(value, indent=2))

    def write_frame(self, path: Path, frame: pd.DataFrame) -> None:
        """Writes ``frame`` as parquet or CSV (by suffix) atomically."""
        buffer = BytesIO()
        if path.suffix == ".parquet":
            frame.to_parquet(buffer, index=False)
        else:
            frame.to_csv(buffer, index=False)
        atomic_write_bytes(path, buffer.getvalue())

    def save_state_dict(self, path: Path, state: dict[str, torch.Tensor]) -> None:
        """Saves a state_dict atomically; it loads back with ``weights_only=True``."""
        buffer = BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def load_state_dict(self, path: Path) -> dict[str, torch.Tensor]:
        """Returns a state_dict saved by ``save_state_dict`` (loaded with ``weights_only=True``).

        Raises:
            RunDirError: the file is missing or not a state_dict.
        """
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as exc:
            raise RunDirError(f"{path}: missing; {_REDO}") from exc
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for damaged files
            raise RunDirError(f"{path}: damaged, not a weights file ({type(exc).__name__}); "
                              f"{_REDO}") from exc
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                                  for v in state.values()):
            raise RunDirError(f"{path}: damaged, not a state_dict of tensors; {_REDO}")
        return state


def _changed_keys(old: Any, new: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Returns the dotted paths (as tuples) whose values differ between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        changed: list[tuple[str, ...]] = []
        for key in sorted(set(old) | set(new)):
            changed += _changed_keys(old.get(key), new.get(key), prefix + (str(key),))
        return changed
    return [] if old == new else [prefix]
