"""Small linear-algebra pieces the engines share: a gradient-safe ``eigh`` and Kronecker products.

Why a custom ``eigh`` backward: the gradient of eigenvectors has terms ``1 / (l_j - l_i)``, infinite
for repeated eigenvalues. Repeated eigenvalues are the norm here, not an accident: HyperRec repeats
35 of its 100 configurations (identical rows of the configuration kernel) and smooth epoch kernels
have clusters of near-zero eigenvalues. Every quantity the engines differentiate (log-determinants
and quadratic forms through ``(l_T l_C l_E + noise)^-1``) is invariant to rotations inside a
degenerate eigenspace, so those terms contribute nothing and are dropped below a relative gap.
"""

from __future__ import annotations

import torch
from torch import Tensor

_RELATIVE_GAP = 1e-10


class _SafeEigh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, matrix: Tensor) -> tuple[Tensor, Tensor]:
        evals, evecs = torch.linalg.eigh(matrix)
        ctx.save_for_backward(evals, evecs)
        return evals, evecs

    @staticmethod
    def backward(ctx, grad_evals: Tensor | None, grad_evecs: Tensor | None) -> Tensor:
        evals, evecs = ctx.saved_tensors
        inner = torch.zeros_like(evecs)
        if grad_evecs is not None:
            gap = evals.unsqueeze(-2) - evals.unsqueeze(-1)  # gap[i, j] = l_j - l_i
            scale = evals.abs().amax(-1, keepdim=True).unsqueeze(-1).clamp_min(1e-300)
            far = gap.abs() > _RELATIVE_GAP * scale
            inv_gap = torch.where(far, 1.0 / torch.where(far, gap, torch.ones_like(gap)), 0.0)
            inner = inv_gap * (evecs.mT @ grad_evecs)
        if grad_evals is not None:
            inner = inner + torch.diag_embed(grad_evals)
        grad = evecs @ inner @ evecs.mT
        return (grad + grad.mT) / 2


def safe_eigh(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Eigen-decomposition ``(evals, evecs)`` of symmetric ``(..., n, n)`` matrices, ascending,
    with eigenvalues clamped at 0 and a backward pass that ignores degenerate eigenspaces."""
    evals, evecs = _SafeEigh.apply(matrix)
    return evals.clamp_min(0.0), evecs


def psd_project(matrix: Tensor) -> Tensor:
    """The nearest positive semi-definite matrix (negative eigenvalues set to zero)."""
    evals, evecs = safe_eigh(matrix)
    return (evecs * evals.unsqueeze(-2)) @ evecs.mT


def kron_mv(factors: tuple[Tensor, Tensor, Tensor], x: Tensor) -> Tensor:
    """``(A (x) B (x) C) vec(x)`` for ``x`` of shape ``(..., a, b, c)`` without forming the product.

    Args:
        factors: ``A (a', a)``, ``B (b', b)``, ``C (c', c)``.
        x: ``(..., a, b, c)``.

    Returns:
        ``(..., a', b', c')`` with ``out[i, j, k] = sum A[i, p] B[j, q] C[k, r] x[p, q, r]``.
    """
    a, b, c = factors
    x = torch.einsum("ip,...pqr->...iqr", a, x)
    x = torch.einsum("jq,...iqr->...ijr", b, x)
    return x @ c.mT
