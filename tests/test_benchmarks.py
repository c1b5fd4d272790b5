"""The benchmark scripts stay importable against the library (they are run by hand, not in CI)."""

import importlib.util

import pytest
import torch

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
