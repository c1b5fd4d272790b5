import numpy as np
import pytest
import torch

from at2.deep_kernel import DeepPolynomialKernel
from at2.epoch_kernel import FreezeThawKernel
from at2.offset_kernel import ConfigurationOffsetKernel
from at2.task_kernel import PSD_REPAIRS, TaskSimilarityKernel, low_fidelity_distance
from hyperrec.spaces import hyperrec_space, lcbench_space
from tests.hyperrec.test_space import nested_space

DTYPES = [torch.float32, torch.float64]


def direct_distance(values, observed):
    """The task kernel's d and r by a plain loop over task pairs (the reference)."""
    T, N = values.shape
    d, r = np.zeros((T, T)), np.zeros((T, T))
    for i in range(T):
        for j in range(T):
            both = observed[i] & observed[j]
            r[i, j] = both.sum() / N
            if i == j:
                continue
            if both.sum() <= 1:
                d[i, j] = 0.5
                continue
            a, b = values[i, both], values[j, both]
            d[i, j] = np.sum(((a - a.mean()) - (b - b.mean())) ** 2) / both.sum()
    return d, r


def test_task_distance_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    values = rng.uniform(size=(5, 40))
    observed = rng.uniform(size=(5, 40)) < 0.6
    observed[3] = False
    observed[3, 7] = True  # one matched cell at most -> d = 0.5
    d, r = low_fidelity_distance(torch.tensor(np.where(observed, values, np.nan)),
                                 torch.tensor(observed))
    d_ref, r_ref = direct_distance(values, observed)
    np.testing.assert_allclose(d.numpy(), d_ref, atol=1e-12)
    np.testing.assert_allclose(r.numpy(), r_ref, atol=1e-12)
    assert d[3, 0] == 0.5 and d[2, 2] == 0


def test_task_kernel_values_update_and_gradients():
    torch.manual_seed(0)
    kernel = TaskSimilarityKernel(3).double()
    values = torch.rand(3, 4, 5, dtype=torch.float64)
    values[2] = values[0] + 0.01 * torch.randn(4, 5, dtype=torch.float64)
    observed = torch.ones(3, 4, 5, dtype=torch.bool)
    observed[2, :, 3:] = False  # partial overlap (r < 1), or the discount U would not matter
    kernel.update(values, observed)
    d, r = kernel.distance, kernel.matched
    U, ell, s = kernel.discount, kernel.lengthscale.squeeze(), kernel.outputscale
    raw = s * torch.exp(-d / (ell * U / (1 + (U - 1) * r)) ** 2)
    if torch.linalg.eigvalsh(raw).min() >= 0:  # PSD already: the projection changes nothing
        torch.testing.assert_close(kernel.matrix(), raw)
    assert kernel.matrix()[0, 2] > kernel.matrix()[0, 1]  # task 2 is a near-copy of task 0
    x = torch.tensor([[0.0], [2.0], [1.0]], dtype=torch.float64)
    K = kernel(x, x).to_dense()
    assert K.shape == (3, 3) and torch.allclose(K, K.T)
    batch = kernel(x.expand(2, 3, 1), x[:2].expand(2, 2, 1)).to_dense()
    assert batch.shape == (2, 3, 2)
    K.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in
               (kernel.raw_outputscale, kernel.raw_lengthscale, kernel.raw_discount))
    before = kernel.distance.clone()
    observed[1, :, 1:] = False  # fewer observations for task 1: its distances change
    kernel.update(values, observed)
    assert not torch.equal(before[1], kernel.distance[1])


def test_task_kernel_psd_repairs():
    # sources 0 and 1 far apart, the target (last) matched on one early cell-pair with both:
    # similar to both, an indefinite similarity matrix
    distance = torch.tensor([[0.0, 4.0, 0.0], [4.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
                            dtype=torch.float64)
    kernels = {psd: TaskSimilarityKernel(3, psd=psd).double() for psd in PSD_REPAIRS}
    for kernel in kernels.values():
        kernel.distance.copy_(distance)
        assert torch.linalg.eigvalsh(kernel.matrix()).min() > -1e-12
    nearest, target_row = (kernels[k].matrix().detach() for k in ("nearest", "target_row"))
    kernel = kernels["target_row"]
    raw = (kernel.outputscale * torch.exp(-distance / (kernel.lengthscale * kernel.discount) ** 2)
           ).detach()  # no matched cells: g = U
    torch.testing.assert_close(target_row[:2, :2], raw[:2, :2])  # sources' block as computed
    assert not torch.allclose(nearest[:2, :2], raw[:2, :2])  # moved by the target's row
    assert target_row[2, 2] == raw[2, 2] and target_row[2, 0] < raw[2, 0]
    with pytest.raises(ValueError, match="unknown psd repair 'clip'"):
        TaskSimilarityKernel(3, psd="clip")


@pytest.mark.parametrize("dtype", DTYPES)
def test_freeze_thaw_kernel_is_symmetric_psd_and_pinned(dtype):
    kernel = FreezeThawKernel(alpha=1.3, beta=0.4, outputscale=2.0).to(dtype)
    t = (torch.arange(1, 76, dtype=dtype) / 75).unsqueeze(-1)
    K = kernel(t, t).to_dense().detach()
    a, b, s = (v.detach() for v in (kernel.alpha, kernel.beta, kernel.outputscale))
    decay = lambda x: (b / (x + b)) ** a  # noqa: E731 - the formula as written in the paper
    torch.testing.assert_close(K, s * (1 + decay(t + t.T) - decay(t) - decay(t.T)))
    assert torch.allclose(K, K.T)
    assert torch.linalg.eigvalsh(K.double()).min() > -1e-5 * K.abs().max()
    torch.testing.assert_close(kernel(t, t, diag=True).detach(), torch.diagonal(K))
    tiny = torch.tensor([[1e-6]], dtype=dtype)
    assert kernel(tiny, tiny).to_dense().abs().item() < 1e-5  # pinned at t = 0
    assert (torch.diff(torch.diagonal(K)) > 0).all()  # variance grows with the epoch
    t2 = torch.rand(2, 7, 1, dtype=dtype)
    assert kernel(t2, t2[:, :3]).to_dense().shape == (2, 7, 3)
    kernel(t, t).to_dense().sum().backward()
    assert all(p.grad is not None for p in kernel.parameters())


@pytest.mark.parametrize("make_space", [hyperrec_space, lcbench_space, nested_space])
@pytest.mark.parametrize("dtype", DTYPES)
def test_deep_kernel_on_any_space(make_space, dtype):
    torch.manual_seed(0)
    space = make_space()
    kernel = DeepPolynomialKernel(space).to(dtype)
    x = torch.as_tensor(space.encode(space.sample(30, seed=1)), dtype=dtype)
    K = kernel(x, x).to_dense()
    assert K.shape == (30, 30)
    torch.testing.assert_close(torch.diagonal(K), torch.ones(30, dtype=dtype))  # normalised
    phi = kernel.features(x)
    p = (phi @ phi.T + kernel.offset) ** 2  # the polynomial kernel, then its normalisation
    torch.testing.assert_close(K, p / torch.sqrt(p.diagonal()[:, None] * p.diagonal()[None]))
    assert torch.linalg.eigvalsh(K.detach().double()).min() > -1e-5
    assert kernel(x.expand(3, 30, -1), x[:4].expand(3, 4, -1)).to_dense().shape == (3, 30, 4)
    K.sum().backward()
    assert kernel.features.mlp[0].weight.grad.abs().sum() > 0
    assert kernel.raw_offset.grad.abs() > 0
    if space.categorical:
        assert kernel.features.embeddings[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_offset_kernel_is_the_targets_own_constant_per_configuration(dtype):
    """Rows [task, encoding (2), t] of 3 tasks; the target is task 2."""
    task_matrix = torch.tensor([[1.0, 0.5, 0.2], [0.5, 2.0, 0.3], [0.2, 0.3, 4.0]], dtype=dtype)
    rows = torch.tensor([[2, 0.1, 0.7, 0.2], [2, 0.1, 0.7, 1.0], [2, 0.3, 0.7, 0.2],
                         [1, 0.1, 0.7, 0.2], [2, 0.3, 0.7, 0.6]], dtype=dtype)
    kernel = ConfigurationOffsetKernel(0.25)
    k = kernel.forward(rows, rows, task_matrix=task_matrix)
    v = 0.25 * 4.0  # the fraction of the target's prior variance
    same = [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 1], [0] * 5, [0, 0, 1, 0, 1]]
    torch.testing.assert_close(k, v * torch.tensor(same, dtype=dtype))
    assert torch.linalg.eigvalsh(k).min() > -1e-6  # PSD
    torch.testing.assert_close(kernel.forward(rows, rows, diag=True, task_matrix=task_matrix),
                               torch.diagonal(k))
    assert kernel.forward(rows[None], rows[:2], task_matrix=task_matrix).shape == (1, 5, 2)
    assert not ConfigurationOffsetKernel().forward(rows, rows, task_matrix=task_matrix).any()
    with pytest.raises(ValueError, match="offset fraction must be >= 0"):
        ConfigurationOffsetKernel(-0.1)
