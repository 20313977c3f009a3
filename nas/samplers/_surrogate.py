"""A Gaussian-process surrogate of one objective over encoded archs (scikit-learn)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import minimize
from scipy.stats import norm, rankdata
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel


def copula(y: np.ndarray) -> np.ndarray:
    """Returns ``y`` by rank mapped to standard normal quantiles (ties share a rank): a
    surrogate learns the order of the values, and a few very bad archs (a cell whose
    edges are all cut trains to chance) no longer flatten the differences among good ones.
    """
    ranks = rankdata(y, method="average")
    return norm.ppf((ranks - 0.5) / len(y))


def _lbfgs(obj_func, initial_theta: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, float]:
    """The kernel's hyper-parameters by L-BFGS-B from one start, at most 60 iterations: a
    few hundred likelihood evaluations otherwise make one suggestion take seconds."""
    result = minimize(obj_func, initial_theta, method="L-BFGS-B", jac=True, bounds=bounds,
                      options={"maxiter": 60})
    return result.x, float(result.fun)


class Surrogate:
    """A GP with a Matern-5/2 kernel, one length scale per input dimension, and a fitted
    noise level; targets are standardised.

    Args:
        seed: Seeds the fit (kept for scikit-learn's random state).
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._gp: GaussianProcessRegressor | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> Surrogate:
        """Fits the kernel's hyper-parameters and the posterior to ``(x, y)``; returns self."""
        dims = max(1, x.shape[1])
        kernel = ConstantKernel(1.0, (1e-2, 1e2)) * Matern(
            length_scale=np.ones(dims), length_scale_bounds=(5e-2, 1e2), nu=2.5,
        ) + WhiteKernel(1e-2, (1e-6, 1.0))
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
        believed = Surrogate(self.seed)
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
