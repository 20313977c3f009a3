"""A Gaussian-process surrogate of one objective over encoded archs (scikit-learn)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
from scipy.optimize import minimize
from scipy.stats import norm, rankdata
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import (
    ConstantKernel,
    Hyperparameter,
    Kernel,
    NormalizedKernelMixin,
    StationaryKernelMixin,
    WhiteKernel,
)


def copula(y: np.ndarray) -> np.ndarray:
    """Returns ``y`` by rank mapped to standard normal quantiles (ties share a rank): a
    surrogate learns the order of the values, and a few very bad archs (a cell whose
    edges are all cut trains to chance) no longer flatten the differences among good ones.
    """
    ranks = rankdata(y, method="average")
    return norm.ppf((ranks - 0.5) / len(y))


class GroupedMatern(StationaryKernelMixin, NormalizedKernelMixin, Kernel):
    """A Matern-5/2 kernel over ``r^2 = sum_g |x_g - x'_g|^2 / l_g^2``: one length scale
    per group of columns, a scikit-learn kernel whose length scales the GP fits.

    With each choice's one-hot block as one group this is the categorical (Hamming)
    kernel of combinatorial BO: a choice is one input with one relevance, whatever its
    number of values, and a GP on 50-100 archs fits a length scale per choice rather than
    per value, which ranked NB201 cells markedly better.

    Args:
        groups: Column indices of each group (together they cover the inputs).
        length_scale: Initial length scales, one per group.
        length_scale_bounds: Bounds of every length scale.
    """

    def __init__(self, groups: list[list[int]], length_scale: np.ndarray | None = None,
                 length_scale_bounds: tuple[float, float] = (5e-2, 1e2)) -> None:
        self.groups = groups
        self.length_scale = np.ones(len(groups)) if length_scale is None else length_scale
        self.length_scale_bounds = length_scale_bounds

    @property
    def hyperparameter_length_scale(self) -> Hyperparameter:
        """The fitted length scales, one per group."""
        return Hyperparameter("length_scale", "numeric", self.length_scale_bounds, len(self.groups))

    def _scaled_distances(self, x: np.ndarray, y: np.ndarray) -> Iterator[np.ndarray]:
        """Yields each group's ``(n, m)`` squared distances over its length scale^2."""
        scales = np.atleast_1d(np.asarray(self.length_scale, dtype=float))
        for g, columns in enumerate(self.groups):
            a, b = x[:, columns], y[:, columns]
            squared = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * a @ b.T
            yield np.clip(squared, 0.0, None) / scales[g] ** 2

    def __call__(self, X: np.ndarray, Y: np.ndarray | None = None,
                 eval_gradient: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Returns the kernel matrix (and its gradient in the log length scales when
        ``eval_gradient``, only with ``Y`` None, as scikit-learn's kernels do)."""
        x = np.atleast_2d(X)
        if eval_gradient and Y is not None:
            raise ValueError("gradient can only be evaluated when Y is None")
        y = x if Y is None else np.atleast_2d(Y)
        # kept per group only for the gradient: a pool of 15,625 archs needs just the sum
        scaled = list(self._scaled_distances(x, y)) if eval_gradient else []
        squared = np.zeros((len(x), len(y)))
        for part in scaled or self._scaled_distances(x, y):
            squared += part
        r = np.sqrt(squared)
        decay = np.exp(-np.sqrt(5.0) * r)
        k = (1.0 + np.sqrt(5.0) * r + 5.0 / 3.0 * r**2) * decay
        if not eval_gradient:
            return k
        if self.hyperparameter_length_scale.fixed:
            return k, np.empty((len(x), len(x), 0))
        # dk/dlog(l_g) = 5/3 (1 + sqrt5 r) exp(-sqrt5 r) * |x_g - x'_g|^2 / l_g^2
        return k, (5.0 / 3.0) * ((1.0 + np.sqrt(5.0) * r) * decay)[..., None] * np.stack(scaled, axis=-1)

    def __repr__(self) -> str:
        return f"GroupedMatern(length_scale={np.round(np.atleast_1d(self.length_scale), 3).tolist()})"


def _lbfgs(obj_func, initial_theta: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, float]:
    """The kernel's hyper-parameters by L-BFGS-B from one start, at most 60 iterations: a
    few hundred likelihood evaluations otherwise make one suggestion take seconds."""
    result = minimize(obj_func, initial_theta, method="L-BFGS-B", jac=True, bounds=bounds,
                      options={"maxiter": 60})
    return result.x, float(result.fun)


class Surrogate:
    """A GP with a Matern-5/2 kernel, one length scale per group of input columns (per
    column when no groups are given), and a fitted noise level; targets are standardised.

    Args:
        seed: Seeds the fit (kept for scikit-learn's random state).
        groups: Column groups sharing a length scale (``ChoiceEncoder.column_groups``).
    """

    def __init__(self, seed: int | None, groups: list[list[int]] | None = None) -> None:
        self.seed = seed
        self.groups = groups
        self._gp: GaussianProcessRegressor | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> Surrogate:
        """Fits the kernel's hyper-parameters and the posterior to ``(x, y)``; returns self."""
        groups = self.groups or [[c] for c in range(x.shape[1])] or [[]]
        kernel = ConstantKernel(1.0, (1e-2, 1e2)) * GroupedMatern(groups) + WhiteKernel(1e-2, (1e-6, 1.0))
        self._gp = GaussianProcessRegressor(
            kernel=kernel, normalize_y=True, optimizer=_lbfgs, random_state=self.seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._gp.fit(x, y)
        return self

    def believe(self, x: np.ndarray, y: np.ndarray, pending: np.ndarray) -> Surrogate:
        """Returns a surrogate with the same kernel conditioned also on ``pending`` points
        at their predicted means (kriging believer): candidates near running trials lose
        the uncertainty those trials will resolve."""
        assert self._gp is not None, "fit first"
        if not len(pending):
            return self
        believed = Surrogate(self.seed, self.groups)
        believed._gp = GaussianProcessRegressor(
            kernel=self._gp.kernel_, normalize_y=True, optimizer=None,
        )
        means, _ = self.predict(pending)
        believed._gp.fit(np.concatenate([x, pending]), np.concatenate([y, means]))
        return believed

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns the posterior mean and standard deviation at ``x``."""
        assert self._gp is not None, "fit first"
        mean, sd = self._gp.predict(x, return_std=True)
        return np.asarray(mean, dtype=float), np.maximum(np.asarray(sd, dtype=float), 1e-9)
