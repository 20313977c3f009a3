"""How far two rankings of the same subnets agree, and how far the stand-alone reference lets
any ranking agree with it: Kendall tau and Spearman rho with bootstrap intervals, the seeds'
agreement with each other, the pairs the reference tells apart, the noise ceiling, and the bar
one more stand-alone run sets (each seed held out in turn)."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 2000
CORRELATIONS = (("kendall_tau", stats.kendalltau), ("spearman_rho", stats.spearmanr))


def agreement(inherited: np.ndarray, standalone: np.ndarray, seed: int) -> dict[str, float]:
    """Returns Kendall tau and Spearman rho of the two accuracies, their p-values and
    percentile-bootstrap 95% intervals over the subnets (2,000 resamples of the subnets; a
    resample whose accuracies are all equal has no rank correlation and is left out)."""
    out: dict[str, float] = {}
    rng = np.random.default_rng(seed)
    resamples = rng.integers(0, len(inherited), size=(BOOTSTRAP_RESAMPLES, len(inherited)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        for name, fn in CORRELATIONS:
            result = fn(inherited, standalone)
            out[name], out[f"{name}_p"] = float(result.statistic), float(result.pvalue)
            boot = np.array([fn(inherited[i], standalone[i]).statistic for i in resamples])
            boot = boot[~np.isnan(boot)]
            low, high = np.percentile(boot, [2.5, 97.5]) if len(boot) else (np.nan, np.nan)
            out[f"{name}_low"], out[f"{name}_high"] = float(low), float(high)
    return out


def reference_agreement(per_seed: np.ndarray, seed: int) -> dict[str, Any] | None:
    """Returns how well one stand-alone run ranks another (the noise of the reference itself):
    the agreement of every pair of seeds and its mean over the pairs, or None with one seed.
    With four seeds or more, ``halves`` is how well the mean of half the seeds ranks the mean
    of the other half (mean over up to 10 splits): how far averaging seeds steadies the
    reference."""
    k = len(per_seed)
    if k < 2:
        return None
    pairs = [{"seeds": [i, j], **agreement(per_seed[i], per_seed[j], seed)}
             for i, j in itertools.combinations(range(k), 2)]
    halves = None
    if k >= 4:
        # each split once: the first seed always on the left
        splits = [list(c) for c in itertools.combinations(range(k), k // 2) if 0 in c][:10]
        scores = []
        for left in splits:
            right = [i for i in range(k) if i not in left][: k // 2]
            a, b = per_seed[left].mean(axis=0), per_seed[right].mean(axis=0)
            scores.append((stats.kendalltau(a, b).statistic, stats.spearmanr(a, b).statistic))
        halves = {"seeds_per_half": k // 2, "splits": len(splits),
                  "kendall_tau_mean": float(np.mean([t for t, _ in scores])),
                  "spearman_rho_mean": float(np.mean([r for _, r in scores]))}
    return {"pairs": pairs, "halves": halves,
            "kendall_tau_mean": float(np.mean([p["kendall_tau"] for p in pairs])),
            "spearman_rho_mean": float(np.mean([p["spearman_rho"] for p in pairs]))}


def held_out(per_seed: np.ndarray, ranking: np.ndarray | None = None) -> dict[str, float] | None:
    """Returns Kendall tau and Spearman rho against the mean of every seed but one, averaged
    over the seed held out (``per_seed``: seeds x subnets): of ``ranking`` (a supernet's
    scores) where given, else of the held-out run itself. The latter is what training each
    subnet alone once more shows against such a reference, so the two compare a supernet with
    a stand-alone run on the same references. None with fewer than three seeds (the mean of
    one run is no mean)."""
    k = len(per_seed)
    if k < 3:
        return None
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        for i in range(k):
            others = np.delete(per_seed, i, axis=0).mean(axis=0)
            ranker = per_seed[i] if ranking is None else ranking
            scores.append([float(fn(ranker, others).statistic) for _, fn in CORRELATIONS])
        warnings.simplefilter("ignore", RuntimeWarning)  # all NaN: a mean of nothing, NaN
        means = np.nanmean(np.array(scores), axis=0)
    return {"seeds": k, **{name: float(m) for (name, _), m in zip(CORRELATIONS, means, strict=True)}}


def resolved_pairs(inherited: np.ndarray, per_seed: np.ndarray) -> dict[str, float] | None:
    """Returns, over the subnet pairs whose stand-alone means differ by more than 1.96 standard
    errors (the seeds' variance pooled over subnets), how many there are and the fraction the
    supernet orders the same way; None with one seed. Pairs closer than that are a coin toss
    for the reference too, so no ranking can be judged on them."""
    k = len(per_seed)
    if k < 2:
        return None
    mean = per_seed.mean(axis=0)
    margin = 1.96 * float(np.sqrt(2 * per_seed.var(axis=0, ddof=1).mean() / k))
    i, j = np.triu_indices(len(mean), 1)
    resolved = np.abs(mean[i] - mean[j]) > margin
    alike = np.sign(mean[i] - mean[j]) == np.sign(inherited[i] - inherited[j])
    n = int(resolved.sum())
    return {"pairs": len(i), "resolved": n, "margin": margin,
            "alike": float(alike[resolved].mean()) if n else float("nan")}


def noise_ceiling(per_seed: np.ndarray, seed: int) -> dict[str, float] | None:
    """Returns the Kendall tau and Spearman rho that a ranking with no error of its own is
    expected to reach against the mean of the seeds (``per_seed``: seeds x subnets), with
    the 2.5 and 97.5 percentiles of what it would show: the most a supernet can be seen to
    reach against this reference. None with one seed; NaN where the seeds' spread is all
    noise.

    The subnets' true accuracies are taken as the seeds' means, their order kept and their
    spread shrunk by the noise the means still carry (the means' variance less the seeds'
    variance pooled over subnets, over the number of seeds). 2,000 references are drawn
    around them with that noise and each is ranked against the truth."""
    k = len(per_seed)
    if k < 2:
        return None
    mean = per_seed.mean(axis=0)
    noise = float(per_seed.var(axis=0, ddof=1).mean()) / k
    spread = float(mean.var(ddof=1))
    shrink = float(np.sqrt(max(0.0, 1.0 - noise / spread))) if spread > 0 else 0.0
    truth = mean.mean() + (mean - mean.mean()) * shrink
    drawn = truth + np.random.default_rng(seed).normal(
        0.0, np.sqrt(noise), size=(BOOTSTRAP_RESAMPLES, len(mean)))
    out: dict[str, float] = {"seeds": k, "noise_sd": float(np.sqrt(noise)), "shrink": shrink}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        for name, fn in CORRELATIONS:
            values = np.array([fn(truth, reference).statistic for reference in drawn])
            values = values[~np.isnan(values)]
            if len(values) == 0:
                out[name] = out[f"{name}_low"] = out[f"{name}_high"] = float("nan")
                continue
            low, high = np.percentile(values, [2.5, 97.5])
            out[name], out[f"{name}_low"], out[f"{name}_high"] = (
                float(values.mean()), float(low), float(high))
    return out
