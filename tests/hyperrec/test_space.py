import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperrec.space import (
    INACTIVE,
    Choice,
    ConfigError,
    Derived,
    IntUniform,
    LogUniform,
    SearchSpace,
    Uniform,
)
from hyperrec.spaces import from_published, hyperrec_space, lcbench_space, to_published


def nested_space() -> SearchSpace:
    """A user's space with a choice inside a branch, to exercise nesting beyond HyperRec."""
    return SearchSpace([
        Uniform("dropout", 0.0, 0.5),
        Choice("net", {
            "mlp": (IntUniform("layers", 1, 4), Choice("act", {"relu": (), "tanh": ()})),
            "cnn": (IntUniform("channels", 8, 256, log=True), LogUniform("lr", 1e-4, 1.0),
                    Derived("warmup_lr", 0.1, 0.5, base="lr")),
        }),
    ], name="nested")


SPACES = {"hyperrec": hyperrec_space, "lcbench": lcbench_space, "nested": nested_space}


def assert_same_config(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key, value in a.items():
        if isinstance(value, float):
            assert math.isclose(value, b[key], rel_tol=1e-12), key
        else:
            assert value == b[key] and type(value) is type(b[key]), key


def test_hyperrec_space_is_the_published_16_dimensional_space():
    space = hyperrec_space()
    assert space.dim == 16
    assert [c.name for c in space.categorical] == ["model", "optimizer", "scheduler"]
    assert space.cardinalities == (2, 2, 4)
    assert set(space.numeric) == {"batch_size", "lr", "weight_decay", "beta0", "beta1",
                                  "momentum", "step_size", "gamma", "max_lr", "step_size_up",
                                  "T_0", "T_mult", "eta_min"}
    assert lcbench_space().dim == 7


@pytest.mark.parametrize("name", SPACES)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_encode_decode_is_identity_on_sampled_configs(name, seed):
    space = SPACES[name]()
    configs = space.sample(8, seed=seed)
    encoded = space.encode(configs)
    assert encoded.shape == (8, space.dim)
    numeric = encoded[:, len(space.categorical):]
    assert ((numeric >= 0) & (numeric <= 1)).all()
    for original, decoded in zip(configs, space.decode(encoded)):
        assert_same_config(original, decoded)


def test_inactive_slots_get_neutral_values():
    space = nested_space()
    config = {"dropout": 0.1, "net": "cnn", "channels": 32, "lr": 0.01, "warmup_lr": 0.002}
    row = space.encode([config])[0]
    cat = {c.name: i for i, c in enumerate(space.categorical)}
    assert row[cat["act"]] == 2  # an inactive choice encodes as its cardinality
    assert row[len(space.categorical) + space.numeric.index("layers")] == INACTIVE
    assert_same_config(space.validate(config), space.decode(row[None])[0])


def test_sampling_is_seeded_and_covers_every_branch():
    space = hyperrec_space()
    assert space.sample(50, seed=3) == space.sample(50, seed=3)
    assert space.sample(5, seed=3) != space.sample(5, seed=4)
    configs = space.sample(400, seed=0)
    assert {c["scheduler"] for c in configs} == set(space.categorical[2].options)
    for c in configs:
        if c["scheduler"] == "CyclicLR":
            assert 1.1 * c["lr"] * (1 - 1e-12) <= c["max_lr"] <= min(1, 1.5 * c["lr"]) * (1 + 1e-12)
        if c["scheduler"] == "CosineAnnealingWarmRestarts":
            assert 0.5 * c["lr"] * (1 - 1e-12) <= c["eta_min"] <= 0.9 * c["lr"] * (1 + 1e-12)
    lc = lcbench_space().sample(2000, seed=0)
    assert {c["num_layers"] for c in lc} == {1, 2, 3, 4, 5}
    sizes = [c["batch_size"] for c in lc]
    assert min(sizes) == 16 and 500 <= max(sizes) <= 512


VALID = {"batch_size": 64, "model": "ResNet34", "optimizer": "Adam", "lr": 0.01,
         "weight_decay": 1e-4, "beta0": 0.9, "beta1": 0.99, "scheduler": "StepLR",
         "step_size": 5, "gamma": 0.2}


@pytest.mark.parametrize("change, message", [
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"momentum": 0.9}, "key 'momentum' belongs to a branch"),
    ({"lr": 0.5}, r"lr=0.5 is out of range; allowed: log-uniform \[0.0001, 0.1\]"),
    ({"batch_size": 12}, r"batch_size=12 is out of range; allowed: uniform integer \[32, 128\]"),
    ({"batch_size": 64.0}, "batch_size=64.0 is not an integer"),
    ({"batch_size": True}, "batch_size=True is not an integer"),
    ({"optimizer": "SGD"}, "optimizer='SGD' is not allowed; allowed: one of 'Adam', 'Momentum'"),
    ({"scheduler": "CyclicLR", "max_lr": 0.02, "step_size_up": 3},
     r"max_lr=0.02 is out of range; allowed: min\(1.0, lr \* U\(1.1, 1.5\)\)"),
])
def test_validation_names_the_offending_key_and_range(change, message):
    config = {**VALID, **change}
    if change.get("scheduler") == "CyclicLR":
        del config["step_size"]
    with pytest.raises(ConfigError, match=message):
        hyperrec_space().validate(config)


def test_missing_key_names_it():
    config = dict(VALID)
    del config["gamma"]
    with pytest.raises(ConfigError, match=r"missing key 'gamma' \(allowed: log-uniform"):
        hyperrec_space().validate(config)


def test_space_survives_json_and_rejects_bad_definitions():
    for make in SPACES.values():
        space = make()
        assert SearchSpace.from_json(space.to_json()) == space
    with pytest.raises(ValueError, match="low < high"):
        Uniform("x", 1.0, 1.0)
    with pytest.raises(ValueError, match="log scale"):
        LogUniform("x", 0.0, 1.0)
    with pytest.raises(ValueError, match="duplicate"):
        SearchSpace([Uniform("x", 0, 1), Uniform("x", 0, 2)])


def test_decode_rejects_wrong_width():
    with pytest.raises(ValueError, match=r"needs \(n, 16\)"):
        hyperrec_space().decode(np.zeros((2, 5)))


def test_published_configs_map_onto_the_spaces(at2_data):
    from hyperrec.safe_pickle import safe_load

    space = hyperrec_space()
    raw = safe_load(at2_data / "HyperRec" / "configs.pkl")
    configs = [from_published(space, raw[k]) for k in sorted(raw)]
    assert {c["optimizer"] for c in configs} == {"Adam", "Momentum"}
    for k, config in zip(sorted(raw), configs):
        assert to_published(space, config) == raw[k]  # exact round trip to the published form
    lc_raw = safe_load(at2_data / "LCBench" / "configs.pkl")
    assert sum(v["num_layers"] is True for v in lc_raw.values()) == 36
    lc = [from_published(lcbench_space(), lc_raw[k]) for k in sorted(lc_raw)]
    assert sum(c["num_layers"] == 1 for c in lc) == 36
    assert all(type(c["num_layers"]) is int for c in lc)
