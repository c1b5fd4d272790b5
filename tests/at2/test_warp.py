import pytest
import torch

from at2.warp import WARPS, LogErrorWarp, resolve_warp


def test_log_error_warp_is_increasing_and_inverts():
    warp = LogErrorWarp()
    y = torch.linspace(0, 1, 101, dtype=torch.float64)
    z = warp(y)
    assert (z.diff() > 0).all()
    torch.testing.assert_close(warp.inverse(z), y)
    assert z[-1] == pytest.approx(-torch.log(torch.tensor(0.01)).item())
    # back-transformed predictions stay below 1 + eps however large the warped value
    assert warp.inverse(torch.tensor([50.0])).item() <= 1.01
    assert WARPS["none"] is None and WARPS["log_error"] == warp


def test_log_error_warp_refuses_values_outside_the_unit_interval():
    warp = LogErrorWarp()
    warp.check(torch.tensor([0.0, float("nan"), 1.0]), "val_acc")  # NaN: unobserved
    with pytest.raises(ValueError, match=r"'val_acc' values in \[0, 1\]; got 1 outside, e.g. 1.5"):
        warp.check(torch.tensor([0.2, 1.5]), "val_acc")


def test_auto_warp_is_log_error_for_accuracies_only():
    accuracy = torch.tensor([[0.1, float("nan")], [0.9, 1.0]])
    assert resolve_warp("auto", accuracy, "val_acc") == "log_error"
    assert resolve_warp("auto", accuracy, "val_loss") == "none"          # minimised
    assert resolve_warp("auto", accuracy * 100, "val_acc") == "none"     # percent, not in [0, 1]
    assert resolve_warp("none", accuracy, "val_acc") == "none"
    assert resolve_warp("log_error", accuracy, "val_acc") == "log_error"
    with pytest.raises(ValueError, match="unknown warp 'logit'; choose from"):
        resolve_warp("logit", accuracy, "val_acc")
