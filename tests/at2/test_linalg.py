from pathlib import Path

import pytest
import torch

from at2.linalg import (
    fast_bfloat16,
    kron_mv,
    psd_complete_last,
    psd_project,
    safe_eigh,
    whitened_marginals,
)


def test_safe_eigh_gradient_is_exact_with_repeated_eigenvalues():
    torch.manual_seed(0)
    X = torch.randn(5, 2, dtype=torch.float64)
    y = torch.arange(7, dtype=torch.float64)

    def via_eigh(X):
        Z = torch.cat([X, X[:2]])  # duplicated rows: a repeated (zero) eigenvalue
        evals, evecs = safe_eigh(Z @ Z.T)
        return ((evecs.T @ y) ** 2 / (evals + 0.1)).sum() + torch.log(evals + 0.1).sum()

    def via_solve(X):
        Z = torch.cat([X, X[:2]])
        K = Z @ Z.T + 0.1 * torch.eye(7, dtype=torch.float64)
        return y @ torch.linalg.solve(K, y) + torch.logdet(K)

    a, b = X.clone().requires_grad_(), X.clone().requires_grad_()
    via_eigh(a).backward()
    via_solve(b).backward()
    torch.testing.assert_close(a.grad, b.grad)
    assert torch.isfinite(a.grad).all()


def test_kron_mv_matches_explicit_kronecker_product():
    a, b, c = torch.randn(3, 4), torch.randn(5, 6), torch.randn(2, 7)
    x = torch.randn(4, 6, 7)
    expected = torch.kron(torch.kron(a, b), c) @ x.reshape(-1)
    torch.testing.assert_close(kron_mv((a, b, c), x).reshape(-1), expected, rtol=1e-4,
                               atol=1e-4)


def spd(n, k, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    root = torch.randn(n, k, dtype=dtype, generator=g)
    return root @ root.T / k + 0.1 * torch.eye(n, dtype=dtype)


def marginals_reference(K, B, m, L_S):
    """``whitened_marginals`` through autograd's Cholesky and triangular solve."""
    A = torch.linalg.solve_triangular(torch.linalg.cholesky(K), B, upper=False)
    return m @ A, (L_S.mT @ A).square().sum(-2) - A.square().sum(-2)


def marginals_inputs(dtype, M=50, n=30):
    g = torch.Generator().manual_seed(1)
    B = torch.randn(M, n, dtype=dtype, generator=g)
    m = torch.randn(M, dtype=dtype, generator=g)
    L_S = torch.eye(M, dtype=dtype) + 0.3 * torch.randn(M, M, dtype=dtype, generator=g).tril()
    return spd(M, 10, dtype), B, m, L_S


def test_whitened_marginals_gradients_are_exact():
    K, B, m, L_S = (x.requires_grad_() for x in marginals_inputs(torch.float64, M=6, n=4))
    # K enters symmetrised, as every kernel matrix is: only the gradient's symmetric part is
    # defined (and returned unsymmetrised); L_S lower triangular, as the engine keeps it
    assert torch.autograd.gradcheck(
        lambda K, B, m, L_S: whitened_marginals((K + K.mT) / 2, B, m, L_S.tril()),
        (K, B, m, L_S))


def marginals_gradients(fn, inputs, product_dtype=None):
    """Values and gradients of a fixed weighting of ``fn``'s two outputs; ``K``'s gradient taken
    through a symmetric parametrisation."""
    K, B, m, L_S = (x.clone().requires_grad_() for x in inputs)
    args = ((K + K.mT) / 2, B, m, L_S) + ((product_dtype,) if product_dtype else ())
    mean, reduction = fn(*args)
    w = torch.linspace(-1, 1, mean.numel(), dtype=mean.dtype)
    ((w * mean).sum() + (w.square() * reduction).sum()).backward()
    return mean.detach(), reduction.detach(), K.grad, B.grad, m.grad, L_S.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_whitened_marginals_match_cholesky_then_solve(dtype):
    inputs = marginals_inputs(dtype)
    tol = 1e-3 if dtype == torch.float32 else 1e-9  # two orders of float32 rounding
    for ours, reference in zip(marginals_gradients(whitened_marginals, inputs),
                               marginals_gradients(marginals_reference, inputs)):
        torch.testing.assert_close(ours, reference, rtol=tol, atol=tol * reference.abs().max())


def test_low_precision_products_stay_close():
    inputs = marginals_inputs(torch.float32)
    for ours, reference in zip(marginals_gradients(whitened_marginals, inputs, torch.bfloat16),
                               marginals_gradients(whitened_marginals, inputs)):
        assert ours.dtype == torch.float32
        assert torch.linalg.norm(ours - reference) < 2e-2 * torch.linalg.norm(reference)


def test_psd_complete_last_shrinks_only_an_infeasible_last_row():
    K = spd(5, 3, torch.float64)  # rank-3 plus a ridge: PD
    torch.testing.assert_close(psd_complete_last(K), K)  # already PSD: unchanged
    M = K.clone()
    M[-1, :-1] *= 4
    M[:-1, -1] *= 4  # the last task now looks too similar to the others
    assert torch.linalg.eigvalsh(M).min() < 0
    C = psd_complete_last(M)
    torch.testing.assert_close(C, C.T)
    assert torch.linalg.eigvalsh(C).min() > -1e-12
    torch.testing.assert_close(C[:-1, :-1], K[:-1, :-1])  # the leading block is untouched
    assert C[-1, -1] == M[-1, -1]
    scale = C[-1, :-1] / M[-1, :-1]  # shrunk along its own direction ...
    torch.testing.assert_close(scale, scale[0].expand(4))
    assert 0 < scale[0] < 1
    schur = C[-1, -1] - C[-1, :-1] @ torch.linalg.solve(C[:-1, :-1], C[:-1, -1])
    assert abs(schur) < 1e-12  # ... just enough: the last variable is determined by the others
    # with an indefinite leading block, that block is its own PSD projection
    M[0, 1] = M[1, 0] = 3.0
    torch.testing.assert_close(psd_complete_last(M)[:-1, :-1], psd_project(M[:-1, :-1]))


def test_psd_complete_last_nonnegative_weights():
    K = spd(5, 5, torch.float64)
    weights = torch.linalg.solve(K[:-1, :-1], K[:-1, -1])
    assert (weights < 0).any() and (weights > 0).any()
    C = psd_complete_last(K, nonnegative=True)
    torch.testing.assert_close(C, C.T)
    assert torch.linalg.eigvalsh(C).min() > -1e-12
    torch.testing.assert_close(C[:-1, :-1], K[:-1, :-1])
    assert C[-1, -1] == K[-1, -1]
    clipped = torch.linalg.solve(C[:-1, :-1], C[:-1, -1])
    # the negative weights are zero and the others, shrunk only if infeasible, keep their ratios
    torch.testing.assert_close(clipped[weights < 0], torch.zeros(int((weights < 0).sum()),
                                                                 dtype=torch.float64))
    ratio = clipped[weights > 0] / weights[weights > 0]
    torch.testing.assert_close(ratio, ratio[0].expand_as(ratio))
    assert 0 < ratio[0] <= 1
    # non-negative weights on a PSD matrix: nothing to change
    N = K.clone()
    N[-1, :-1] = N[:-1, -1] = K[:-1, :-1] @ weights.clamp_min(0) / 2
    torch.testing.assert_close(psd_complete_last(N, nonnegative=True), N)


@pytest.mark.parametrize("nonnegative", [False, True])
def test_psd_complete_last_gradient(nonnegative):
    M = spd(4, 4, torch.float64)
    M[-1, :-1] *= 3
    M[:-1, -1] *= 3

    def complete(A):
        return psd_complete_last((A + A.mT) / 2, nonnegative)

    assert torch.autograd.gradcheck(complete, (M.requires_grad_(),))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("row", [0.0, -1e-3, 1e-13])
def test_psd_complete_last_gradient_finite_when_nothing_is_explained(dtype, row):
    # a target whose similarities to the sources are zero, negative (all its weights clipped) or
    # underflowing: w' H w is 0 or denormal, and the shrink factor must not turn it into NaN
    M = spd(5, 5, dtype).requires_grad_()
    A = M.clone()
    A[-1, :-1] = A[:-1, -1] = row
    C = psd_complete_last(A, nonnegative=True)
    (grad,) = torch.autograd.grad((C * torch.arange(25.0, dtype=dtype).view(5, 5)).sum(), M)
    assert torch.isfinite(grad).all()
    assert torch.isfinite(C).all()
    assert C[-1, -1] == A[-1, -1]


def test_fast_bfloat16_reads_the_cpu_flags():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo to compare fast_bfloat16 with")
    flags = cpuinfo.read_text().split()
    expected = "amx_tile" in flags or "avx512_bf16" in flags
    assert fast_bfloat16("cpu") is expected
    assert fast_bfloat16(torch.device("meta")) is False
