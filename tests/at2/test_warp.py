import pytest
import torch

from at2.warp import WARPS, LogErrorWarp


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
