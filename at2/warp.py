"""Output warps: the surrogate may model a monotone transform of the metric instead of the metric.

A warp is increasing, so it keeps every ranking: the configuration with the highest posterior mean
and the best-epoch order are the same in either unit. ``"log_error"`` maps an accuracy ``y`` in
[0, 1] to ``-log(1 + eps - y)`` (eps = 0.01): it stretches the last percent below 1, where
HyperRec's best configurations differ by 0.001-0.04, and bounds the back-transformed predictions
below ``1 + eps`` (README, Model notes, for what it measured). ``"auto"``, the default, is
``"log_error"`` for a metric to maximise whose values all lie in [0, 1] (an accuracy) and ``"none"``
for any other (:func:`resolve_warp`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hyperrec.database import higher_is_better


@dataclass(frozen=True)
class LogErrorWarp:
    """``y -> -log(1 + eps - y)`` for a metric in [0, 1] to be maximised; ``eps`` default 0.01."""

    eps: float = 0.01
    name: str = "log_error"

    @staticmethod
    def outside(values: Tensor) -> Tensor:
        """The values the warp is not defined for (NaN cells are allowed: unobserved)."""
        return values[~torch.isnan(values) & ((values < 0) | (values > 1))]

    def check(self, values: Tensor, metric: str) -> None:
        """Refuse values the warp is not defined for."""
        bad = self.outside(values)
        if bad.numel():
            raise ValueError(f"warp {self.name!r} needs {metric!r} values in [0, 1]; got "
                             f"{bad.numel()} outside, e.g. {bad[0].item():g}")

    def __call__(self, values: Tensor) -> Tensor:
        return -torch.log1p(self.eps - values)

    def inverse(self, values: Tensor) -> Tensor:
        return 1 + self.eps - torch.exp(-values)


WARPS: dict[str, LogErrorWarp | None] = {"none": None, "log_error": LogErrorWarp()}
DEFAULT_WARP = "auto"
WARP_CHOICES = (DEFAULT_WARP, *WARPS)


def resolve_warp(name: str, values: Tensor, metric: str) -> str:
    """The warp that ``name`` stands for on a metric's ``values`` (any shape, NaN = unobserved):
    ``"auto"`` is ``"log_error"`` when ``metric`` is maximised and every value lies in [0, 1],
    else ``"none"``; any other name is itself."""
    if name not in WARP_CHOICES:
        raise ValueError(f"unknown warp {name!r}; choose from {sorted(WARP_CHOICES)}")
    if name != DEFAULT_WARP:
        return name
    fits = higher_is_better(metric) and not LogErrorWarp.outside(values).numel()
    return "log_error" if fits else "none"
