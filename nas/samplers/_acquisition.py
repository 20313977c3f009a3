"""Acquisition functions over a candidate pool, every objective minimised.

Each candidate's objective ``k`` is either known (a cheap objective: standard deviation 0)
or a Gaussian posterior from a surrogate. With two objectives the acquisition is the
expected hypervolume improvement over the current front: in closed form when at most one
of a candidate's objectives is uncertain, by Monte Carlo on common random numbers when
both are. With three or more it is the expected improvement of a random augmented
Chebyshev scalarisation (ParEGO); with one, plain expected improvement.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from pareto import pareto_mask


def _steps(front: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns the front's attainment steps in the first objective: segment starts, ends
    and the second objective's level over each (the first segment starts at -inf)."""
    inside = front[(front[:, 0] < reference[0]) & (front[:, 1] < reference[1])]
    if len(inside):
        inside = inside[pareto_mask(inside, ["min", "min"])]
        inside = inside[np.lexsort((inside[:, 1], inside[:, 0]))]
    starts = np.concatenate([[-np.inf], inside[:, 0]])
    ends = np.concatenate([inside[:, 0], [reference[0]]])
    levels = np.concatenate([[reference[1]], inside[:, 1]])
    return starts, ends, levels


def _lengths(first: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Returns, per candidate first-objective value, how much of each segment lies right of it."""
    return np.clip(ends[None, :] - np.maximum(starts[None, :], first[:, None]), 0.0, None)


def _expected_shortfall(level: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Returns E[max(0, level - Y)] for Y ~ N(mean, sd) (sd 0: the plain difference)."""
    diff = level - mean
    safe = np.where(sd > 0, sd, 1.0)
    z = diff / safe
    gaussian = diff * norm.cdf(z) + safe * norm.pdf(z)
    return np.where(sd > 0, gaussian, np.clip(diff, 0.0, None))


def ehvi_2d(
    mean: np.ndarray, sd: np.ndarray, front: np.ndarray, reference: np.ndarray,
    normals: np.ndarray,
) -> np.ndarray:
    """Returns each candidate's expected hypervolume improvement over ``front``.

    Args:
        mean: ``(n, 2)`` posterior means (known values where ``sd`` is 0).
        sd: ``(n, 2)`` posterior standard deviations.
        front: ``(m, 2)`` observed (and believed) points; may be empty.
        reference: The reference point, worse than every point that should count.
        normals: ``(s, 2)`` standard normal draws, shared by every candidate, for those
            whose two objectives are both uncertain.
    """
    out = np.zeros(len(mean))
    for known, other in ((0, 1), (1, 0)):
        rows = np.flatnonzero((sd[:, known] == 0) & ((known == 0) | (sd[:, 0] > 0)))
        if not len(rows):
            continue
        order = [known, other]
        starts, ends, levels = _steps(front[:, order].reshape(-1, 2), reference[order])
        lengths = _lengths(mean[rows, known], starts, ends)
        shortfall = _expected_shortfall(levels[None, :], mean[rows, other][:, None],
                                        sd[rows, other][:, None])
        out[rows] = (lengths * shortfall).sum(axis=1)
    both = np.flatnonzero((sd[:, 0] > 0) & (sd[:, 1] > 0))
    if len(both):
        starts, ends, levels = _steps(front.reshape(-1, 2), reference)
        for chunk in np.array_split(both, max(1, len(both) // 512)):
            draws = mean[chunk, None, :] + sd[chunk, None, :] * normals[None, :, :]  # (c, s, 2)
            first, second = draws[..., 0].reshape(-1), draws[..., 1].reshape(-1)
            lengths = _lengths(first, starts, ends)
            gain = (lengths * np.clip(levels[None, :] - second[:, None], 0.0, None)).sum(axis=1)
            out[chunk] = gain.reshape(len(chunk), -1).mean(axis=1)
    return out


def expected_improvement(mean: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
    """Returns E[max(0, best - Y)] per candidate, Y ~ N(mean, sd)."""
    return _expected_shortfall(np.full_like(mean, best), mean, sd)


def chebyshev_ei(
    mean: np.ndarray, sd: np.ndarray, observed: np.ndarray, weights: np.ndarray,
    normals: np.ndarray,
) -> np.ndarray:
    """Returns each candidate's expected improvement of the augmented Chebyshev
    scalarisation with ``weights`` over the best observed one, by Monte Carlo.

    Objectives are scaled to the observed range first. ``normals`` is ``(s, k)``.
    """
    low, high = observed.min(axis=0), observed.max(axis=0)
    span = np.where(high > low, high - low, 1.0)

    def scalar(values: np.ndarray) -> np.ndarray:
        scaled = (values - low) / span
        return (weights * scaled).max(axis=-1) + 0.05 * (weights * scaled).sum(axis=-1)

    best = scalar(observed).min()
    out = np.empty(len(mean))
    for chunk in np.array_split(np.arange(len(mean)), max(1, len(mean) // 512)):
        draws = mean[chunk, None, :] + sd[chunk, None, :] * normals[None, :, :]
        out[chunk] = np.clip(best - scalar(draws), 0.0, None).mean(axis=1)
    return out
