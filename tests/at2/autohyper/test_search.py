import math

import numpy as np
import pytest

from at2.autohyper.search import Dimension, learning_rate, trust_region_search, weight_decay


def sigmoid_response(center=3e-3, width=0.5):
    """Synthetic surface: ~1 (nothing learned) at small lr, falling to ~0 past ``center``."""
    calls = []

    def respond(h):
        calls.append(dict(h))
        return 1 / (1 + math.exp((math.log10(h["lr"]) - math.log10(center)) / width * 4))
    return respond, calls


def test_one_dimension_converges_past_the_drop():
    respond, calls = sigmoid_response()
    out = trust_region_search(respond, [learning_rate()])
    assert out.converged and set(out.values) == {"lr"}
    assert 3e-3 < out.values["lr"] < 3e-2  # where the response has fallen to about 0
    assert all(s - 1 < 5e-3 for s in out.scales)
    lrs = [c["lr"] for c in calls]
    assert len(lrs) == len({round(math.log(x), 6) for x in lrs})  # every point evaluated once


def test_start_inside_the_learned_region_rises_first():
    respond, calls = sigmoid_response()
    out = trust_region_search(respond, [learning_rate(start=0.05)])
    assert out.converged and 3e-3 < out.values["lr"] < 3e-2
    assert min(c["lr"] for c in calls) < 2e-3  # it walked down into the >= 0.85 region first


def test_two_dimensions_and_a_weight_decay_starting_at_zero():
    def respond(h):
        penalty = 0.3 * abs(math.log10(h["weight_decay"] + 1e-6) + 4) / 2
        return min(1.0, 1 / (1 + (h["lr"] / 3e-3) ** 8) + penalty * 0.1)
    out = trust_region_search(respond, [learning_rate(), weight_decay()])
    assert out.converged and set(out.values) == {"lr", "weight_decay"}
    assert out.values["weight_decay"] > 0 and out.values["lr"] > 2e-3


def test_plateaus_terminate_and_repeated_searches_are_independent():
    out = trust_region_search(lambda h: 1.0, [learning_rate()], max_trials=12)
    assert not out.converged
    a = trust_region_search(sigmoid_response()[0], [learning_rate()])
    b = trust_region_search(sigmoid_response()[0], [learning_rate()])
    assert a == b  # no state shared between runs


def test_dimension_steps_and_validation():
    wd = weight_decay(floor=1e-5)
    assert wd.step(0.0, 2.0, 1) == 1e-5 and wd.step(1e-5, 2.0, -1) == 0.0
    assert np.isclose(learning_rate().step(1e-4, 1.45, 1), 1.45e-4)
    with pytest.raises(ValueError, match="scale"):
        Dimension("lr", 1e-3, 1.0)
    with pytest.raises(ValueError, match="floor"):
        Dimension("lr", 0.0, 2.0)
    with pytest.raises(ValueError, match="duplicate"):
        trust_region_search(lambda h: 0.0, [learning_rate(), learning_rate()])
