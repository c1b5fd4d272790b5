"""The benchmark scripts stay importable against the library (they are run by hand, not in CI)."""

import importlib.util

import pytest
import torch

from at2 import AT2Tuner
from tests.conftest import REPO, make_tiny_db

SCRIPTS = sorted((REPO / "benchmarks").glob("*.py"))


def load(script):
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the imports and definitions, not main()
    return module


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_benchmark_imports(script):
    assert callable(load(script).main)


def test_benchmarks_found():
    assert len(SCRIPTS) >= 3


@pytest.mark.parametrize("product_dtype", [None, torch.bfloat16])
def test_speed_benchmark_times_the_engines_linear_algebra(product_dtype):
    speed = load(REPO / "benchmarks" / "at2_speed.py")
    assert speed.svgp_linear_algebra_seconds(16, 8, product_dtype, repeats=1) > 0


def test_speed_benchmark_times_the_parts_of_a_step_and_leaves_the_engine_as_it_was(tmp_path):
    speed = load(REPO / "benchmarks" / "at2_speed.py")
    db = make_tiny_db(tmp_path / "tiny.h5")
    tuner = AT2Tuner(db, db.tasks[1:], db.tasks[0], engine="variational",
                     engine_options={"epochs": 1, "inducing": 16, "batch_size": 8})
    tuner.tune(2, progress=False)
    before = {k: v.clone() for k, v in tuner.engine.gp.state_dict().items()}
    parts = speed.step_parts_seconds(tuner.engine, repeats=1)
    assert set(parts) == {"K_uu", "K_uf", "whitening_and_variances", "kl", "elbo_step"}
    assert all(seconds > 0 for seconds in parts.values())
    after = tuner.engine.gp.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in [*tuner.engine.gp.parameters(),
                                        *tuner.engine.model.parameters()])
    assert not tuner.engine.gp.training


def test_quality_benchmark_draws_sources_for_every_target(tmp_path):
    quality = load(REPO / "benchmarks" / "at2_quality.py")
    db = make_tiny_db(tmp_path / "tiny.h5", tasks=5)
    pairs = quality.every_target(db, 3, seed=0)
    assert [p.target for p in pairs] == db.tasks
    for pair in pairs:
        assert len(set(pair.sources)) == 3 and pair.target not in pair.sources
        assert set(pair.sources) <= set(db.tasks)
    assert pairs == quality.every_target(db, 3, seed=0)
    assert pairs != quality.every_target(db, 3, seed=1)


def test_quality_benchmark_ranks_another_profiles_best(tmp_path):
    quality = load(REPO / "benchmarks" / "at2_quality.py")
    db = make_tiny_db(tmp_path / "tiny.h5", tasks=3, profiles=2)
    pairs = quality.every_target(db, 2, seed=0)
    other = quality.other_profile_ranks(db, pairs, budget=4)
    assert other.shape == (3, 1, 4)
    for pair, ranks in zip(pairs, other):
        best_elsewhere = db.ranking(pair.target, profile=1).argmin()
        assert (ranks == db.ranking(pair.target, profile=0)[best_elsewhere]).all()
    assert (quality.other_profile_ranks(db, pairs, 4, profile=1)
            == [[[db.ranking(p.target, profile=1)[db.ranking(p.target).argmin()]] * 4]
                for p in pairs]).all()
    single = make_tiny_db(tmp_path / "single.h5", tasks=3, profiles=1)
    assert quality.other_profile_ranks(single, pairs, budget=4) is None
