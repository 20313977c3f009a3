"""Trial evaluators: what the search driver calls to score one architecture."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from evaluators._accuracy import accuracy
from evaluators._cost import count_macs, count_params, weights_mb
from evaluators._data import DataSplits
from evaluators._energy import measure_energy_mj
from evaluators._inherited import inherited_subnet
from evaluators._memory import peak_memory_mb
from evaluators._plugins import import_plugins
from evaluators.latency import DeviceLock, LatencyCache, LatencyMeter
from evaluators.latency._activity import cores_away_from, pinned
from search_spaces import Arch, Supernet, get_search_space

if TYPE_CHECKING:
    import pandas as pd

    from hwprofiles import HardwareProfile


class TrialEvaluator(ABC):
    """Scores one architecture; the search driver sends it to its workers.

    Implementations must be picklable and cheap to send (large tensors are fine: the
    driver ships the evaluator once through the object store).
    """

    @abstractmethod
    def metrics(self) -> tuple[str, ...]:
        """Returns the names of the metrics ``__call__`` reports."""

    @abstractmethod
    def __call__(self, arch: Arch) -> dict[str, Any]:
        """Returns the metrics of ``arch``.

        Raises:
            Exception: any failure; the driver records the trial as FAIL with the message.
        """

    def cheap_metric_names(self) -> tuple[str, ...]:
        """Returns the metrics ``cheap_metrics`` may know; none by default."""
        return ()

    def cheap_metrics(self, archs: Sequence[Arch]) -> dict[str, list[float]]:
        """Returns metrics known for ``archs`` without evaluating them (NaN where one is
        not known): a sampler may weigh them for any candidate before choosing. What a
        trial records is always what ``__call__`` returns. None by default.
        """
        return {}

    def proposal_guard(self) -> AbstractContextManager[Any]:
        """Returns what the driver holds while it proposes the next arch beside running
        trials: nothing by default."""
        return nullcontext()


@dataclass
class SupernetEvaluator(TrialEvaluator):
    """Scores a subnet of a trained supernet: inherit weights, optionally fine-tune,
    recalibrate BatchNorm (``inherited_subnet``), then accuracy on the validation split, cost
    and measured latency.
    """

    space_name: str
    space_options: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    data: DataSplits
    profile: HardwareProfile
    latency_cache: Path | None
    lock_dir: Path | None
    batch_size: int = 128
    recalibration_batches: int = 8
    finetune_epochs: int = 0
    finetune_lr: float = 1e-3
    seed: int = 0
    calibration_batches: int = 8  # INT8 profiles: batches the quantiser calibrates on
    plugins: tuple[str, ...] = ()  # the config's plugins: a worker imports them first
    # device metrics to measure besides latency: "peak_memory_mb", "energy_mj"
    device_metrics: tuple[str, ...] = ()
    _supernet: Supernet | None = field(default=None, init=False, repr=False)

    def metrics(self) -> tuple[str, ...]:
        """Returns the reported metric names."""
        return (
            "accuracy", "latency_ms", "latency_p90_ms", "latency_cv",
            "params", "macs", "eval_seconds", "latency_cached",
            "latency_reliable", "latency_note", "latency_load", "size_mb",
            *self.device_metrics,
        )

    def proposal_guard(self) -> AbstractContextManager[Any]:
        """Returns the device's compute lock: a proposal computed on the measuring host
        never overlaps a latency measurement."""
        return DeviceLock(self.profile.device, lock_dir=self.lock_dir).compute()

    def supernet(self) -> Supernet:
        """Returns the supernet with the trained weights (built once per evaluator copy)."""
        if self._supernet is None:
            import_plugins(self.plugins)  # a user's search space registers itself there
            space = get_search_space(self.space_name, **self.space_options)
            supernet = space.build_supernet(
                num_classes=self.data.num_classes, in_channels=self.data.input_shape[1]
            )
            supernet.load_state_dict(self.state_dict)
            supernet.eval()
            self._supernet = supernet
        return self._supernet

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_supernet"] = None  # rebuilt from state_dict where it lands
        return state

    def __call__(self, arch: Arch) -> dict[str, Any]:
        """Returns accuracy (validation fraction), latency statistics (with whether the
        device measured them reliably, and why not), params and MACs.

        Raises:
            SearchSpaceError: ``arch`` is not in the space.
            NonFiniteLossError: fine-tuning diverged.
        """
        start = time.perf_counter()
        lock = DeviceLock(self.profile.device, lock_dir=self.lock_dir)
        input_shape = self.data.input_shape
        # everything but the timing itself: no overlap with a measurement, and off the cores
        # the profile keeps for measuring
        away = cores_away_from(self.profile.pin_cores) if self.profile.device == "cpu" else None
        with lock.compute(), pinned(away):
            subnet = inherited_subnet(
                self.supernet(), arch, self.data, batch_size=self.batch_size,
                recalibration_batches=self.recalibration_batches,
                finetune_epochs=self.finetune_epochs, finetune_lr=self.finetune_lr,
                seed=self.seed,
            )
            acc = accuracy(subnet, self.data.loader("val", 512))
            params, macs = count_params(subnet), count_macs(subnet, input_shape)
        calibration = None
        if self.profile.precision == "int8":  # the compression chain's calibration set
            calibration = self.data.calibration_inputs(
                self.calibration_batches, self.batch_size, seed=self.seed + 1
            ).numpy()
        # the cache lives in the run directory on the driver's machine: a worker node
        # without that directory (no shared file system) measures without it
        cached = self.latency_cache is not None and self.latency_cache.parent.is_dir()
        meter = LatencyMeter(
            self.profile,
            cache=LatencyCache(self.latency_cache) if cached else None,
            lock=lock,
            calibration=calibration,
        )
        latency = meter.measure(subnet, input_shape, key=arch.key())
        measured: dict[str, float] = {}
        if "peak_memory_mb" in self.device_metrics:
            measured["peak_memory_mb"] = peak_memory_mb(self.profile, subnet, input_shape,
                                                        calibration=calibration)
        if "energy_mj" in self.device_metrics:
            measured["energy_mj"] = measure_energy_mj(meter, subnet, input_shape)
        return {
            **measured,
            "size_mb": weights_mb(subnet, self.profile.precision),
            "accuracy": acc,
            "latency_ms": latency.median_ms,
            "latency_p90_ms": latency.p90_ms,
            "latency_cv": latency.cv,
            "params": float(params),
            "macs": float(macs),
            "eval_seconds": time.perf_counter() - start,
            "latency_cached": float(meter.hits > 0),
            # a figure the device could not measure reliably is kept off the front and
            # measured again later in the search
            "latency_reliable": float(latency.reliable),
            "latency_note": latency.unreliable_reason,
            "latency_load": latency.load,
        }


class TabularEvaluator(TrialEvaluator):
    """Looks results up in a table instead of training: for benchmarks with known fronts.

    Example:
        >>> ev = TabularEvaluator({Arch({"op": "a"}): {"accuracy": 0.9}})
        >>> ev(Arch({"op": "a"}))["accuracy"]
        0.9
    """

    #: Metrics a table gives that cost nothing to look up for every candidate: a
    #: benchmark's latency column stands for a latency model or cache.
    CHEAP = ("latency_ms", "params", "macs", "size_mb")

    def __init__(self, rows: Mapping[Arch, Mapping[str, float]],
                 cheap: Sequence[str] | None = None) -> None:
        if not rows:
            raise ValueError("TabularEvaluator: the table is empty")
        self._rows = {arch.key(): dict(values) for arch, values in rows.items()}
        self._metrics = tuple(next(iter(self._rows.values())))
        self.cheap = tuple(m for m in (self.CHEAP if cheap is None else cheap) if m in self._metrics)

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, arch_columns: Sequence[str], metrics: Mapping[str, str]
    ) -> TabularEvaluator:
        """Returns an evaluator over ``frame``: ``arch_columns`` form the arch, ``metrics``
        maps each reported metric name to its column.

        Raises:
            KeyError: a named column is missing.
        """
        missing = [c for c in [*arch_columns, *metrics.values()] if c not in frame.columns]
        if missing:
            raise KeyError(f"table has no column(s) {missing}; it has {list(frame.columns)}")
        rows: dict[Arch, dict[str, float]] = {}
        for record in frame[[*arch_columns, *metrics.values()]].to_dict("records"):
            arch = Arch({c: _scalar(record[c]) for c in arch_columns})
            rows[arch] = {name: float(record[col]) for name, col in metrics.items()}
        return cls(rows)

    def __len__(self) -> int:
        return len(self._rows)

    def archs(self) -> list[Arch]:
        """Returns every arch in the table."""
        return [Arch.from_json(key) for key in self._rows]

    def metrics(self) -> tuple[str, ...]:
        """Returns the reported metric names."""
        return self._metrics

    def __call__(self, arch: Arch) -> dict[str, float]:
        """Returns the tabulated metrics of ``arch``.

        Raises:
            KeyError: ``arch`` is not in the table.
        """
        try:
            return dict(self._rows[arch.key()])
        except KeyError:
            raise KeyError(f"arch {arch.key()} is not in the table") from None

    def cheap_metric_names(self) -> tuple[str, ...]:
        """Returns the ``cheap`` columns."""
        return self.cheap

    def cheap_metrics(self, archs: Sequence[Arch]) -> dict[str, list[float]]:
        """Returns the ``cheap`` columns of ``archs`` (NaN for an arch not in the table)."""
        nan = float("nan")
        rows = [self._rows.get(arch.key()) for arch in archs]
        return {m: [row[m] if row is not None else nan for row in rows] for m in self.cheap}


def _scalar(value: Any) -> int | float | str | bool:
    """Returns a plain Python scalar for a pandas/numpy cell."""
    scalar = value.item() if hasattr(value, "item") else value
    if not isinstance(scalar, (int, float, str, bool)):
        raise TypeError(f"table cells of arch columns must be scalars, got {value!r}")
    return scalar
