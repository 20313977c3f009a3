"""The model-based sampler's GP: one length scale per choice, gradients that fit, leave-one-out
means, and the scale (values or ranks) an objective is modelled in."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.gaussian_process import GaussianProcessRegressor

from nas.samplers._encoding import ChoiceEncoder
from nas.samplers._model_based import _fit_in_better_scale
from nas.samplers._surrogate import GroupedMatern, Surrogate, copula


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


def test_leave_one_out_means_equal_refits_without_each_point() -> None:
    x, groups = _encoded()
    y = np.sin(np.arange(len(x), dtype=float)) + x[:, 0]
    surrogate = Surrogate(seed=0, groups=groups).fit(x, y)
    kernel = surrogate._gp.kernel_
    mean, sd = y.mean(), y.std()
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        refit = GaussianProcessRegressor(kernel=kernel, optimizer=None).fit(x[keep], (y[keep] - mean) / sd)
        assert np.isclose(refit.predict(x[i : i + 1])[0] * sd + mean, surrogate.loo_mean()[i], atol=1e-8)


def _trend_with_failures(seed: int) -> tuple[np.ndarray, list[list[int]], np.ndarray]:
    """40 archs of four 3-way choices: accuracy rises with the sum of the choices, and
    four archs picked at random (not by any choice) trained to chance."""
    rng = np.random.default_rng(seed)
    encoder = ChoiceEncoder({f"c{i}": (0, 1, 2) for i in range(4)})
    rows = rng.integers(0, 3, size=(40, 4))
    y = 0.9 + 0.05 * rows.sum(axis=1) / 8.0
    y[rng.choice(40, 4, replace=False)] = 0.1
    return encoder.encode(rows), encoder.column_groups(rows), y


def test_ranks_are_kept_where_a_few_failed_archs_would_flatten_the_values() -> None:
    for seed in range(3):
        x, groups, y = _trend_with_failures(seed)
        values, model = _fit_in_better_scale(x, y, 0, groups, try_ranks=True)
        assert np.allclose(values, copula(y))
        # the kept surrogate orders the good archs: the 36 that trained
        good = y > 0.5
        assert spearmanr(model.predict(x[good])[0], y[good])[0] > 0.9


def test_plain_values_are_kept_when_ranks_are_not_asked_for() -> None:
    x, groups, y = _trend_with_failures(0)
    values, model = _fit_in_better_scale(x, y, 0, groups, try_ranks=False)
    assert np.array_equal(values, y)
    predicted = model.predict(x)[0]  # in the accuracies' own scale, not normal quantiles
    assert predicted.min() > 0.0 and predicted.max() < 1.0
