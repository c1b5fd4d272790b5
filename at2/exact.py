"""Exact GP inference for AT2 on the task x configuration x epoch grid.

Covers: every *source* task observed on every (configuration, epoch) cell of the grid, and the
target task observed on any subset of its cells (m of them). That is the AT2 setting with the
published databases. Sources with gaps are refused (use the variational engine there).

With ``K_T``, ``K_C``, ``K_E`` the task, configuration and epoch kernel matrices and ``D`` the
sources' noise variances (one per task), the covariance of the source block is
``A = K_SS (x) K_C (x) K_E + D (x) I (x) I = D^1/2 (K~ (x) K_C (x) K_E + I) D^1/2`` with the
whitened task factor ``K~ = D^-1/2 K_SS D^-1/2``. With the eigendecompositions of the three factors,
``A^-1`` and ``log det A`` come from the ``S C E`` eigenvalue products; a solve is three mode-wise
products. The m target cells enter through the m x m Schur complement
``S = K_tt + s2_t I - B' A^-1 B``, whose columns ``B[:, j] = k_tS (x) K_C[:, c_j] (x) K_E[:, e_j]``
are Kronecker vectors as well; the target's own offset per configuration
(:class:`~at2.offset_kernel.ConfigurationOffsetKernel`) adds to ``K_tt`` only. The m cells belong
to p <= m configurations (a few when the loop trains some configurations for many epochs), so
``B' A^-1 B`` is formed from one E-vector per pair of them (p^2 C E + m^2 E operations instead of
m^2 C E). The marginal likelihood, the posterior mean and the variance over all C x E target cells
follow from the same pieces without ever forming a matrix larger than ``m x C x E``; everything is
differentiable, so hyper-parameters are fitted by maximising the exact marginal likelihood with
torch optimisers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from gpytorch.distributions import MultivariateNormal
from torch import Tensor
from tqdm.auto import trange

from .engine import Engine
from .linalg import kron_mv, safe_eigh
from .model import AT2Surrogate, CurveGrid


@dataclass
class _Solve:
    """The factorisation of the observed covariance for the current hyper-parameters."""

    n: int  # number of observations
    K_T: Tensor  # (T, T) task covariance
    means: Tensor  # (T,) constant means
    root: Tensor  # (S,) square roots of the sources' noise variances
    Q_T: Tensor  # (S, S) eigenvectors of the whitened source task covariance
    Q_C: Tensor  # (C, C)
    Q_E: Tensor  # (E, E)
    W: Tensor  # (S, C, E) 1 / (l_T l_C l_E + 1)
    alpha: Tensor  # (S, C, E) whitened A^-1 y_S
    quad: Tensor  # y' K^-1 y
    logdet: Tensor  # log det K
    k_tS: Tensor  # (S,) target-source task covariances, whitened by the sources' noise
    k_tt: Tensor  # target task variance
    rows_t: Tensor  # (m, D + 2) model input rows of the target's observed cells
    offset: Tensor  # (m, m) the target's own offsets between them
    mean_t: Tensor  # target constant mean
    K_C: Tensor  # (C, C)
    K_E: Tensor  # (E, E)
    U_C: Tensor  # (C, C) Q_C diag(l_C): row c is Q_C' K_C[:, c]
    U_E: Tensor  # (E, E)
    W_t: Tensor  # (C, E) sum_i (Q_T' k_tS)_i^2 / (l_T l_C l_E + 1)[i]
    alpha_t: Tensor  # (C, E) sum_s k_tS[s] (whitened A^-1 y_S)[s]
    cells: tuple[Tensor, Tensor]  # target observations: configuration and epoch indices (m,)
    configs: Tensor  # (p,) the distinct configurations among them
    group: Tensor  # (m,) c = configs[group]
    chol: Tensor  # (m, m) Cholesky factor of the Schur complement
    beta: Tensor  # (m,) S^-1 (y_t - B' A^-1 y_S)

    def mll(self) -> Tensor:
        """Log marginal likelihood per observation."""
        return -0.5 * (self.quad + self.logdet + self.n * math.log(2 * math.pi)) / self.n


class ExactEngine(Engine):
    """Exact inference and marginal-likelihood fitting for :class:`AT2Surrogate` on a grid.

    Args:
        model: The surrogate (kernels, means, noise); moved to the grid's device and dtype.
        grid: The curves; its last task is the target. Read again at every call, so observations
            added to ``grid.values`` are seen by the next :meth:`update`/:meth:`posterior_grid`.
        fit_steps: Adam steps of the offline fit (default 300).
        refit_steps: Adam steps after each new observation (default 5).
        lr: Adam learning rate (default 0.02).
    """

    name = "exact"
    options = {"fit_steps": (int, 0), "refit_steps": (int, 0), "lr": (float, 0)}
    default_restarts = 4  # a fit takes seconds; see AT2Tuner's restarts
    default_offset = 0.05  # see AT2Tuner's offset

    def __init__(self, model: AT2Surrogate, grid: CurveGrid, fit_steps: int = 300,
                 refit_steps: int = 5, lr: float = 0.02) -> None:
        self.check_options({"fit_steps": fit_steps, "refit_steps": refit_steps, "lr": lr})
        self.model = model.to(device=grid.values.device, dtype=grid.values.dtype)
        self.grid = grid
        self.fit_steps, self.refit_steps, self.lr = fit_steps, refit_steps, lr
        missing = (~grid.observed[:-1]).flatten(1).sum(-1)
        if missing.any():
            bad = {grid.tasks[i]: int(n) for i, n in enumerate(missing.tolist()) if n}
            raise ValueError(f"the exact engine needs complete source curves; missing cells: "
                             f"{bad}. Use engine='variational' for databases with gaps.")
        self._optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)

    # ------------------------------------------------------------------ fitting
    def fit(self, progress: bool = False, steps: int | None = None) -> list[float]:
        """Maximise the exact marginal likelihood for ``steps`` Adam steps (default
        ``fit_steps``); returns the per-step values (per datum)."""
        self.model.task_kernel.update(self.grid.values, self.grid.observed)
        history = []
        self.model.train()
        steps = self.fit_steps if steps is None else steps
        for _ in trange(steps, desc="exact fit", disable=not progress, leave=False):
            self._optimizer.zero_grad(set_to_none=True)
            mll = self._solve().mll()
            (-mll).backward()
            self._optimizer.step()
            history.append(mll.detach())
        self.model.eval()
        return torch.stack(history).tolist() if history else []

    def update(self) -> None:
        """After new target observations: refresh the task distances and refit briefly."""
        self.fit(steps=self.refit_steps)

    # ------------------------------------------------------------------ algebra
    def _solve(self) -> _Solve:
        model, grid = self.model, self.grid
        S, C, E = grid.values.shape[0] - 1, *grid.values.shape[1:]
        K_T = model.task_kernel.matrix()
        K_C = model.config_kernel.forward(grid.encodings, grid.encodings)
        t = grid.t.unsqueeze(-1)
        K_E = model.epoch_kernel.forward(t, t)
        noise = model.likelihood.noise  # (T,): one variance per task
        root = noise[:S].sqrt()
        means = model.mean.constants
        l_T, Q_T = safe_eigh(K_T[:S, :S] / (root[:, None] * root[None, :]))
        l_C, Q_C = safe_eigh(K_C)
        l_E, Q_E = safe_eigh(K_E)
        W = 1.0 / (l_T[:, None, None] * l_C[None, :, None] * l_E[None, None, :] + 1.0)

        y_S = (grid.values[:S] - means[:S, None, None]) / root[:, None, None]
        rotated = kron_mv((Q_T.mT, Q_C.mT, Q_E.mT), y_S)
        alpha = kron_mv((Q_T, Q_C, Q_E), W * rotated)  # whitened A^-1 y_S, (S, C, E)
        quad = (rotated**2 * W).sum()
        logdet = -torch.log(W).sum() + C * E * torch.log(noise[:S]).sum()

        k_tS, k_tt = K_T[-1, :S] / root, K_T[-1, -1]
        U_C, U_E = Q_C * l_C, Q_E * l_E
        W_t = torch.einsum("i,ice->ce", (Q_T.mT @ k_tS) ** 2, W)
        alpha_t = torch.einsum("s,sce->ce", k_tS, alpha)

        c, e = torch.nonzero(grid.observed[-1], as_tuple=True)
        m = c.numel()
        configs, group = torch.unique(c, return_inverse=True)  # c = configs[group]
        p = configs.numel()
        # B' A^-1 B [j, k] = sum_b U_E[e_j, b] U_E[e_k, b] V[g_j, g_k, b] with
        # V[q, r, b] = sum_a U_C[configs_q, a] U_C[configs_r, a] W_t[a, b]
        u = U_C[configs]
        V = ((u[:, None, :] * u[None, :, :]).reshape(p * p, C) @ W_t).view(p, p, E)
        u_e = U_E[e]
        left = V.index_select(0, group) * u_e[:, None, :]  # (m, p, E)
        BtAB = (left.index_select(1, group) * u_e[None, :, :]).sum(-1)
        rows_t = grid.inputs(S, c, e)
        offset = model.offset_kernel.forward(rows_t, rows_t, task_matrix=K_T)
        schur = k_tt * K_C[c][:, c] * K_E[e][:, e] + offset - BtAB + noise[-1] * torch.eye(
            m, dtype=W.dtype, device=W.device)
        chol = torch.linalg.cholesky(schur)
        mean_t = means[-1]
        residual = grid.values[-1, c, e] - mean_t - (K_C @ alpha_t @ K_E)[c, e]
        beta = torch.cholesky_solve(residual.unsqueeze(-1), chol).squeeze(-1)
        quad = quad + residual @ beta
        logdet = logdet + 2 * torch.log(torch.diagonal(chol)).sum()
        return _Solve(S * C * E + m, K_T, means, root, Q_T, Q_C, Q_E, W, alpha, quad, logdet, k_tS,
                      k_tt, rows_t, offset, mean_t, K_C, K_E, U_C, U_E, W_t, alpha_t, (c, e),
                      configs, group, chol, beta)

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def posterior_grid(self) -> tuple[Tensor, Tensor]:
        """Posterior of the latent target curves at every (configuration, epoch) cell.

        Returns:
            ``mean (C, E)`` and ``variance (C, E)`` of f (noise-free).
        """
        s = self._solve()
        c, e = s.cells
        # H = B' A^-1 k_S(cell), (m, C, E), from one (C, E) table per configuration observed:
        # Z[q, c, b] = sum_a U_C[configs_q, a] U_C[c, a] W_t[a, b]
        C, E = s.W_t.shape
        p = s.configs.numel()
        u = s.U_C[s.configs]
        Z = ((u[:, None, :] * s.U_C[None, :, :]).reshape(p * C, C) @ s.W_t).view(p, C * E)
        H = (Z.index_select(0, s.group).view(-1, C, E) * s.U_E[e][:, None, :]) @ s.U_E.mT
        first = torch.zeros(C, dtype=torch.long, device=c.device)  # any epoch: offsets are flat
        config_rows = self.grid.inputs(self.grid.target, torch.arange(C, device=c.device), first)
        own = self.model.offset_kernel.forward(s.rows_t, config_rows, task_matrix=s.K_T)  # (m, C)
        k_t = s.k_tt * s.K_C[c][:, :, None] * s.K_E[e][:, None, :] + own[:, :, None]
        w = H - k_t
        mean = s.mean_t + s.K_C @ s.alpha_t @ s.K_E - torch.einsum("j,jce->ce", s.beta, w)
        source_part = (s.U_C**2) @ s.W_t @ (s.U_E**2).mT
        v = torch.linalg.solve_triangular(s.chol, w.flatten(1), upper=False)
        prior = (s.k_tt * torch.diagonal(s.K_C)[:, None] * torch.diagonal(s.K_E)[None, :]
                 + self.model.offset_kernel.variance(s.K_T))
        var = prior - source_part - (v**2).sum(0).view_as(prior)
        return mean, var.clamp_min(1e-12)

    def predict(self, X: Tensor) -> MultivariateNormal:
        """Joint posterior of the latent curves at arbitrary rows (any task, any configuration).

        Args:
            X: ``(..., q, D + 2)`` rows ``[task index, encoding, t]`` (see :class:`CurveGrid`).

        Returns:
            A ``MultivariateNormal`` with mean ``(..., q)`` and covariance ``(..., q, q)``;
            differentiable with respect to ``X``'s encodings and ``t``.
        """
        with torch.no_grad():
            s = self._solve()
        model, grid = self.model, self.grid
        task, x, t = X[..., 0].long(), X[..., 1:-1], X[..., -1:]
        S = s.root.numel()
        k_task = s.K_T[task]  # (..., q, T)
        k_S = k_task[..., :S] / s.root  # whitened source covariances
        k_c = model.config_kernel.forward(x, grid.encodings)  # (..., q, C)
        k_e = model.epoch_kernel.forward(t, grid.t.unsqueeze(-1))  # (..., q, E)
        u_T, u_C, u_E = k_S @ s.Q_T, k_c @ s.Q_C, k_e @ s.Q_E

        source_mean = torch.einsum("...qs,...qc,...qsc->...q", k_S, k_c,
                                   torch.einsum("...qe,sce->...qsc", k_e, s.alpha))
        c, e = s.cells
        u_target = s.Q_T.mT @ s.k_tS  # the target's row in the eigenbasis
        R = torch.einsum("...qi,i,iab->...qab", u_T, u_target, s.W) * (
            u_C.unsqueeze(-1) * u_E.unsqueeze(-2))
        H = ((R @ s.U_E[e].mT) * s.U_C[c].mT).sum(-2)  # (..., q, m)
        own = model.offset_kernel
        w = (H - k_task[..., -1:] * k_c[..., c] * k_e[..., e]
             - own.forward(X, s.rows_t, task_matrix=s.K_T))
        mean = s.means[task] + source_mean - w @ s.beta

        prior = (s.K_T[task.unsqueeze(-1), task.unsqueeze(-2)]
                 * model.config_kernel.forward(x, x) * model.epoch_kernel.forward(t, t)
                 + own.forward(X, X, task_matrix=s.K_T))
        pair_C = u_C.unsqueeze(-2) * u_C.unsqueeze(-3)  # (..., q, q, C)
        pair_E = u_E.unsqueeze(-2) * u_E.unsqueeze(-3)
        per_task = torch.einsum("...pqa,iab,...pqb->...pqi", pair_C, s.W, pair_E)
        source_part = (per_task * u_T.unsqueeze(-2) * u_T.unsqueeze(-3)).sum(-1)
        v = torch.linalg.solve_triangular(s.chol, w.mT, upper=False)  # (..., m, q)
        cov = prior - source_part - v.mT @ v
        return MultivariateNormal(mean, cov)
