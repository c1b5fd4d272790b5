"""The interface both inference engines implement (:mod:`at2.exact`, :mod:`at2.variational`)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from gpytorch.distributions import MultivariateNormal
from torch import Tensor

from .model import AT2Surrogate, CurveGrid


class Engine(ABC):
    """Inference for an :class:`AT2Surrogate` on a :class:`CurveGrid`.

    The engine reads ``grid.values`` at every call: observations written into the grid are seen
    by the next :meth:`update`.
    """

    name: str
    model: AT2Surrogate
    grid: CurveGrid

    @abstractmethod
    def fit(self) -> list[float]:
        """The offline fit; returns the objective's history (per datum)."""

    @abstractmethod
    def update(self) -> None:
        """Refit after new target observations."""

    @abstractmethod
    def posterior_grid(self) -> tuple[Tensor, Tensor]:
        """Latent posterior mean and variance ``(C, E)`` at every target cell."""

    @abstractmethod
    def predict(self, X: Tensor) -> MultivariateNormal:
        """Joint latent posterior at rows ``X (..., q, D + 2)`` (``[task, encoding, t]``)."""
