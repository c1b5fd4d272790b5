"""The freeze-thaw epoch kernel (Swersky, Snoek & Adams, 2014), pinned at t = 0.

With ``t`` the epoch scaled to (0, 1] and ``K(x) = (b / (x + b))^a`` (the exponential-decay kernel,
an integral of ``exp(-lambda (t + t'))`` over a Gamma(a, b) prior on decay rates)::

    k(t, t') = s * [K(t + t') - K(t) - K(t') + K(0)]
             = s * [1 + (b / (t + t' + b))^a - (b / (t + b))^a - (b / (t' + b))^a]

It is the covariance of ``f(t) - f(0)``: positive semi-definite, zero at t = 0, growing with t.
"""

from __future__ import annotations

import torch
from gpytorch.constraints import Positive
from gpytorch.kernels import Kernel
from torch import Tensor

from .task_kernel import set_constrained


class FreezeThawKernel(Kernel):
    """Inputs ``t1 (..., n, 1)``, ``t2 (..., m, 1)`` in (0, 1]; output ``(..., n, m)``.

    Learnable ``alpha`` (a), ``beta`` (b) and ``outputscale`` (s), all positive.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 0.5, outputscale: float = 1.0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("alpha", "beta", "outputscale"):
            self.register_parameter(f"raw_{name}", torch.nn.Parameter(torch.zeros(())))
            self.register_constraint(f"raw_{name}", Positive())
        for name, value in (("alpha", alpha), ("beta", beta), ("outputscale", outputscale)):
            set_constrained(self, name, value)

    @property
    def alpha(self) -> Tensor:
        return self.raw_alpha_constraint.transform(self.raw_alpha)

    @property
    def beta(self) -> Tensor:
        return self.raw_beta_constraint.transform(self.raw_beta)

    @property
    def outputscale(self) -> Tensor:
        return self.raw_outputscale_constraint.transform(self.raw_outputscale)

    def _decay(self, x: Tensor) -> Tensor:
        """``K(x) = (b / (x + b))^a`` computed as ``exp(-a log1p(x / b))``."""
        return torch.exp(-self.alpha * torch.log1p(x / self.beta))

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, **params) -> Tensor:
        t1, t2 = x1[..., 0], x2[..., 0]
        s = self.outputscale
        if diag:
            return s * (1 + self._decay(t1 + t2) - self._decay(t1) - self._decay(t2))
        # s K(t + t') = exp(log s - a log(1 + t / b + t' / b)): four passes over the n x m output
        cross = torch.log1p((t1 / self.beta).unsqueeze(-1) + (t2 / self.beta).unsqueeze(-2))
        cross = torch.exp(torch.addcmul(s.log(), cross, -self.alpha))
        rest = (s * (1 - self._decay(t1))).unsqueeze(-1) - (s * self._decay(t2)).unsqueeze(-2)
        return cross + rest
