"""The benchmark scripts stay importable against the library (they are run by hand, not in CI)."""

import importlib.util

import pytest

from tests.conftest import REPO

SCRIPTS = sorted((REPO / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_benchmark_imports(script):
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the imports and definitions, not main()
    assert callable(module.main)


def test_benchmarks_found():
    assert len(SCRIPTS) >= 3
