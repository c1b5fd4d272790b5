import numpy as np
import pytest
import torch

from at2.autohyper.evbmf import evbmf
from at2.autohyper.metrics import low_rank_metrics, unfoldings


def low_rank_plus_noise(rows, cols, rank, noise, seed=0):
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((rows, rows)))[0][:, :rank]
    v = np.linalg.qr(rng.standard_normal((cols, cols)))[0][:, :rank]
    signal = np.linspace(3, 6, rank) * noise * np.sqrt(max(rows, cols))
    return u @ np.diag(signal) @ v.T + noise * rng.standard_normal((rows, cols))


@pytest.mark.parametrize("rows,cols,rank", [(60, 100, 5), (100, 60, 5), (30, 30, 3), (16, 9, 2),
                                            (200, 120, 12)])
def test_recovers_rank_and_noise_in_both_orientations(rows, cols, rank):
    result = evbmf(low_rank_plus_noise(rows, cols, rank, noise=0.1))
    assert result.rank == rank
    assert result.noise_variance == pytest.approx(0.01, rel=0.2)
    assert result.estimates.shape == (rank,)
    assert np.all(result.estimates < result.singular_values[:rank])  # posterior shrinks


def test_noise_and_zero_matrices_have_rank_zero():
    assert evbmf(low_rank_plus_noise(40, 70, 0, noise=1.0)).rank == 0
    assert evbmf(torch.zeros(5, 8)).rank == 0
    with pytest.raises(ValueError, match="2-D"):
        evbmf(torch.zeros(3))


def test_transpose_gives_the_same_answer():
    y = low_rank_plus_noise(20, 50, 4, noise=0.05, seed=3)
    a, b = evbmf(y), evbmf(y.T)
    assert a.rank == b.rank == 4
    np.testing.assert_allclose(a.estimates, b.estimates, rtol=1e-8)


def test_unfoldings_shapes():
    w = torch.randn(8, 3, 3, 3)
    u = unfoldings(w)
    assert u["in"].shape == (3, 72) and u["out"].shape == (8, 27)
    torch.testing.assert_close(u["out"][2], w[2].flatten())
    torch.testing.assert_close(u["in"][1], w[:, 1].flatten())


def test_metrics_on_known_weights():
    torch.manual_seed(0)
    first = torch.nn.Conv2d(1, 16, 3)  # its input unfolding is 1 x 144: skipped
    second = torch.nn.Conv2d(16, 32, 3)  # plain random initialisation: noise only
    third = torch.nn.Conv2d(32, 48, 3)
    w = torch.as_tensor(low_rank_plus_noise(48, 32 * 9, 3, noise=0.01), dtype=torch.float32)
    third.weight.data = w.reshape(48, 32, 3, 3)  # output unfolding has rank 3
    metrics = low_rank_metrics(torch.nn.Sequential(first, second, third))
    assert metrics.names == ("0:out", "1:in", "1:out", "2:in", "2:out")
    assert metrics.rank[1] == metrics.rank[2] == 0 and metrics.rank[4] == 3
    assert metrics.zero_rank_fraction == pytest.approx(np.mean(metrics.rank == 0))
    assert np.isnan(metrics.condition[1]) and metrics.condition[4] >= 1
    assert metrics.knowledge_gain[1] == 0 and 0 < metrics.knowledge_gain[4] <= 1
    with pytest.raises(ValueError, match="no convolution"):
        low_rank_metrics(torch.nn.Linear(3, 4))
