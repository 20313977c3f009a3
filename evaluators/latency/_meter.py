"""Measuring, caching and serialising latency for one hardware profile."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from evaluators._modes import eval_mode
from evaluators._proctitle import process_title
from evaluators.latency._activity import (
    CoreActivity,
    CpuActivityProbe,
    busiest_processes,
    cuda_busy_reason,
    pinned,
)
from evaluators.latency._cache import LatencyCache
from evaluators.latency._latency import Latency
from evaluators.latency._lock import DeviceLock
from evaluators.latency._registry import get_backend

if TYPE_CHECKING:
    import numpy as np

    from evaluators.latency._base import LatencyBackend, ModelLike
    from hwprofiles import HardwareProfile

__all__ = ["UNRELIABLE_RETAKES", "LatencyMeter", "part_protocol"]

logger = logging.getLogger(__name__)

# seconds to wait before a measurement's next attempt, times the attempt's number
RETRY_PAUSE_S = 0.25
#: Whole measurements (each of up to ``max_attempts`` attempts) or comparisons taken again,
#: at most, when the device flagged the one before unreliable: a figure a decision rests on.
UNRELIABLE_RETAKES = 2
# A model's parts (its blocks, its layers) are timed by the hundred to predict or rank
# candidates, never to stand as a recorded latency: fewer warm-up runs and samples than a
# whole model's measurement, and samples of at most PART_SAMPLE_MS, keep a table of them
# built in seconds.
PART_WARMUP = 5
PART_SAMPLE_MS = 2.0


def part_protocol(profile: HardwareProfile, repeats: int) -> HardwareProfile:
    """Returns how ``profile`` times one part of a model among hundreds.

    Args:
        profile: The hardware profile whole models are measured on.
        repeats: Timed samples per part (the profile's own when it asks for fewer).

    Returns:
        A copy of ``profile`` with at most ``PART_WARMUP`` warm-up runs, ``repeats`` samples
        and samples of at most ``PART_SAMPLE_MS``; its fingerprint, hence its cache entries,
        differ from the whole models'.
    """
    return profile.model_copy(update={
        "warmup": min(profile.warmup, PART_WARMUP),
        "repeats": min(profile.repeats, repeats),
        "min_sample_ms": min(profile.min_sample_ms, PART_SAMPLE_MS),
    })


class LatencyMeter:
    """Measures inference latency of models on the hardware a profile describes.

    Each :meth:`measure` replaces the batch dimension with ``profile.batch_size``, looks
    the architecture up in the cache when a ``key`` is given, and otherwise times
    ``profile.warmup`` + ``profile.repeats`` runs with the profile's backend while holding
    the device lock exclusively, so no training or evaluation that holds
    :meth:`DeviceLock.compute` on the same device runs meanwhile.

    Args:
        profile: Where and how to measure.
        cache: Where measurements are kept; defaults to an in-memory cache. Pass a
            file-backed :class:`LatencyCache` to share results between processes and runs.
        lock: The device lock; defaults to ``DeviceLock(profile.device)`` in the default
            lock directory, which is what compute code should use too.
        backend: The timing backend; defaults to ``get_backend(profile)``.
        calibration: Inputs (N, C, H, W) an INT8 profile's backend calibrates modules with,
            e.g. ``DataSplits.calibration_inputs``: the quantiser then sees what the
            compression chain's does.

    Attributes:
        hits: Measurements answered from the cache.
        misses: Keyed measurements that had to be timed.

    Raises:
        BackendUnavailable: The profile's backend cannot run here.

    Example:
        >>> from torch import nn
        >>> from hwprofiles import load_profile
        >>> meter = LatencyMeter(load_profile("cpu"))
        >>> lat = meter.measure(nn.Conv2d(3, 8, 3), (1, 3, 32, 32), key="conv3x3-8")
        >>> lat.n
        100
    """

    def __init__(
        self,
        profile: HardwareProfile,
        *,
        cache: LatencyCache | None = None,
        lock: DeviceLock | None = None,
        backend: LatencyBackend | None = None,
        calibration: np.ndarray | None = None,
    ) -> None:
        self.profile = profile
        self.cache = cache if cache is not None else LatencyCache()
        self.lock = lock if lock is not None else DeviceLock(profile.device)
        self.backend = backend if backend is not None else get_backend(profile)
        if calibration is not None:
            self.backend.calibration = calibration
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"LatencyMeter(profile={self.profile.name!r}, backend={self.backend.name!r})"

    def input_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Returns ``input_shape`` with its batch dimension set to ``profile.batch_size``.

        Raises:
            ValueError: The shape is empty or has a dimension that is not a positive int.
        """
        dims = tuple(input_shape)
        if not dims or any(not isinstance(d, int) or isinstance(d, bool) or d <= 0 for d in dims):
            raise ValueError(
                f"input_shape: must be positive ints with the batch first, got {dims}"
            )
        return (self.profile.batch_size, *dims[1:])

    def measure(
        self, model: ModelLike, input_shape: Sequence[int], *, key: str | None = None,
        retakes: int = 0,
    ) -> Latency:
        """Returns the latency of ``model`` on this meter's profile.

        Args:
            model: A torch module (timed in eval mode; its train/eval flags are restored
                afterwards), or for ONNX-based backends ONNX bytes or a ``.onnx`` path.
            input_shape: Input shape, batch first; the batch size is the profile's.
            key: A stable architecture key. With a key, a cached result for the same
                key, profile fingerprint and input shape is returned without timing, and
                a new measurement is stored.
            retakes: Whole measurements taken again, at most, while the device could not
                measure reliably (each after ``max_attempts`` attempts): a figure a decision
                rests on gets ``UNRELIABLE_RETAKES``.

        Returns:
            The measured (or cached) latency. A measurement noisier than ``max_cv`` or taken
            while other processes contend for its cores is repeated (up to
            ``max_attempts``, then ``retakes`` more measurements); when none was reliable,
            the least disturbed one is returned with ``reliable=False`` and the reason, and
            is not cached.

        Raises:
            ValueError: ``input_shape`` is malformed or ``retakes < 0``.
            TypeError: The backend cannot time this kind of model.
            TimeoutError: The device lock has a timeout and it passed.
        """
        shape = self.input_shape(input_shape)
        fingerprint = self.profile.fingerprint()
        if key is not None:
            cached = self.cache.get(key, fingerprint, shape)
            if cached is not None:
                self.hits += 1
                return cached
            self.misses += 1

        if retakes < 0:
            raise ValueError(f"retakes: must be >= 0, got {retakes}")
        taken = [self._time(model, shape)]
        while not taken[-1].reliable and len(taken) <= retakes:
            logger.info("latency on profile %r unreliable (%s): measuring again, %d of %d",
                        self.profile.name, taken[-1].unreliable_reason, len(taken), retakes)
            taken.append(self._time(model, shape))
        latency = taken[-1] if taken[-1].reliable else min(taken, key=lambda t: (t.load, t.cv))
        logger.debug(
            "%s on %s %s: median %.3f ms, p90 %.3f ms, cv %.3f",
            key or type(model).__name__, self.profile.name, shape,
            latency.median_ms, latency.p90_ms, latency.cv,
        )
        if key is not None and latency.reliable:  # an unreliable figure is measured again
            self.cache.put(key, fingerprint, shape, latency)
        return latency

    def measure_side_by_side(
        self, models: Sequence[ModelLike], input_shape: Sequence[int], *, rounds: int = 3
    ) -> list[Latency]:
        """Returns the latency of each of ``models``, measured in interleaved rounds.

        Each round times every model once, in an order that rotates from round to round,
        so a change in the machine's load or clock during the measurement touches all of
        them alike: ratios between the results are fair. Each result summarises the samples
        of all its rounds, and is unreliable when any of its rounds was. Nothing is cached.

        Args:
            models: What to compare (modules, ONNX bytes or paths, as :meth:`measure`).
            input_shape: Input shape, batch first; the batch size is the profile's.
            rounds: Measurements per model.

        Returns:
            One latency per model, in the order given.

        Raises:
            ValueError: ``input_shape`` is malformed or ``rounds < 1``.
        """
        if rounds < 1:
            raise ValueError(f"rounds: must be >= 1, got {rounds}")
        shape = self.input_shape(input_shape)
        samples: list[list[float]] = [[] for _ in models]
        flags: list[list[Latency]] = [[] for _ in models]
        for r in range(rounds):
            for i in [(j + r) % len(models) for j in range(len(models))]:
                latency = self._time(models[i], shape)
                samples[i].extend(latency.samples_ms)
                if not latency.reliable:
                    flags[i].append(latency)
        results = []
        for s, bad in zip(samples, flags):
            # each round's samples are its windows: the quietest of all rounds counts
            latency = Latency.from_samples(s, windows=rounds * min(self.profile.windows,
                                                                   self.profile.repeats))
            if bad:  # a round the device could not measure makes the whole figure doubtful
                latency = dataclasses.replace(latency, load=max(b.load for b in bad)).flagged(
                    f"{len(bad)} of {rounds} rounds unreliable: {bad[0].unreliable_reason}")
            results.append(latency)
        return results

    def compare_side_by_side(
        self, models: Sequence[ModelLike], input_shape: Sequence[int], *, rounds: int = 3,
        retakes: int = UNRELIABLE_RETAKES,
    ) -> list[list[Latency]]:
        """Returns every comparison of ``models`` taken in interleaved rounds (see
        :meth:`measure_side_by_side`): one, or, while the device flagged any of its figures
        unreliable, up to ``retakes`` more. The last one decides; when its figures are still
        flagged, nothing may be concluded from them.

        Raises:
            ValueError: ``input_shape`` is malformed, ``rounds < 1`` or ``retakes < 0``.
        """
        if retakes < 0:
            raise ValueError(f"retakes: must be >= 0, got {retakes}")
        taken = [self.measure_side_by_side(models, input_shape, rounds=rounds)]
        while len(taken) <= retakes and not all(m.reliable for m in taken[-1]):
            reason = next(m.unreliable_reason for m in taken[-1] if not m.reliable)
            logger.info("side by side on profile %r unreliable (%s): comparing again, %d of %d",
                        self.profile.name, reason, len(taken), retakes)
            taken.append(self.measure_side_by_side(models, input_shape, rounds=rounds))
        return taken

    def _time(self, model: ModelLike, shape: tuple[int, ...]) -> Latency:
        """Times ``model`` with the profile's protocol, holding the device lock (and bound to
        the profile's ``pin_cores``). An attempt counts when its CV is within ``max_cv`` and no
        other process contended for its cores beyond ``max_load``; up to ``max_attempts`` are
        taken, pausing between them so that a passing load can pass. The first that counts is
        returned, or else the least disturbed one, flagged unreliable with the reason."""
        profile = self.profile
        best: Latency | None = None
        best_busy = True
        title = f"latency meter [{profile.name}]"
        with eval_mode(model), self.lock.measure(), process_title(title, append=True), \
                pinned(profile.pin_cores if profile.device == "cpu" else None) as cores:
            for attempt in range(profile.max_attempts):
                if attempt:
                    time.sleep(min(RETRY_PAUSE_S * attempt, 2.0))
                probe = CpuActivityProbe(cores, threads=profile.threads or len(cores))
                gpu_busy = cuda_busy_reason() if profile.device == "cuda" else None
                probe.start()
                samples = self.backend.time(
                    model, shape, warmup=profile.warmup, repeats=profile.repeats,
                    min_sample_ms=profile.min_sample_ms, windows=profile.windows,
                    window_pause_ms=profile.window_pause_ms,
                )
                activity = probe.stop()
                latency, busy = self._judge(
                    Latency.from_samples(samples, windows=profile.windows), activity, gpu_busy)
                if latency.reliable:
                    return latency
                if best is None or (busy, latency.cv) < (best_busy, best.cv):
                    best, best_busy = latency, busy  # keep the least disturbed measurement
        assert best is not None
        reason = best.unreliable_reason
        if best_busy and profile.device == "cpu":
            culprits = busiest_processes()
            if culprits:
                reason += "; busiest now: " + ", ".join(culprits)
        attempts = profile.max_attempts
        logger.warning("latency on profile %r not measured reliably after %d attempt%s: %s",
                       profile.name, attempts, "s" * (attempts != 1), reason)
        return best.flagged(f"{reason} (after {attempts} attempt{'s' * (attempts != 1)})")

    def _judge(self, latency: Latency, activity: CoreActivity, gpu_busy: str | None = None
               ) -> tuple[Latency, bool]:
        """Returns ``latency`` with the contention it saw, flagged when too noisy or busy,
        and whether the device was busy."""
        profile = self.profile
        latency = dataclasses.replace(latency, load=activity.contention)
        reasons = [f"busy GPU: {gpu_busy}"] if gpu_busy else []
        cpu_busy = (profile.device == "cpu" and profile.max_load is not None
                    and activity.contention > profile.max_load)
        if cpu_busy:
            reasons.append(f"busy device: {activity.describe()}, above max_load "
                           f"{profile.max_load:g}")
        if profile.max_cv is not None and latency.cv > profile.max_cv:
            reasons.append(f"CV {latency.cv:.3f} above max_cv {profile.max_cv:g}")
        busy = cpu_busy or bool(gpu_busy)
        return (latency.flagged("; ".join(reasons)) if reasons else latency), busy
