"""Rank estimation by empirical variational Bayesian matrix factorisation (EVBMF).

The analytic global solution of Nakajima, Sugiyama, Babacan and Tomioka, "Global analytic
solution of fully-observed variational Bayesian matrix factorization" (JMLR 14, 2013): for a
noisy matrix ``Y = B A' + E`` with Gaussian priors and noise variance estimated by empirical
Bayes, the posterior keeps exactly the singular components above a threshold that depends on the
noise variance, which is itself the minimiser of a one-dimensional free energy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize_scalar

TAU_BAR = 2.5129
"""The constant of the paper's threshold: tau_bar = 2.5129 * sqrt(alpha) (its Theorem 6)."""


@dataclass(frozen=True)
class EVBMFResult:
    """EVBMF of one ``(L, M)`` matrix.

    Attributes:
        rank: number of singular components the posterior keeps (0 when it is all noise).
        singular_values: ``(min(L, M),)`` singular values of the matrix, descending.
        estimates: ``(rank,)`` the posterior's (shrunk) singular values, descending.
        noise_variance: the estimated per-entry noise variance.
    """

    rank: int
    singular_values: np.ndarray
    estimates: np.ndarray
    noise_variance: float


def _tau(x: np.ndarray, alpha: float) -> np.ndarray:
    """The posterior's signal-to-noise of a component above the threshold."""
    b = x - (1 + alpha)
    return 0.5 * (b + np.sqrt(b * b - 4 * alpha))


def _free_energy(sigma2: float, s2: np.ndarray, rows: int, cols: int, residual: float,
                 x_bar: float) -> float:
    """The EVB free energy as a function of the noise variance (up to constants), for
    ``rows <= cols`` and squared singular values ``s2`` of all ``rows`` components."""
    alpha = rows / cols
    x = s2 / (cols * sigma2)
    kept, dropped = x[x > x_bar], x[x <= x_bar]
    tau = _tau(kept, alpha)
    return float(np.sum(dropped - np.log(dropped)) + np.sum(kept - tau)
                 + np.sum(np.log((tau + 1) / kept)) + alpha * np.sum(np.log(tau / alpha + 1))
                 + residual / (cols * sigma2))


def evbmf(matrix: torch.Tensor | np.ndarray) -> EVBMFResult:
    """Estimate the rank of a noisy matrix by EVBMF.

    Args:
        matrix: ``(L, M)``, either orientation (the method needs rows <= columns; a taller matrix
            is transposed, which leaves the singular values and the rank unchanged).

    Returns:
        The :class:`EVBMFResult`. A zero matrix has rank 0.
    """
    y = torch.as_tensor(matrix).detach().to(torch.float64)
    if y.ndim != 2 or min(y.shape) == 0:
        raise ValueError(f"evbmf expects a non-empty 2-D matrix, got shape {tuple(y.shape)}")
    rows, cols = sorted(y.shape)
    s = torch.linalg.svdvals(y).cpu().numpy()
    s2 = s * s
    total = float(s2.sum())
    if total <= 0:
        return EVBMFResult(0, s, s[:0], 0.0)
    # With every singular value in hand the residual outside them is zero up to rounding.
    residual = max(float(y.square().sum()) - total, 0.0)
    alpha = rows / cols
    tau_bar = TAU_BAR * np.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    # The paper's bounds on the noise variance: at most the mean square entry; at least what the
    # components beyond the largest possible rank explain.
    rank_bound = min(int(np.ceil(rows / (1 + alpha))) - 1, rows) - 1
    upper = (total + residual) / (rows * cols)
    tail = s2[rank_bound + 1:]
    lower = max(tail[0] / (cols * x_bar), tail.mean() / cols) if tail.size else 0.0
    if lower < upper:
        sigma2 = float(minimize_scalar(_free_energy, bounds=(lower, upper), method="bounded",
                                       args=(s2, rows, cols, residual, x_bar)).x)
    else:
        sigma2 = upper
    threshold = np.sqrt(cols * sigma2 * x_bar)
    kept = s[s > threshold]
    shrink = 1 - (rows + cols) * sigma2 / kept**2
    estimates = kept / 2 * (shrink + np.sqrt(np.maximum(
        shrink**2 - 4 * rows * cols * sigma2**2 / kept**4, 0.0)))
    return EVBMFResult(int(kept.size), s, estimates, sigma2)
