"""The fitted AT2 surrogate as a BoTorch :class:`~botorch.models.model.Model`.

Inputs are rows ``[task index, configuration encoding (D), t]`` (``t`` the epoch scaled to
(0, 1]); :meth:`AT2Model.posterior` returns the joint posterior of the latent curves, so BoTorch's
acquisition functions and utilities apply. Note BoTorch's ``UpperConfidenceBound(model, beta)``
is ``mean + sqrt(beta) * std``: AT2's default ``beta = 0.25`` corresponds to BoTorch's 0.0625.
"""

from __future__ import annotations

from typing import Any

import torch
from botorch.acquisition.objective import PosteriorTransform
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultivariateNormal
from torch import Tensor


class AT2Model(Model):
    """Wraps an AT2 engine (``ExactEngine`` or ``VariationalEngine``) after fitting.

    Args:
        engine: Any object with ``predict(X) -> MultivariateNormal`` and ``noise(task)``.
    """

    def __init__(self, engine: Any) -> None:
        super().__init__()
        self.engine = engine

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size([])

    def posterior(self, X: Tensor, output_indices: list[int] | None = None,
                  observation_noise: bool | Tensor = False,
                  posterior_transform: PosteriorTransform | None = None,
                  **kwargs: Any) -> GPyTorchPosterior:
        """Posterior at ``X (..., q, D + 2)``: mean ``(..., q, 1)``, covariance over the q rows."""
        if output_indices not in (None, [0]):
            raise ValueError(f"AT2Model has a single output; got output_indices={output_indices}")
        mvn = self.engine.predict(X)
        if observation_noise is True:
            noise = self.engine.noise(X[..., 0].long())
            mvn = MultivariateNormal(mvn.mean, mvn.covariance_matrix + torch.diag_embed(noise))
        posterior = GPyTorchPosterior(mvn)
        return posterior_transform(posterior) if posterior_transform is not None else posterior
