"""Output warps: the surrogate may model a monotone transform of the metric instead of the metric.

A warp is increasing in the metric's better direction, so it keeps every ranking: the
configuration with the highest posterior mean and the best-epoch order are the same in either
unit. A warp maps a ``(..., C, E)`` grid of metric values (NaN = unobserved) to the modelled values,
each leading index (task) on its own.

* ``"copula"`` — each task's values to the standard-normal scores of their ranks among that
  task's observed cells (the Gaussian copula transform of Salinas et al., 2020, "A quantile-based
  approach for hyperparameter transfer learning"): every task gets the same scale, so a source
  whose good configurations differ by 1e-4 in accuracy counts as much as one where they differ by
  0.01, and the target's transform follows its own observations as they come.
* ``"log_error"`` — ``-log(1 + eps - y)`` (eps = 0.01) of an accuracy ``y`` in [0, 1]: stretches
  the last percent below 1, where HyperRec's best configurations differ by 0.001-0.04.
* ``"none"`` — the metric itself.

``"auto"``, the default, is ``"copula"`` (README, Model notes, for what each measured).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from hyperrec.database import higher_is_better


@dataclass(frozen=True)
class Warp:
    """The identity, ``"none"``: the metric itself; the base of the other warps."""

    name: str = "none"

    def check(self, values: Tensor, metric: str) -> None:
        """Refuse a minimised metric: the surrogate's best is its largest value."""
        if not higher_is_better(metric):
            raise ValueError(f"warp {self.name!r} is for a metric to maximise and {metric!r} is "
                             "minimised; use warp 'copula', which ranks it the other way round")

    def __call__(self, values: Tensor) -> Tensor:
        return values.clone()

    def inverse(self, warped: Tensor, values: Tensor) -> Tensor:
        """``warped`` back in the metric's units (``values``: the task's grid, unused here)."""
        return warped


@dataclass(frozen=True)
class LogErrorWarp(Warp):
    """``y -> -log(1 + eps - y)`` for a metric in [0, 1] to be maximised; ``eps`` default 0.01."""

    eps: float = 0.01
    name: str = "log_error"

    @staticmethod
    def outside(values: Tensor) -> Tensor:
        """The values the warp is not defined for (NaN cells are allowed: unobserved)."""
        return values[~torch.isnan(values) & ((values < 0) | (values > 1))]

    def check(self, values: Tensor, metric: str) -> None:
        """Refuse a minimised metric and values the warp is not defined for."""
        super().check(values, metric)
        bad = self.outside(values)
        if bad.numel():
            raise ValueError(f"warp {self.name!r} needs {metric!r} values in [0, 1]; got "
                             f"{bad.numel()} outside, e.g. {bad[0].item():g}")

    def __call__(self, values: Tensor) -> Tensor:
        return -torch.log1p(self.eps - values)

    def inverse(self, warped: Tensor, values: Tensor) -> Tensor:
        return 1 + self.eps - torch.exp(-warped)


@dataclass(frozen=True)
class CopulaWarp(Warp):
    """Per task, ``y -> Phi^-1((r - 1/2) / n)``: ``r`` the 1-based rank of ``y`` among the task's
    ``n`` observed cells (ties share their mean rank), best last; ``maximise=False`` ranks the
    values the other way round, so the modelled values grow as a minimised metric improves."""

    maximise: bool = True
    name: str = "copula"

    def check(self, values: Tensor, metric: str) -> None:
        """Any metric, either direction (NaN cells are unobserved)."""

    def __call__(self, values: Tensor) -> Tensor:
        flat = (values if self.maximise else -values).flatten(-2)
        observed = ~torch.isnan(flat)
        ordered = torch.where(observed, flat, torch.inf).sort(-1).values.contiguous()
        probe = torch.where(observed, flat, 0.0).contiguous()
        below = torch.searchsorted(ordered, probe)  # cells with a smaller value
        upto = torch.searchsorted(ordered, probe, right=True)  # ... with a smaller or equal one
        n = observed.sum(-1, keepdim=True).clamp_min(1)
        q = ((below + upto).to(values.dtype) / 2) / n  # (mean 1-based rank - 1/2) / n
        scores = math.sqrt(2) * torch.erfinv(2 * q - 1)
        return torch.where(observed, scores, torch.nan).view_as(values)

    def inverse(self, warped: Tensor, values: Tensor) -> Tensor:
        """Scores back to the metric's units by linear interpolation between the task's observed
        (score, value) pairs, constant beyond the extremes; NaN while it has none.

        Args:
            warped: Scores, any shape.
            values: ``(C, E)`` the task's metric values, NaN = unobserved.
        """
        observed = ~torch.isnan(values)
        if not observed.any():
            return torch.full_like(warped, torch.nan)
        scores, order = self(values)[observed].sort()
        interpolated = np.interp(warped.cpu().numpy(), scores.cpu().numpy(),
                                 values[observed][order].cpu().numpy())
        return torch.as_tensor(interpolated, dtype=warped.dtype, device=warped.device)


WARPS = ("copula", "log_error", "none")
DEFAULT_WARP = "auto"
WARP_CHOICES = (DEFAULT_WARP, *WARPS)


def make_warp(name: str, metric: str) -> Warp:
    """The warp called ``name`` for ``metric`` (:data:`WARP_CHOICES`; ``"auto"`` is
    ``"copula"``); the copula ranks a minimised metric's values the other way round."""
    if name not in WARP_CHOICES:
        raise ValueError(f"unknown warp {name!r}; choose from {sorted(WARP_CHOICES)}")
    if name in (DEFAULT_WARP, "copula"):
        return CopulaWarp(maximise=higher_is_better(metric))
    return LogErrorWarp() if name == "log_error" else Warp()
