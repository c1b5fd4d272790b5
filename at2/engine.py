"""The interface both inference engines implement (:mod:`at2.exact`, :mod:`at2.variational`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from gpytorch.distributions import MultivariateNormal
from torch import Tensor

from hyperrec.options import check_option

from .model import AT2Surrogate, CurveGrid


class Engine(ABC):
    """Inference for an :class:`AT2Surrogate` on a :class:`CurveGrid`.

    The engine reads ``grid.values`` at every call: observations written into the grid are seen
    by the next :meth:`update`. Its model may work in other units than the data: a value ``v`` of
    the model is ``shift + scale * v`` in the data's units (the identity unless an engine says
    otherwise); :meth:`posterior_grid`, :meth:`predict` and :meth:`noise` answer in the data's.
    """

    name: str
    options: ClassVar[dict[str, tuple[Any, ...]]]
    """The engine's keyword options: name -> ``(kind[, low[, high]])``, as :func:`check_option`
    takes them."""
    default_restarts: ClassVar[int] = 1
    """Offline fits an :class:`~at2.tuner.AT2Tuner` runs from fresh initial weights by default,
    keeping the best (:meth:`fit`'s last objective)."""
    models_offset: ClassVar[bool] = True
    """Whether the engine models the target's own offset per configuration
    (:class:`~at2.offset_kernel.ConfigurationOffsetKernel`)."""
    default_offset: ClassVar[float] = 0.0
    """That offset's fraction an :class:`~at2.tuner.AT2Tuner` gives the model by default."""
    model: AT2Surrogate
    grid: CurveGrid
    shift: float | Tensor = 0.0
    scale: float | Tensor = 1.0

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming the first unknown option or bad value in ``options``."""
        if not isinstance(options, Mapping):
            raise ValueError(f"{cls.name} engine options: expected a mapping, got {options!r}")
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for the {cls.name} engine; allowed: "
                             f"{sorted(cls.options)}")
        for name, value in options.items():
            check_option(name, value, *cls.options[name])

    @classmethod
    def check_offset(cls, fraction: Any) -> None:
        """Raise ``ValueError`` unless ``fraction`` is a valid offset fraction for the engine."""
        check_option("offset", fraction, float, 0)
        if fraction > 0 and not cls.models_offset:
            raise ValueError(f"the {cls.name} engine does not model the target's own offset per "
                             f"configuration: use offset=0, or another engine")

    @abstractmethod
    def fit(self, progress: bool = False) -> list[float]:
        """The offline fit; returns the objective's history (per datum). ``progress`` shows a
        progress bar over its steps or epochs."""

    @abstractmethod
    def update(self) -> None:
        """Refit after new target observations."""

    @abstractmethod
    def posterior_grid(self) -> tuple[Tensor, Tensor]:
        """Latent posterior mean and variance ``(C, E)`` at every target cell."""

    @abstractmethod
    def predict(self, X: Tensor) -> MultivariateNormal:
        """Joint latent posterior at rows ``X (..., q, D + 2)`` (``[task, encoding, t]``)."""

    def noise(self, task: Tensor) -> Tensor:
        """Observation-noise variances in the data's units for task indices ``task`` (long,
        any shape; the result has its shape)."""
        return self.model.likelihood.noise[task] * self.scale**2
