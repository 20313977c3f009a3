from __future__ import annotations

import numpy as np
import pytest

from pareto import hypervolume, pareto_mask


def brute_force_front(values: np.ndarray, directions: list[str]) -> np.ndarray:
    signs = np.array([1 if d == "min" else -1 for d in directions])
    losses = values * signs
    keep = []
    for i, a in enumerate(losses):
        dominated = any(
            np.all(b <= a) and np.any(b < a) for j, b in enumerate(losses) if j != i
        )
        keep.append(not dominated)
    return np.array(keep)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("directions", [["max", "min"], ["min", "min"], ["max", "min", "min"]])
def test_pareto_mask_matches_brute_force(seed: int, directions: list[str]) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 12, size=(60, len(directions))).astype(float)  # many ties
    np.testing.assert_array_equal(pareto_mask(values, directions), brute_force_front(values, directions))


def test_pareto_mask_empty() -> None:
    assert pareto_mask(np.zeros((0, 2)), ["max", "min"]).shape == (0,)


def test_hypervolume_two_objectives_by_hand() -> None:
    # accuracy (max) vs latency (min), reference (0, 10):
    # points (0.9, 4) and (0.5, 2): union of [0,0.9]x[4,10] and [0,0.5]x[2,10]
    # = 0.9*6 + 0.5*2 = 6.4
    values = np.array([[0.9, 4.0], [0.5, 2.0], [0.4, 5.0]])  # the third is dominated
    assert hypervolume(values, ["max", "min"], [0.0, 10.0]) == pytest.approx(6.4)


def test_hypervolume_three_objectives_by_hand() -> None:
    # two boxes in minimisation space with reference (4,4,4):
    # (1,1,3): 3*3*1 = 9; (2,2,1): 2*2*3 = 12; overlap [2,4]x[2,4]x[3,4] = 4 -> 17
    values = np.array([[1.0, 1.0, 3.0], [2.0, 2.0, 1.0]])
    assert hypervolume(values, ["min", "min", "min"], [4.0, 4.0, 4.0]) == pytest.approx(17.0)


def test_hypervolume_ignores_points_beyond_the_reference() -> None:
    values = np.array([[0.9, 12.0], [0.5, 2.0]])
    assert hypervolume(values, ["max", "min"], [0.0, 10.0]) == pytest.approx(0.5 * 8)
    assert hypervolume(np.array([[0.9, 12.0]]), ["max", "min"], [0.0, 10.0]) == 0.0


def test_hypervolume_rejects_a_wrong_reference_point() -> None:
    with pytest.raises(ValueError, match="reference point"):
        hypervolume(np.ones((2, 2)), ["max", "min"], [0.0])
