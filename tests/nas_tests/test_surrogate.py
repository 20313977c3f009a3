"""The model-based sampler's GP kernel: one length scale per choice, gradients that fit."""

from __future__ import annotations

import numpy as np

from nas.samplers._encoding import ChoiceEncoder
from nas.samplers._surrogate import GroupedMatern, Surrogate


def _encoded() -> tuple[np.ndarray, list[list[int]]]:
    encoder = ChoiceEncoder({"op": ("a", "b", "c", "d"), "width": (8, 16, 32), "depth": (1, 2)})
    rows = np.array([[i % 4, i % 3, i % 2] for i in range(12)])
    return encoder.encode(rows), encoder.column_groups(rows)


def test_column_groups_keep_each_choice_one_input() -> None:
    x, groups = _encoded()
    # op: one-hot of 4; width: one-hot of 3 and its scaled value; depth: one-hot of 2 and value
    assert groups == [[0, 1, 2, 3], [4, 5, 6], [7], [8, 9], [10]]
    assert x.shape[1] == 11


def test_the_kernel_sees_any_two_values_of_a_choice_as_equally_far() -> None:
    kernel = GroupedMatern([[0, 1, 2, 3]], length_scale=np.array([0.7]))
    one_hot = np.eye(4)
    k = kernel(one_hot)
    off_diagonal = k[~np.eye(4, dtype=bool)]
    assert np.allclose(np.diag(k), 1.0)
    assert np.allclose(off_diagonal, off_diagonal[0]) and off_diagonal[0] < 1.0


def test_the_kernel_gradient_matches_finite_differences() -> None:
    x, groups = _encoded()
    kernel = GroupedMatern(groups, length_scale=np.linspace(0.5, 2.0, len(groups)))
    _, gradient = kernel(x, eval_gradient=True)
    step = 1e-6
    for g in range(len(groups)):
        theta = kernel.theta.copy()
        theta[g] += step
        ahead = kernel.clone_with_theta(theta)(x)
        theta[g] -= 2 * step
        behind = kernel.clone_with_theta(theta)(x)
        assert np.allclose((ahead - behind) / (2 * step), gradient[..., g], atol=1e-6)


def test_a_choice_that_does_not_matter_gets_a_long_length_scale() -> None:
    rng = np.random.default_rng(0)
    encoder = ChoiceEncoder({"signal": tuple(range(5)), "noise": tuple("abcde")})
    rows = rng.integers(0, 5, size=(60, 2))
    y = np.array([0.0, 1.0, 3.0, 1.5, 2.0])[rows[:, 0]]
    surrogate = Surrogate(seed=0, groups=encoder.column_groups(rows)).fit(encoder.encode(rows), y)
    scales = surrogate._gp.kernel_.k1.k2.length_scale  # constant * grouped + white
    signal_onehot, noise_onehot = scales[0], scales[2]
    assert noise_onehot > 5 * signal_onehot
