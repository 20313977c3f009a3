"""The result of one latency measurement."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Latency"]


@dataclass(frozen=True)
class Latency:
    """Summary statistics of repeated, timed inference runs.

    Attributes:
        median_ms: Median latency in milliseconds; the value to optimise. A measurement
            taken in several windows reports the median of its quietest window (the one
            with the lowest median): on a shared machine another tenant's burst only ever
            slows a window down.
        p90_ms: 90th percentile in milliseconds (linear interpolation between samples), over
            every window: the tail a deployment sees includes the slow moments.
        mean_ms: Arithmetic mean in milliseconds of the samples behind ``median_ms``.
        cv: Coefficient of variation of the samples behind ``median_ms``, population
            standard deviation over mean.
        n: Number of timed runs.
        samples_ms: The timed runs themselves, in order, or ``()`` when not kept.
        reliable: Whether the device could measure it reliably: within the profile's
            ``max_cv`` and not on a busy device. An unreliable latency is never cached and
            never stands as a trial's or an artifact's measured value.
        unreliable_reason: Why not, when not (``""`` otherwise).
        load: Cores' worth of other processes' work contending with the measurement.

    Example:
        >>> lat = Latency.from_samples([1.0, 2.0, 3.0, 4.0, 5.0])
        >>> lat.median_ms, lat.n
        (3.0, 5)
    """

    median_ms: float
    p90_ms: float
    mean_ms: float
    cv: float
    n: int
    samples_ms: tuple[float, ...] = field(default=(), repr=False)
    reliable: bool = True
    unreliable_reason: str = ""
    load: float = 0.0

    @classmethod
    def from_samples(
        cls, samples_ms: Sequence[float], *, keep_samples: bool = True, windows: int = 1
    ) -> Latency:
        """Summarises per-run latencies.

        Args:
            samples_ms: Latency of each timed run in milliseconds, in the order they ran.
            keep_samples: Whether to keep the raw samples on the result.
            windows: How many consecutive, near-equal windows the samples were timed in
                (apart in time); the median, mean and CV are those of the quietest.

        Returns:
            The summary.

        Raises:
            ValueError: ``samples_ms`` is empty or holds a negative or non-finite value.
        """
        samples = tuple(float(s) for s in samples_ms)
        if not samples:
            raise ValueError("samples_ms: need at least one timed run, got none")
        bad = [s for s in samples if not math.isfinite(s) or s < 0]
        if bad:
            raise ValueError(f"samples_ms: every sample must be finite and >= 0, got {bad[0]}")
        if windows < 1:
            raise ValueError(f"windows: must be >= 1, got {windows}")
        quietest = min(_windows(samples, windows), key=statistics.median)
        mean = statistics.fmean(quietest)
        if len(samples) > 1:
            p90 = statistics.quantiles(samples, n=10, method="inclusive")[8]
        else:
            p90 = samples[0]
        return cls(
            median_ms=statistics.median(quietest),
            p90_ms=p90,
            mean_ms=mean,
            cv=statistics.pstdev(quietest) / mean if mean > 0 else 0.0,
            n=len(samples),
            samples_ms=samples if keep_samples else (),
        )

    def to_dict(self, *, samples: bool = True) -> dict[str, Any]:
        """Returns a JSON-serialisable dict of the fields.

        Args:
            samples: Whether to include ``samples_ms`` (as a list).
        """
        out: dict[str, Any] = {
            "median_ms": self.median_ms,
            "p90_ms": self.p90_ms,
            "mean_ms": self.mean_ms,
            "cv": self.cv,
            "n": self.n,
            "reliable": self.reliable,
            "unreliable_reason": self.unreliable_reason,
            "load": self.load,
        }
        if samples:
            out["samples_ms"] = list(self.samples_ms)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Latency:
        """Inverse of :meth:`to_dict`.

        Raises:
            KeyError: A summary field is missing.
        """
        return cls(
            median_ms=float(data["median_ms"]),
            p90_ms=float(data["p90_ms"]),
            mean_ms=float(data["mean_ms"]),
            cv=float(data["cv"]),
            n=int(data["n"]),
            samples_ms=tuple(float(s) for s in data.get("samples_ms", ())),
            reliable=bool(data.get("reliable", True)),
            unreliable_reason=str(data.get("unreliable_reason", "")),
            load=float(data.get("load", 0.0)),
        )

    def flagged(self, reason: str) -> Latency:
        """Returns a copy marked unreliable for ``reason``."""
        return dataclasses.replace(self, reliable=False, unreliable_reason=reason)


def _windows(samples: tuple[float, ...], count: int) -> list[tuple[float, ...]]:
    """Returns ``samples`` cut into ``count`` consecutive windows whose sizes differ by at
    most one (fewer when there are fewer samples)."""
    count = min(count, len(samples))
    size, extra = divmod(len(samples), count)
    out, start = [], 0
    for i in range(count):
        end = start + size + (i < extra)
        out.append(samples[start:end])
        start = end
    return out
