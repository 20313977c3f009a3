"""The ranking benchmark's statistics: rank agreement with its interval, the pairs the
stand-alone reference tells apart, and the noise ceiling a perfect ranking meets."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from ranking_agreement import (  # noqa: E402
    agreement,
    held_out,
    noise_ceiling,
    reference_agreement,
    resolved_pairs,
)


def seeds_around(truth: np.ndarray, sd: float, k: int, seed: int = 0) -> np.ndarray:
    return truth + np.random.default_rng(seed).normal(0.0, sd, size=(k, len(truth)))


def test_agreement_is_one_for_the_same_order_and_minus_one_for_the_reverse() -> None:
    a = np.linspace(0.7, 0.9, 12)
    same = agreement(a, a + 0.01, seed=0)
    reverse = agreement(a, -a, seed=0)
    assert same["kendall_tau"] == pytest.approx(1.0) and same["spearman_rho"] == pytest.approx(1.0)
    assert same["kendall_tau_low"] == pytest.approx(1.0)  # every resample keeps the order
    assert reverse["kendall_tau"] == pytest.approx(-1.0)
    assert reverse["spearman_rho_high"] == pytest.approx(-1.0)


def test_resolved_pairs_counts_only_the_pairs_the_seeds_tell_apart() -> None:
    # two subnets far apart, two a hair apart (well inside the seeds' noise)
    per_seed = np.array([[0.70, 0.90, 0.800, 0.801],
                         [0.71, 0.91, 0.810, 0.790],
                         [0.69, 0.89, 0.790, 0.811]])
    inherited = np.array([0.5, 0.6, 0.56, 0.55])
    pairs = resolved_pairs(inherited, per_seed)
    assert pairs is not None and pairs["pairs"] == 6
    # 0.70 vs 0.90, and each of those against the two 0.80s: 5 resolved; the 0.80s are not
    assert pairs["resolved"] == 5
    assert pairs["alike"] == 1.0  # inherited orders all five as the reference does
    assert resolved_pairs(inherited, per_seed[:1]) is None


def test_reference_agreement_compares_every_pair_of_seeds_and_halves_from_four() -> None:
    per_seed = seeds_around(np.linspace(0.7, 0.9, 10), 0.01, k=4)
    reference = reference_agreement(per_seed, seed=0)
    assert reference is not None and len(reference["pairs"]) == 6
    assert reference["halves"] is not None and reference["halves"]["seeds_per_half"] == 2
    assert reference["kendall_tau_mean"] > 0.6  # spread 20 points, noise 1
    assert reference_agreement(per_seed[:3], seed=0)["halves"] is None  # type: ignore[index]
    assert reference_agreement(per_seed[:1], seed=0) is None


def test_noise_ceiling_is_one_without_noise_and_falls_as_the_noise_grows() -> None:
    truth = np.linspace(0.70, 0.85, 16)
    quiet = noise_ceiling(np.repeat(truth[None], 3, axis=0), seed=0)
    assert quiet is not None and quiet["kendall_tau"] == pytest.approx(1.0)
    assert quiet["noise_sd"] == pytest.approx(0.0, abs=1e-9)
    ceilings = [noise_ceiling(seeds_around(truth, sd, k=2), seed=0) for sd in (0.005, 0.02, 0.06)]
    taus = [c["kendall_tau"] for c in ceilings if c is not None]
    assert taus[0] > taus[1] > taus[2] and taus[0] > 0.8
    assert all(c is not None and c["kendall_tau_low"] <= c["kendall_tau"] <= c["kendall_tau_high"]
               for c in ceilings)
    assert noise_ceiling(truth[None], seed=0) is None  # one seed has no noise to go by


def test_noise_ceiling_rises_with_more_seeds_and_is_undefined_when_all_is_noise() -> None:
    truth = np.linspace(0.70, 0.85, 16)
    two = noise_ceiling(seeds_around(truth, 0.03, k=2), seed=0)
    eight = noise_ceiling(seeds_around(truth, 0.03, k=8), seed=0)
    assert two is not None and eight is not None
    assert eight["kendall_tau"] > two["kendall_tau"]
    # subnets whose seeds differ but whose means are equal: no order to rank against
    wobble = np.linspace(-0.02, 0.02, 16)
    flat = noise_ceiling(np.stack([0.8 + wobble, 0.8 - wobble]), seed=0)
    assert flat is not None and flat["shrink"] == 0.0 and math.isnan(flat["kendall_tau"])


def test_held_out_scores_one_run_and_a_ranking_against_the_same_means_of_the_others() -> None:
    truth = np.linspace(0.70, 0.85, 16)
    per_seed = seeds_around(truth, 0.01, k=4)
    bar = held_out(per_seed)
    assert bar is not None and bar["seeds"] == 4
    # by hand: each run against the mean of the other three, averaged
    by_hand = np.mean([stats.kendalltau(per_seed[i], np.delete(per_seed, i, 0).mean(0)).statistic
                       for i in range(4)])
    assert bar["kendall_tau"] == pytest.approx(by_hand)
    # the truth ranks the held-out means better than one noisy run does; its reverse worst
    exact = held_out(per_seed, truth)
    reverse = held_out(per_seed, -truth)
    assert exact is not None and reverse is not None
    assert exact["kendall_tau"] > bar["kendall_tau"] > 0 > reverse["kendall_tau"]
    assert exact["spearman_rho"] > bar["spearman_rho"]
    assert held_out(per_seed[:2]) is None  # the mean of one run is no mean
