"""Import the databases published with the AT2 paper (Xiao, Xing & Neiswanger, 2021).

The authors' data folder holds ``HyperRec/`` and ``LCBench/`` (each with ``configs.pkl`` and
``profiles.pkl``) and ``train_test_pairs.json``. :func:`import_at2` turns it into
``HyperRec.h5`` and ``LCBench.h5`` (:mod:`hyperrec.database` schema) with the published pairs.

The pickles are read with :func:`hyperrec.safe_pickle.safe_load` only: ``profiles.pkl`` was written
with ``dill`` and would run reconstruction code under ``pickle``/``dill``. Every input is parsed
and checked before an output file is written, and each output appears atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .database import DEFAULT_METRIC, Database, Pair
from .safe_pickle import safe_load
from .space import ConfigError, SearchSpace
from .spaces import from_published, hyperrec_space, lcbench_space

log = logging.getLogger(__name__)

PUBLISHED_SHA256 = {
    "HyperRec/configs.pkl": "343ce512e7a4bca6556531e2567ea7651f8433fd9da7ab202409bd23ac1c8ae8",
    "HyperRec/profiles.pkl": "d3498b0e17e14722aa5eb25187e7c85fc3c29ba187c6fe6fb8608361f42dfef6",
    "LCBench/configs.pkl": "365edd1e144b5d752cad8330b5fba6a849b37346ee0d436770e99e0f49ce55ee",
    "LCBench/profiles.pkl": "ccde6817331b2028d038b11032abaf4e791d30c38151454e440342f1d5bbc24a",
    "train_test_pairs.json": "35dc40422a4bb2ae7a34cb9a0a6bc9dfca9bd80a2bf4bd584d6d5bba6b45c8f1",
}
"""SHA-256 of the files in the AT2 authors' repository (commit 027fdb3)."""

HYPERREC_TASKS = {  # (images, classes), from the HyperRec README
    "ACTION40": (9532, 40), "AWA2": (37322, 50), "BOOKCOVER30": (57000, 30),
    "CALTECH256": (30607, 257), "CARS196": (16185, 196), "CIFAR10": (60000, 10),
    "CIFAR100": (60000, 100), "CUB200": (11788, 200), "FLOWER102": (8189, 102),
    "FOOD101": (101000, 101), "IMAGENET64SUB1": (128112, 1000),
    "IMAGENET64SUB2": (128112, 1000), "IMAGENET64SUB3": (128112, 1000), "IP102": (75222, 102),
    "ISR": (15620, 67), "OIPETS": (7349, 37), "PLACE365SUB1": (91987, 365),
    "PLACE365SUB2": (91987, 365), "PLACE365SUB3": (91987, 365), "PLANT39": (61486, 39),
    "RESISC45": (31500, 45), "SCENE15": (4485, 15), "SDD": (20580, 120), "SOP": (120053, 12),
    "SUN397SUB1": (9925, 397), "SUN397SUB2": (9925, 397), "SUN397SUB3": (9925, 397),
}

DATABASES: dict[str, SearchSpace] = {"HyperRec": hyperrec_space(), "LCBench": lcbench_space()}


class PublishedDataError(ValueError):
    """The published data folder is missing a file or holds something unexpected."""


@dataclass
class Published:
    """One published database, parsed and checked, ready to be written."""

    name: str
    space: SearchSpace
    config_ids: list[int]
    configs: list[dict[str, Any]]
    sources: list[dict[str, Any]]
    tasks: list[str]
    curves: np.ndarray  # (P, T, C, E) float64, NaN where missing
    pairs: list[Pair]
    sha256: dict[str, str]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checked_hashes(src: Path, names: Sequence[str]) -> dict[str, str]:
    hashes = {}
    for name in names:
        path = src / name
        if not path.is_file():
            raise PublishedDataError(f"{path}: missing (expected the AT2 data folder layout: "
                               "HyperRec/, LCBench/, train_test_pairs.json)")
        hashes[name] = sha256(path)
        if hashes[name] != PUBLISHED_SHA256[name]:
            log.warning("%s differs from the published file (sha256 %s, published %s); "
                        "importing it anyway", path, hashes[name], PUBLISHED_SHA256[name])
    return hashes


def _profiles_to_array(profiles: Any, config_ids: list[int],
                       where: str) -> tuple[list[str], np.ndarray]:
    """``profiles[p][task][config] -> 1-D array`` to task names and a ``(P, T, C, E)`` array."""
    if not isinstance(profiles, Mapping) or not profiles:
        raise PublishedDataError(f"{where}: expected a non-empty dict of profiles")
    profile_ids = sorted(profiles)
    if profile_ids != list(range(len(profile_ids))):
        raise PublishedDataError(f"{where}: profile ids must be 0..P-1, got {profile_ids}")
    tasks: list[str] = []
    for p in profile_ids:
        if not isinstance(profiles[p], Mapping):
            raise PublishedDataError(f"{where}: profile {p} is not a dict of tasks")
        tasks += [t for t in profiles[p] if t not in tasks]
    column = {c: i for i, c in enumerate(config_ids)}
    cells = []  # (profile, task, configuration column, curve)
    for p in profile_ids:
        for t, task in enumerate(tasks):
            for c, curve in profiles[p].get(task, {}).items():
                at = f"{where}: profile {p}, task {task!r}, configuration {c!r}"
                if c not in column:
                    raise PublishedDataError(f"{at}: not in configs.pkl")
                if not isinstance(curve, np.ndarray) or curve.ndim != 1 or curve.dtype.kind != "f":
                    raise PublishedDataError(f"{at}: expected a 1-D float array")
                cells.append((p, t, column[c], curve))
    if not cells:
        raise PublishedDataError(f"{where}: no curves")
    epochs = max(len(cell[3]) for cell in cells)
    out = np.full((len(profile_ids), len(tasks), len(config_ids), epochs), np.nan)
    for p, t, c, curve in cells:
        out[p, t, column[c], : len(curve)] = curve
    return tasks, out


def read_published(src: str | Path, name: str) -> Published:
    """Parse and check one published database (``"HyperRec"`` or ``"LCBench"``) from ``src``."""
    src = Path(src)
    if name not in DATABASES:
        raise PublishedDataError(f"unknown published database {name!r}; known: {list(DATABASES)}")
    space = DATABASES[name]
    hashes = _checked_hashes(src, [f"{name}/configs.pkl", f"{name}/profiles.pkl",
                                   "train_test_pairs.json"])
    raw = safe_load(src / name / "configs.pkl")
    if not isinstance(raw, Mapping) or not all(isinstance(k, int) for k in raw):
        raise PublishedDataError(f"{src / name / 'configs.pkl'}: expected a dict "
                                 "id -> configuration")
    ids = sorted(raw)
    try:
        configs = [from_published(space, raw[i]) for i in ids]
    except ConfigError as err:
        raise PublishedDataError(f"{src / name / 'configs.pkl'}: {err}") from err
    tasks, curves = _profiles_to_array(safe_load(src / name / "profiles.pkl"), ids,
                                       str(src / name / "profiles.pkl"))
    try:
        pairs = [Pair(tuple(s.split(",")), t) for s, t in
                 json.loads((src / "train_test_pairs.json").read_text())[name]]
    except (KeyError, ValueError, TypeError) as err:
        raise PublishedDataError(f"{src / 'train_test_pairs.json'}: no valid pairs for {name}: "
                           f"{err}") from err
    unknown = {t for p in pairs for t in (*p.sources, p.target)} - set(tasks)
    if unknown:
        raise PublishedDataError(f"train_test_pairs.json names tasks not in {name}: "
                                 f"{sorted(unknown)}")
    return Published(name, space, ids, configs, [dict(raw[i]) for i in ids], tasks, curves,
                     pairs, hashes)


def write_published(published: Published, path: str | Path, overwrite: bool = True) -> Database:
    """Write a parsed published database to ``path`` (atomically) and open it."""
    meta = [dict(zip(("images", "classes"), HYPERREC_TASKS[t])) if t in HYPERREC_TASKS else {}
            for t in published.tasks]
    P, _, _, E = published.curves.shape
    provenance = {"source": "AT2 published data (Xiao, Xing & Neiswanger, 2021)",
                  "sha256": published.sha256}
    with Database.build(path, published.space, name=published.name, epochs=E,
                        overwrite=overwrite, provenance=provenance) as w:
        w.add_tasks(published.tasks, meta)
        w.add_configs(published.configs, ids=published.config_ids, sources=published.sources)
        w.write_curves(DEFAULT_METRIC, published.curves, tasks=published.tasks,
                       profiles=range(P))
        w.set_pairs(published.pairs)
    return Database.open(path)


def import_at2(src: str | Path, out: str | Path,
               names: Sequence[str] = tuple(DATABASES)) -> list[Database]:
    """Import the published AT2 databases from ``src`` into ``out/<name>.h5``.

    All databases are parsed and checked before any file is written.
    """
    out = Path(out)
    published = [read_published(src, name) for name in names]
    out.mkdir(parents=True, exist_ok=True)
    return [write_published(p, out / f"{p.name}.h5") for p in published]
