"""The benchmark scripts stay importable against the library (they are run by hand, not in CI)."""

import importlib.util

import pytest
import torch

from tests.conftest import REPO

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
