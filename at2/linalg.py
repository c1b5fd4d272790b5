"""Small linear-algebra pieces the engines share: a gradient-safe ``eigh``, Kronecker products and
the whitened sparse GP's marginals with a lean backward pass.

Why a custom ``eigh`` backward: the gradient of eigenvectors has terms ``1 / (l_j - l_i)``, infinite
for repeated eigenvalues. Repeated eigenvalues are the norm here, not an accident: HyperRec repeats
35 of its 100 configurations (identical rows of the configuration kernel) and smooth epoch kernels
have clusters of near-zero eigenvalues. Every quantity the engines differentiate (log-determinants
and quadratic forms through ``(l_T l_C l_E + noise)^-1``) is invariant to rotations inside a
degenerate eigenspace, so those terms contribute nothing and are dropped below a relative gap.
"""

from __future__ import annotations

import torch
from linear_operator.utils.cholesky import psd_safe_cholesky
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
            scale = evals.abs().amax(-1, keepdim=True).unsqueeze(-1)
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


def psd_complete_last(matrix: Tensor, nonnegative: bool = False) -> Tensor:
    """A positive semi-definite matrix that changes only the last row and column of ``matrix``
    beyond the PSD projection of the leading block, and keeps the last diagonal entry.

    With ``H`` the projected leading ``(n-1, n-1)`` block, ``r`` the last row without its
    diagonal entry ``c`` and ``w = H^+ r`` the weights of the leading variables in the last one's
    conditional mean, the row becomes ``H w * min(1, sqrt(c / (w' H w)))``: unchanged when the
    whole is already PSD, otherwise shrunk along its own direction until the last variable is
    exactly determined by the others (Schur complement ``c - r' H^+ r = 0``). Where
    :func:`psd_project` moves every entry, the leading block here is never affected by the last
    row. With ``nonnegative``, negative weights are set to zero first, so that the last variable's
    conditional mean is a non-negative combination of the others.

    Args:
        matrix: ``(n, n)`` symmetric, ``n >= 2``.
        nonnegative: Clip the weights ``w`` at zero (default ``False``).

    Returns:
        ``(n, n)`` PSD.
    """
    evals, evecs = safe_eigh(matrix[:-1, :-1])
    rank = evals > _RELATIVE_GAP * evals.max()
    coords = torch.where(rank, evecs.mT @ matrix[-1, :-1], 0.0) / torch.where(rank, evals, 1.0)
    weights = evecs @ coords
    if nonnegative:
        weights = weights.clamp_min(0.0)
    head = (evecs * evals) @ evecs.mT
    row = head @ weights
    corner = matrix[-1, -1]
    explained = weights @ row  # w' H w, the variance the leading variables would explain
    infeasible = explained > corner
    # shrink by sqrt(c / w'Hw) only where that is below 1; the inner where keeps the unused
    # branch finite, so the gradient stays finite in float32 too when w'Hw is 0 (all weights
    # clipped, or a row of underflowed similarities)
    row = row * torch.where(infeasible,
                            torch.sqrt(corner / torch.where(infeasible, explained, corner)), 1.0)
    return torch.cat([torch.cat([head, row[:, None]], 1),
                      torch.cat([row, corner[None]])[None]], 0)


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


def fast_bfloat16(device: torch.device | str) -> bool:
    """Whether matrix products in bfloat16 run faster than in float32 on ``device``: CUDA devices
    of compute capability 8.0 or higher (tensor cores) and CPUs with AMX or AVX-512 BF16
    instructions. Elsewhere bfloat16 products are emulated and far slower (a 1000 x 1000 product
    on a 2-core AMD EPYC with AVX2 only: 1.05 s in bfloat16, 0.018 s in float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type != "cpu":
        return False
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # no public API yet
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


class _WhitenedMarginals(torch.autograd.Function):
    @staticmethod
    def forward(ctx, K: Tensor, B: Tensor, m: Tensor, L_S: Tensor,
                product_dtype: torch.dtype | None) -> tuple[Tensor, Tensor]:
        L = psd_safe_cholesky(K)
        # LAPACK solves in column-major storage: every solve here is posed on the transposes
        # (X' L' = B' for L X = B), which reads row-major operands as they are and returns
        # row-major results, the layout of the kernel factors they meet in elementwise products
        # and sums next, where mixed layouts cost 3-5x (a 1000 x 1000 sum: 3.5 ms against 0.7)
        A = torch.linalg.solve_triangular(L.mT, B.mT, upper=True, left=False).mT
        low = product_dtype not in (None, A.dtype)
        A_p = A.to(product_dtype) if low else A
        L_p = L_S.to(product_dtype) if low else L_S
        C = L_p.mT @ A_p  # L_S' A, kept in the product dtype for the backward pass
        reduction = C.to(A.dtype).square().sum(-2) - A.square().sum(-2)
        ctx.save_for_backward(L, A, A_p, L_p, C, m)
        return m @ A, reduction

    @staticmethod
    def backward(ctx, g_mean: Tensor, g_reduction: Tensor) -> tuple[Tensor | None, ...]:
        L, A, A_p, L_p, C, m = ctx.saved_tensors
        dC = C * (2 * g_reduction).to(C.dtype)
        G = (L_p @ dC).to(A.dtype)  # dF/dA, accumulated in place
        G.addcmul_(A, g_reduction, value=-2.0).addr_(m, g_mean)
        grad_m = A @ g_mean if ctx.needs_input_grad[2] else None
        grad_L_S = (A_p @ dC.mT).to(A.dtype) if ctx.needs_input_grad[3] else None
        grad_B = torch.linalg.solve_triangular(L, G.mT, upper=False, left=False).mT  # L^-T G
        phi = (G.to(A_p.dtype) @ A_p.mT).to(A.dtype).tril_()
        phi.diagonal().mul_(0.5)
        Z = torch.linalg.solve_triangular(L, phi.mT, upper=False, left=False)  # (L^-T phi)'
        Z = torch.linalg.solve_triangular(L.mT, Z, upper=True)  # (L^-T phi L^-1)', col-major
        return Z.mT.neg_(), grad_B, grad_m, grad_L_S, None


def whitened_marginals(K: Tensor, B: Tensor, m: Tensor, L_S: Tensor,
                       product_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """The whitened sparse GP's marginals at n points, less the prior's: with ``L = chol(K)``
    (jitter added if ``K`` is numerically not PD) and ``A = L^-1 B``, the mean ``m' A`` and the
    variance reduction ``|L_S' A|^2 - |A|^2`` (column sums), so that ``q(f)`` has mean
    ``mu(x) + m' A`` and variance ``k(x, x) + |L_S' A|^2 - |A|^2`` for ``q(u) = N(m, L_S L_S')``
    over the whitened inducing values.

    One autograd function, forward and backward, so that the passes autograd would make over the
    ``M x n`` intermediates (squares, their gradients, conversions, the accumulation of ``A``'s
    gradient from three terms) are a few fused in-place ones. With ``G = dF/dA`` accumulated that
    way, ``dF/dB = L^-T G`` and ``dF/dK = -L^-T Phi(G A') L^-1`` (``Phi``: lower triangle, half
    diagonal): one product and three triangular solves, where autograd through the Cholesky and
    the solve also forms ``dF/dL`` and ``L' dF/dL``. That ``dF/dK`` is not symmetrised: ``K`` is a
    symmetric function of its parameters, so only its symmetric part acts on them, and the
    symmetrisation's pass over the transposed matrix is saved.

    With ``product_dtype`` (e.g. ``torch.bfloat16``: AMX / tensor-core products with float32
    accumulation) the products ``L_S' A``, ``L_S dC``, ``A dC'`` and ``G A'`` are computed in that
    dtype; they enter only the non-negative ``|L_S' A|^2`` and the gradients. ``K``, its Cholesky
    factor, ``A`` and ``|A|^2``, which cancel against the prior, stay in ``K``'s dtype. On two
    CPU cores with AMX, M = n = 1000 in float32 with bfloat16 products, forward and backward take
    32 ms instead of 38 ms for the same terms through autograd.

    Args:
        K: ``(M, M)`` symmetric positive definite (``K_uu``).
        B: ``(M, n)`` (``K_uf``).
        m: ``(M,)`` variational mean.
        L_S: ``(M, M)`` lower-triangular Cholesky factor of the variational covariance.
        product_dtype: Dtype of the products named above (default: ``K``'s).

    Returns:
        ``(n,)`` mean ``m' A`` and ``(n,)`` variance reduction ``|L_S' A|^2 - |A|^2``.
    """
    return _WhitenedMarginals.apply(K, B, m, L_S, product_dtype)
