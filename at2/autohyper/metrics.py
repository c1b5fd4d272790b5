"""Low-rank metrics of a network's convolution weights (the autoHyper response's raw material).

Every convolution weight ``(out, in, kh, kw)`` is unfolded along its input-channel mode
``(in, out*kh*kw)`` and its output-channel mode ``(out, in*kh*kw)``; each unfolding gets its EVBMF
rank, its knowledge gain (the kept posterior singular values summed, over ``min(L, M)`` times the
largest singular value: in [0, 1], 0 for rank 0) and its condition (largest over smallest kept
posterior singular value; NaN for rank 0).

Unfoldings with a dimension of 1 (the input mode of a first layer on grey images) are skipped:
the rank of a single vector is not identifiable from noise, so EVBMF always calls it 0 and it
would put a constant floor under the response.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .evbmf import evbmf

MODES = ("in", "out")


@dataclass(frozen=True)
class LowRankMetrics:
    """Metrics of every (convolution, mode) unfolding of a network at one moment.

    Attributes (one entry per unfolding, in module order, ``in`` before ``out``):
        names: ``"<module>:<mode>"``.
        rank: ``(U,)`` int EVBMF ranks.
        knowledge_gain: ``(U,)`` in [0, 1].
        condition: ``(U,)`` >= 1, NaN where the rank is 0.
    """

    names: tuple[str, ...]
    rank: np.ndarray
    knowledge_gain: np.ndarray
    condition: np.ndarray

    @property
    def zero_rank_fraction(self) -> float:
        """Fraction of the unfoldings whose EVBMF rank is zero (1 = nothing learned)."""
        return float(np.mean(self.rank == 0))


def unfoldings(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input- and output-channel unfoldings of a ``(out, in, *kernel)`` weight:
    ``{"in": (in, out*prod(kernel)), "out": (out, in*prod(kernel))}``."""
    return {"in": weight.transpose(0, 1).reshape(weight.shape[1], -1),
            "out": weight.reshape(weight.shape[0], -1)}


def low_rank_metrics(model: nn.Module) -> LowRankMetrics:
    """EVBMF metrics of every ``Conv*d`` weight of ``model`` (any device)."""
    names, rank, gain, condition = [], [], [], []
    for module_name, module in model.named_modules():
        if not isinstance(module, nn.modules.conv._ConvNd):
            continue
        for mode, matrix in unfoldings(module.weight.detach()).items():
            if min(matrix.shape) < 2:
                continue
            result = evbmf(matrix)
            names.append(f"{module_name}:{mode}")
            rank.append(result.rank)
            top = result.singular_values[0]
            kept = result.estimates
            gain.append(kept.sum() / (min(matrix.shape) * top) if top > 0 else 0.0)
            condition.append(kept[0] / kept[-1] if kept.size else np.nan)
    if not names:
        raise ValueError("the model has no convolution weight with both unfolding sides >= 2")
    return LowRankMetrics(tuple(names), np.asarray(rank), np.asarray(gain, dtype=float),
                          np.asarray(condition, dtype=float))
