import pytest
import torch
from scipy.stats import norm, rankdata

from at2.warp import CopulaWarp, LogErrorWarp, Warp, make_warp

NAN = float("nan")


def test_log_error_warp_is_increasing_and_inverts():
    warp = LogErrorWarp()
    y = torch.linspace(0, 1, 101, dtype=torch.float64)
    z = warp(y)
    assert (z.diff() > 0).all()
    torch.testing.assert_close(warp.inverse(z, y), y)
    assert z[-1] == pytest.approx(-torch.log(torch.tensor(0.01)).item())
    # back-transformed predictions stay below 1 + eps however large the warped value
    assert warp.inverse(torch.tensor([50.0]), y).item() <= 1.01


def test_log_error_warp_refuses_values_outside_the_unit_interval():
    warp = LogErrorWarp()
    warp.check(torch.tensor([0.0, NAN, 1.0]), "val_acc")  # NaN: unobserved
    with pytest.raises(ValueError, match=r"'val_acc' values in \[0, 1\]; got 1 outside, e.g. 1.5"):
        warp.check(torch.tensor([0.2, 1.5]), "val_acc")


def test_copula_warp_gives_each_task_normal_scores_of_its_ranks():
    values = torch.tensor([[[0.5, 0.7, NAN], [0.7, 0.9, NAN]],       # task 0: 4 observed, a tie
                           [[10.0, 30.0, 20.0], [NAN, NAN, NAN]]],    # task 1: another scale
                          dtype=torch.float64)
    z = CopulaWarp()(values)
    assert z.shape == values.shape and torch.equal(z.isnan(), values.isnan())
    for task in range(2):  # direct: scipy's mean ranks of the observed values
        observed = values[task][~values[task].isnan()].numpy()
        expected = norm.ppf((rankdata(observed) - 0.5) / observed.size)
        torch.testing.assert_close(z[task][~z[task].isnan()], torch.tensor(expected))
    assert z[0, 0, 1] == z[0, 1, 0]  # ties share a score
    # a minimised metric is ranked the other way round; the scale never matters
    torch.testing.assert_close(CopulaWarp(maximise=False)(-values), z, equal_nan=True)
    torch.testing.assert_close(CopulaWarp()(values * 1e-4 + 3), z, equal_nan=True)
    # float32 and batch dimensions
    assert CopulaWarp()(values.float().expand(3, 2, 2, 3)).shape == (3, 2, 2, 3)


def test_copula_warp_inverts_between_the_observed_values():
    warp = CopulaWarp()
    values = torch.tensor([[0.2, 0.4], [0.8, NAN]], dtype=torch.float64)
    z = warp(values)
    observed = ~values.isnan()
    torch.testing.assert_close(warp.inverse(z[observed], values), values[observed])
    middle = warp.inverse((z[0, 0] + z[0, 1]).unsqueeze(0) / 2, values)
    assert middle.item() == pytest.approx(0.3)
    ends = warp.inverse(torch.tensor([-9.0, 9.0], dtype=torch.float64), values)
    assert ends.tolist() == [0.2, 0.8]  # constant beyond the extremes
    assert warp.inverse(torch.tensor([0.0]), torch.full((2, 2), NAN)).isnan().all()


def test_warp_names_and_directions():
    assert make_warp("auto", "val_acc") == CopulaWarp() == make_warp("copula", "val_acc")
    assert make_warp("auto", "val_loss") == CopulaWarp(maximise=False)
    assert make_warp("none", "val_acc") == Warp()
    assert make_warp("log_error", "val_acc") == LogErrorWarp()
    for name in ("none", "log_error"):  # the surrogate maximises: refuse a minimised metric
        with pytest.raises(ValueError, match="'val_loss' is minimised"):
            make_warp(name, "val_loss").check(torch.tensor([0.5]), "val_loss")
    with pytest.raises(ValueError, match="unknown warp 'logit'; choose from"):
        make_warp("logit", "val_acc")
