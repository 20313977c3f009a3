"""The run directory: every artifact of a run, written atomically, and which stages are done."""

from __future__ import annotations

import json
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import pandas as pd
import pydantic
import torch
import yaml

from evaluators import atomic_write_bytes, atomic_write_text
from nas._config import RunSpec
from nas._errors import RunDirError

#: Config sections a resumed run may change (how long to search, how fast), all others
#: would make the results already in the directory describe another experiment.
_RESUMABLE_KEYS = {("search", "n_trials"), ("search", "max_concurrent"), ("ray",), ("compress",)}


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

    def storage_url(self) -> str:
        """Returns the SQLAlchemy URL of ``study.db``."""
        return f"sqlite:///{self.study}"

    def prepare(self, spec: RunSpec, argv: list[str]) -> None:
        """Creates the directory and writes ``config.yaml``, checking that an existing run
        is the same experiment.

        Raises:
            RunDirError: the directory holds a run of a different configuration.
        """
        if self.root.exists() and not self.root.is_dir():
            raise RunDirError(f"--run-dir {self.root}: exists and is not a directory")
        if self.config.exists():
            previous = yaml.safe_load(self.config.read_text()) or {}
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
                    "only search.n_trials, search.max_concurrent, ray.* and compress.* may change on resume. "
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
            RunDirError: the directory holds no run.
            ConfigError: the config or an override does not validate.
        """
        from nas._config import apply_overrides, validate_config

        if not self.config.exists():
            raise RunDirError(f"{self.root}: no config.yaml here; is this a run directory?")
        raw = yaml.safe_load(self.config.read_text()) or {}
        raw.pop("argv", None)
        return validate_config(apply_overrides(raw, overrides or []), source=str(self.config))

    def done_stages(self) -> dict[str, Any]:
        """Returns ``{stage: info}`` for every completed stage."""
        if not self.stages.exists():
            return {}
        return dict(json.loads(self.stages.read_text()))

    def mark_done(self, stage: str, **info: Any) -> None:
        """Records ``stage`` as complete with ``info`` (JSON-serialisable)."""
        stages = self.done_stages()
        stages[stage] = {"finished_at": time.time(), **info}
        atomic_write_text(self.stages, json.dumps(stages, indent=2))

    def forget(self, stage: str) -> None:
        """Marks ``stage`` as not complete (its inputs changed)."""
        stages = self.done_stages()
        if stages.pop(stage, None) is not None:
            atomic_write_text(self.stages, json.dumps(stages, indent=2))

    def record_environment(self, stage: str, environment: dict[str, Any]) -> None:
        """Records in ``environment.json`` the device and library versions ``stage`` ran with."""
        recorded = json.loads(self.environment.read_text()) if self.environment.exists() else {}
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
        except (OSError, RuntimeError) as exc:
            raise RunDirError(f"{path}: cannot load the weights ({exc})") from exc
        if not isinstance(state, dict):
            raise RunDirError(f"{path}: expected a state_dict, got {type(state).__name__}")
        return state


def _changed_keys(old: Any, new: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Returns the dotted paths (as tuples) whose values differ between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        changed: list[tuple[str, ...]] = []
        for key in sorted(set(old) | set(new)):
            changed += _changed_keys(old.get(key), new.get(key), prefix + (str(key),))
        return changed
    return [] if old == new else [prefix]
