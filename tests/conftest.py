"""Shared fixtures: the published AT2 data (skipped when absent) and small synthetic databases."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hyperrec.database import Database, Pair
from hyperrec.spaces import hyperrec_space

REPO = Path(__file__).resolve().parents[1]
SHARED_AT2 = Path(os.environ.get("AT2_DATA", REPO.parent / "shared" / "data" / "at2"))


@pytest.fixture(autouse=True)
def _restore_default_dtype():
    """Tests may switch torch to float64; never let that leak into the next test."""
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


@pytest.fixture(scope="session")
def at2_data() -> Path:
    """The AT2 authors' published data folder; tests using it skip when it is absent."""
    if not (SHARED_AT2 / "HyperRec" / "profiles.pkl").is_file():
        pytest.skip(f"published AT2 data not found at {SHARED_AT2} (set AT2_DATA to its folder)")
    return SHARED_AT2


@pytest.fixture(scope="session")
def published(at2_data, tmp_path_factory) -> dict[str, Database]:
    """The published HyperRec and LCBench databases, imported once per test session."""
    from hyperrec.importers import import_at2

    out = tmp_path_factory.mktemp("published")
    return {db.name: db for db in import_at2(at2_data, out)}


def make_tiny_db(path: Path, tasks: int = 3, configs: int = 6, profiles: int = 2,
                 epochs: int = 5, seed: int = 0) -> Database:
    """A small complete HyperRec-space database of smooth synthetic learning curves on related
    tasks: each configuration has a quality shared by all tasks, each task its own scale."""
    rng = np.random.default_rng(seed)
    space = hyperrec_space()
    names = [f"task{t}" for t in range(tasks)]
    t = np.arange(1, epochs + 1) / epochs
    quality = rng.uniform(0.3, 0.9, size=(1, 1, configs, 1))
    scale = rng.uniform(0.8, 1.1, size=(1, tasks, 1, 1))
    rate = rng.uniform(2, 6, size=(1, 1, configs, 1))
    curves = (quality * scale * (1 - np.exp(-rate * t))
              + 0.005 * rng.standard_normal((profiles, tasks, configs, epochs)))
    with Database.build(path, space, name="tiny", epochs=epochs) as w:
        w.add_tasks(names, [{"classes": 10}] * tasks)
        w.add_configs(space.sample(configs, seed=seed))
        w.write_curves("val_acc", curves, tasks=names, profiles=range(profiles))
        w.set_pairs([Pair(tuple(names[1:]), names[0])])
    return Database.open(path)


@pytest.fixture
def tiny_db(tmp_path) -> Database:
    return make_tiny_db(tmp_path / "tiny.h5")


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    """A tiny ImageFolder task: 2 classes x 15 RGB 8x8 images (bright vs dark)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for label, level in (("bright", 200), ("dark", 40)):
        (root / label).mkdir()
        for i in range(15):
            pixels = np.clip(level + rng.normal(0, 20, (8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root
