from pathlib import Path

import pytest
import torch

from at2.linalg import (
    fast_bfloat16,
    kron_mv,
    matmul,
    psd_complete_last,
    psd_project,
    safe_eigh,
    whiten,
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


def test_whiten_gradients_are_exact():
    K = spd(6, 3, torch.float64).requires_grad_()
    B = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    # K enters symmetrised, as every kernel matrix is: the gradient is defined on symmetric K
    assert torch.autograd.gradcheck(lambda K, B: whiten((K + K.mT) / 2, B), (K, B))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_whiten_matches_cholesky_then_solve(dtype):
    K, B = spd(50, 10, dtype), torch.randn(50, 30, dtype=dtype)
    m = torch.randn(50, dtype=dtype)

    def loss(whitened):
        return ((whitened.mT @ m) ** 2).sum() - whitened.square().sum()

    grads = []
    for fn in (whiten, lambda K, B: torch.linalg.solve_triangular(
            torch.linalg.cholesky(K), B, upper=False)):
        K_, B_ = K.clone().requires_grad_(), B.clone().requires_grad_()
        A = fn(K_, B_)
        loss(A).backward()
        grads.append((A.detach(), K_.grad, B_.grad))
    tol = 1e-3 if dtype == torch.float32 else 1e-9  # two orders of float32 rounding
    for ours, reference in zip(*grads):
        torch.testing.assert_close(ours, reference, rtol=tol, atol=tol * reference.abs().max())


def test_low_precision_products_stay_close():
    K, B = spd(40, 8, torch.float32), torch.randn(40, 20)
    torch.testing.assert_close(matmul(K, B, torch.bfloat16), K @ B, rtol=2e-2, atol=2e-2)
    assert matmul(K, B, torch.bfloat16).dtype == torch.float32
    K_ = K.clone().requires_grad_()
    whiten(K_, B, torch.bfloat16).sum().backward()
    K_ref = K.clone().requires_grad_()
    whiten(K_ref, B).sum().backward()
    assert torch.linalg.norm(K_.grad - K_ref.grad) < 1e-2 * torch.linalg.norm(K_ref.grad)


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
