"""Acquisition over (configuration, epoch) cells of the target task.

AT2 scores every unobserved cell with an upper confidence bound and then trains the chosen
configuration for its *next* unobserved epoch: curves are observed in order, one query = one epoch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hyperrec.options import check_option


class UpperConfidenceBound:
    """``UCB = mean + beta * std`` of the latent target curves (beta default 0.25)."""

    def __init__(self, beta: float = 0.25) -> None:
        check_option("beta", beta, float, 0)
        self.beta = beta

    def __call__(self, mean: Tensor, variance: Tensor) -> Tensor:
        """Scores of shape ``mean.shape`` from posterior ``mean`` and ``variance``."""
        return mean + self.beta * variance.clamp_min(0).sqrt()


def best_cell(scores: Tensor, allowed: Tensor, generator: torch.Generator) -> tuple[int, int]:
    """The ``(configuration, epoch)`` index of the highest score among ``allowed`` cells.

    Args:
        scores: ``(C, E)`` acquisition values.
        allowed: ``(C, E)`` bool, the candidate cells (at least one).
        generator: Breaks exact ties uniformly at random (the run's seeded generator).
    """
    if not allowed.any():
        raise ValueError("no candidate cell left: every cell of the target is observed")
    masked = torch.where(allowed, scores, torch.full_like(scores, -torch.inf))
    ties = torch.nonzero(masked == masked.max())
    pick = torch.randint(len(ties), (1,), generator=generator).item() if len(ties) > 1 else 0
    c, e = ties[pick].tolist()
    return c, e
