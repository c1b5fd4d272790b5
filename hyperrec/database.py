"""The learning-curve database: one HDF5 file per database.

Schema (version 1)::

    /                      attrs: format="hyperrec-database", schema_version=1, name,
                                  space (SearchSpace JSON), pairs (JSON), provenance (JSON)
    /tasks/names           (T,) str          task names, unique
    /tasks/meta            (T,) str          JSON per task (images, classes, split seed, ...)
    /configs/ids           (C,) int64        configuration ids, unique
    /configs/config        (C,) str          JSON of the configuration in the space's form
    /configs/source        (C,) str          JSON of the configuration as published ("{}" if none)
    /configs/encoding      (C, D) float64    ``space.encode`` of the configurations
    /curves/<metric>       (P, T, C, E) float64   P profiles (training seeds), E epochs;
                                              NaN marks a cell never observed, never zero

Standard metric names: ``val_acc`` (validation top-1 accuracy in [0, 1]; the published curves),
``val_top5``, ``val_top10``, ``val_loss``, ``val_time``, the same with ``test_``, and
``train_time`` (seconds per epoch). Per-batch training records of the builder::

    /batches/<task>/<config_id>/<profile>   (E, B, 4) float64   per epoch and batch: training
                                            cross-entropy, top-1, top-5, top-10 accuracy (NaN
                                            for epochs not trained)

Reading is :meth:`Database.open`; every change goes through :meth:`Database.edit`, which works on
a copy and atomically replaces the file when the block ends, under an exclusive lock: a crash
mid-write leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .space import SearchSpace

FORMAT = "hyperrec-database"
SCHEMA_VERSION = 1
DEFAULT_METRIC = "val_acc"
_METRIC_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_STR = h5py.string_dtype()


class DatabaseError(Exception):
    """A file is missing, corrupt, not a database of this schema, or a write is inconsistent."""


def higher_is_better(metric: str) -> bool:
    """Whether larger values of ``metric`` are better (losses and times are minimised)."""
    return not metric.endswith(("_loss", "_time"))


@dataclass(frozen=True)
class Pair:
    """A published train/test pair: source tasks and the target task."""

    sources: tuple[str, ...]
    target: str


@dataclass(frozen=True)
class Best:
    """The best configuration of a task: position in ``db.configs``, id, value, and the epoch
    reaching it (1-based: the number of epochs trained, as everywhere in this library)."""

    index: int
    config_id: int
    value: float
    epoch: int


def _json(obj: Any) -> str:
    return json.dumps(obj, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path, copy_from: str | Path | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it over ``path`` atomically.

    ``copy_from`` seeds the temporary with an existing file. On any exception (or a kill) the
    original ``path`` is untouched; the temporary is removed where the process still can.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make databases private
    try:
        if copy_from is not None:
            shutil.copyfile(copy_from, tmp)
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path``'s lock file (one writer at a time)."""
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Database:
    """A learning-curve database (read side). Create with :meth:`create`, open with :meth:`open`.

    Attributes:
        path: The HDF5 file.
        name: The database's name (e.g. ``"HyperRec"``).
        space: Its :class:`~hyperrec.space.SearchSpace`.
        tasks: Task names, length T.
        task_meta: One dict per task (``images``, ``classes`` when known, ...).
        config_ids: ``(C,)`` int64 configuration ids.
        configs: The C configurations (dicts in the space's form).
        encodings: ``(C, D)`` float64 ``space.encode(configs)``.
        pairs: The published train/test pairs stored with the file.
        profiles: P, the number of profiles (training seeds).
        epochs: E, the number of epochs per curve.
        metrics: Names of the per-epoch metrics stored.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._load()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | Path) -> Database:
        """Open an existing database file, checking that it is one of this schema."""
        return cls(path)

    @classmethod
    def create(cls, path: str | Path, space: SearchSpace, *, name: str, epochs: int,
               overwrite: bool = False, provenance: Mapping[str, Any] | None = None) -> Database:
        """Write an empty database (no tasks, no configurations) for ``space`` and open it."""
        with cls.build(path, space, name=name, epochs=epochs, overwrite=overwrite,
                       provenance=provenance):
            pass
        return cls(path)

    @classmethod
    @contextlib.contextmanager
    def build(cls, path: str | Path, space: SearchSpace, *, name: str, epochs: int,
              overwrite: bool = False,
              provenance: Mapping[str, Any] | None = None) -> Iterator[DatabaseWriter]:
        """Create a database and fill it in one atomic step: ``with Database.build(...) as w:``.

        The file appears at ``path`` only when the block ends without error.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise DatabaseError(f"{path} exists; pass overwrite=True to replace it")
        if epochs < 1:
            raise DatabaseError(f"epochs must be >= 1, got {epochs}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path), atomic_file(path) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs.update(format=FORMAT, schema_version=SCHEMA_VERSION, name=name,
                               space=space.to_json(), pairs="[]", epochs=epochs,
                               provenance=_json(dict(provenance or {})))
                for key, dtype in (("tasks/names", _STR), ("tasks/meta", _STR),
                                   ("configs/ids", np.int64), ("configs/config", _STR),
                                   ("configs/source", _STR)):
                    f.create_dataset(key, (0,), dtype=dtype, maxshape=(None,))
                f.create_dataset("configs/encoding", (0, space.dim), dtype=np.float64,
                                 maxshape=(None, space.dim))
                f.create_group("curves")
                yield DatabaseWriter(f, space)
            cls(tmp)  # refuse to install a file this library cannot read back

    def _load(self) -> None:
        if not self.path.is_file():
            raise DatabaseError(f"{self.path}: no such database file")
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise DatabaseError(f"{self.path}: not a readable HDF5 file (corrupt or truncated?): "
                                f"{err}") from err
        with f:
            fmt = f.attrs.get("format")
            if fmt != FORMAT:
                raise DatabaseError(f"{self.path}: an HDF5 file but not a hyperrec database "
                                    f"(format attribute {fmt!r}, expected {FORMAT!r})")
            version = int(f.attrs.get("schema_version", -1))
            if version != SCHEMA_VERSION:
                raise DatabaseError(f"{self.path}: schema version {version} is not supported "
                                    f"(this library reads version {SCHEMA_VERSION})")
            try:
                self._read_metadata(f)
            except (KeyError, ValueError, TypeError, OSError) as err:
                raise DatabaseError(f"{self.path}: damaged database: {err}") from err

    def _read_metadata(self, f: h5py.File) -> None:
        self.name = str(f.attrs["name"])
        self.space = SearchSpace.from_json(f.attrs["space"])
        self.epochs = int(f.attrs["epochs"])
        self.provenance = json.loads(f.attrs["provenance"])
        self.pairs = [Pair(tuple(p["sources"]), p["target"]) for p in json.loads(f.attrs["pairs"])]
        self.tasks = list(f["tasks/names"].asstr()[()])
        self.task_meta = [json.loads(m) for m in f["tasks/meta"].asstr()[()]]
        self.config_ids = f["configs/ids"][()]
        self.configs = [json.loads(c) for c in f["configs/config"].asstr()[()]]
        self.sources = [json.loads(c) for c in f["configs/source"].asstr()[()]]
        self.encodings = f["configs/encoding"][()]
        self.metrics = tuple(sorted(f["curves"]))
        shapes = {m: f["curves"][m].shape for m in self.metrics}
        self.profiles = max((s[0] for s in shapes.values()), default=0)
        T, C = len(self.tasks), len(self.config_ids)
        if len(self.task_meta) != T or len(self.configs) != C or self.encodings.shape != (
                C, self.space.dim) or len(self.sources) != C:
            raise ValueError("task or configuration tables have inconsistent lengths")
        for metric, shape in shapes.items():
            if shape != (self.profiles, T, C, self.epochs):
                raise ValueError(f"curves/{metric} has shape {shape}, expected "
                                 f"{(self.profiles, T, C, self.epochs)}")

    def __repr__(self) -> str:
        return (f"Database({self.name!r}: {len(self.tasks)} tasks x {len(self.configs)} "
                f"configurations x {self.profiles} profiles x {self.epochs} epochs, "
                f"metrics {list(self.metrics)})")

    # ------------------------------------------------------------------ lookups
    def task_index(self, tasks: str | Sequence[str]) -> np.ndarray:
        """Positions of task names in :attr:`tasks` (an unknown name raises ``KeyError``)."""
        names = [tasks] if isinstance(tasks, str) else list(tasks)
        where = {t: i for i, t in enumerate(self.tasks)}
        missing = [t for t in names if t not in where]
        if missing:
            raise KeyError(f"unknown task(s) {missing} in {self.name}; known: {self.tasks}")
        return np.array([where[t] for t in names], dtype=np.int64)

    def config_index(self, ids: Sequence[int]) -> np.ndarray:
        """Positions of configuration ids in :attr:`config_ids`."""
        where = {int(c): i for i, c in enumerate(self.config_ids)}
        missing = [int(c) for c in ids if int(c) not in where]
        if missing:
            raise KeyError(f"unknown configuration id(s) {missing} in {self.name}")
        return np.array([where[int(c)] for c in ids], dtype=np.int64)

    def pair(self, k: int) -> Pair:
        """The ``k``-th published train/test pair."""
        if not 0 <= k < len(self.pairs):
            raise IndexError(f"{self.name} has {len(self.pairs)} published pairs; got pair {k}")
        return self.pairs[k]

    def check_profile(self, profile: int) -> None:
        """Raise ``IndexError`` unless ``profile`` is one of the stored profiles."""
        if not 0 <= profile < self.profiles:
            raise IndexError(f"{self.name} has {self.profiles} profiles; got profile {profile}")

    # ------------------------------------------------------------------ curves
    def curves(self, metric: str = DEFAULT_METRIC, tasks: str | Sequence[str] | None = None,
               profile: int | None = None) -> np.ndarray:
        """Learning curves as float64 with NaN for unobserved cells.

        Returns:
            ``(P, T', C, E)``, or ``(T', C, E)`` when ``profile`` is given, with T' the requested
            tasks in the order given (all tasks by default).
        """
        if metric not in self.metrics:
            raise KeyError(f"metric {metric!r} is not in {self.name}; stored: {list(self.metrics)}")
        if profile is not None:
            self.check_profile(profile)
        index = np.arange(len(self.tasks)) if tasks is None else self.task_index(tasks)
        with h5py.File(self.path, "r") as f:
            data = f["curves"][metric]
            block = data[()] if profile is None else data[profile]
        return block[..., index, :, :] if profile is None else block[index]

    def best_values(self, task: str, metric: str = DEFAULT_METRIC, profile: int = 0) -> np.ndarray:
        """``(C,)`` each configuration's best value over epochs (NaN if never observed)."""
        curves = self.curves(metric, [task], profile)[0]
        with _quiet_nan_warnings():
            return np.nanmax(curves, -1) if higher_is_better(metric) else np.nanmin(curves, -1)

    def ranking(self, task: str, metric: str = DEFAULT_METRIC, profile: int = 0) -> np.ndarray:
        """``(C,)`` int64 rank of each configuration on ``task`` (0 = best).

        Configurations are ranked by their best-epoch value; ties are broken by configuration id
        (stable), as the published evaluation does; never-observed configurations rank last.
        """
        value = self.best_values(task, metric, profile)
        key = -value if higher_is_better(metric) else value
        order = np.lexsort((self.config_ids, np.where(np.isnan(key), np.inf, key)))
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return rank

    def best(self, task: str, metric: str = DEFAULT_METRIC, profile: int = 0) -> Best:
        """The rank-0 configuration of ``task`` with its best value and the epoch reaching it."""
        index = int(np.argmin(self.ranking(task, metric, profile)))
        curve = self.curves(metric, [task], profile)[0, index]
        if np.isnan(curve).all():
            raise DatabaseError(f"{self.name}: task {task!r} has no {metric} observations")
        epoch = int(np.nanargmax(curve) if higher_is_better(metric) else np.nanargmin(curve))
        return Best(index, int(self.config_ids[index]), float(curve[epoch]), epoch + 1)

    def batches(self, task: str, config_id: int, profile: int = 0) -> np.ndarray:
        """``(E, B, 4)`` per-batch training records of one run (see the module docstring)."""
        key = f"batches/{task}/{int(config_id)}/{int(profile)}"
        with h5py.File(self.path, "r") as f:
            if key not in f:
                raise KeyError(f"{self.name} has no batch records for task {task!r}, "
                               f"configuration {config_id}, profile {profile}")
            return f[key][()]

    def coverage(self, metric: str = DEFAULT_METRIC) -> float:
        """Fraction of the (profile, task, configuration, epoch) cells that are observed."""
        curves = self.curves(metric)
        return float(np.isfinite(curves).mean()) if curves.size else 0.0

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def edit(self) -> Iterator[DatabaseWriter]:
        """Change the database atomically: ``with db.edit() as w: w.add_tasks(...)``.

        Writes go to a copy that replaces the file only when the block ends without error, under
        an exclusive lock (one writer at a time). This object is refreshed afterwards.
        """
        with _locked(self.path):
            self._load()  # another writer may have changed the file since it was opened
            with atomic_file(self.path, copy_from=self.path) as tmp:
                with h5py.File(tmp, "r+") as f:
                    yield DatabaseWriter(f, self.space)
                Database(tmp)  # refuse to install a file this library cannot read back
            self._load()


@contextlib.contextmanager
def _quiet_nan_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
        yield


class DatabaseWriter:
    """Adds tasks, configurations, curves and pairs inside :meth:`Database.edit`."""

    def __init__(self, f: h5py.File, space: SearchSpace) -> None:
        self._f = f
        self.space = space

    def _append(self, key: str, values: Sequence[Any] | np.ndarray) -> None:
        data = self._f[key]
        n = data.shape[0]
        data.resize(n + len(values), axis=0)
        data[n:] = values

    def _names(self) -> list[str]:
        return list(self._f["tasks/names"].asstr()[()])

    def add_tasks(self, names: Sequence[str],
                  meta: Sequence[Mapping[str, Any]] | None = None) -> np.ndarray:
        """Append tasks (unique names). Returns their positions."""
        meta = list(meta) if meta is not None else [{} for _ in names]
        if len(meta) != len(names):
            raise DatabaseError(f"{len(names)} task names but {len(meta)} metadata entries")
        existing = set(self._names())
        clash = sorted({n for n in names if n in existing or list(names).count(n) > 1})
        if clash:
            raise DatabaseError(f"task names must be unique; already present or repeated: {clash}")
        start = len(existing)
        self._append("tasks/names", list(names))
        self._append("tasks/meta", [_json(dict(m)) for m in meta])
        self._grow_curves()
        return np.arange(start, start + len(names))

    def add_configs(self, configs: Sequence[Mapping[str, Any]], ids: Sequence[int] | None = None,
                    sources: Sequence[Mapping[str, Any]] | None = None) -> np.ndarray:
        """Append configurations (validated against the space). Returns their positions.

        Args:
            configs: Configurations in the space's form.
            ids: Their ids (default: consecutive after the largest existing id).
            sources: The form they were published in, kept for provenance.
        """
        valid = [self.space.validate(c) for c in configs]
        existing = self._f["configs/ids"][()]
        if ids is None:
            first = int(existing.max()) + 1 if len(existing) else 0
            ids = list(range(first, first + len(valid)))
        ids = [int(i) for i in ids]
        if len(ids) != len(valid) or len(set(ids)) != len(ids) or set(ids) & set(existing.tolist()):
            raise DatabaseError("configuration ids must be unique and one per configuration")
        start = len(existing)
        self._append("configs/ids", ids)
        self._append("configs/config", [_json(c) for c in valid])
        self._append("configs/source", [_json(dict(s)) for s in (sources or [{}] * len(valid))])
        self._append("configs/encoding", self.space.encode(valid))
        self._grow_curves()
        return np.arange(start, start + len(valid))

    def _grow_curves(self, profiles: int = 0) -> None:
        shape = (max(profiles, self._profiles()), self._f["tasks/names"].shape[0],
                 self._f["configs/ids"].shape[0], int(self._f.attrs["epochs"]))
        for data in self._f["curves"].values():
            data.resize(shape)

    def _profiles(self) -> int:
        return max((d.shape[0] for d in self._f["curves"].values()), default=0)

    def write_curves(self, metric: str, values: np.ndarray, *, tasks: Sequence[str],
                     profiles: Sequence[int] = (0,), config_ids: Sequence[int] | None = None,
                     epochs: Sequence[int] | None = None) -> None:
        """Write a block of curves.

        Args:
            metric: Metric name (lower-case, e.g. ``"val_acc"``); created on first write.
            values: ``(len(profiles), len(tasks), len(config_ids), len(epochs))`` floats; NaN
                marks cells not observed.
            tasks: Task names (already added).
            profiles: Profile indices; new profiles extend every metric with NaN.
            config_ids: Configuration ids (default: all, in stored order).
            epochs: Epoch numbers, 1-based (default: ``1 .. values.shape[-1]``).
        """
        if not _METRIC_NAME.match(metric):
            raise DatabaseError(f"bad metric name {metric!r} (lower-case letters, digits, _)")
        names = self._names()
        ids = self._f["configs/ids"][()]
        where_task = {t: i for i, t in enumerate(names)}
        where_cfg = {int(c): i for i, c in enumerate(ids)}
        try:
            t_idx = [where_task[t] for t in tasks]
            c_idx = (list(range(len(ids))) if config_ids is None
                     else [where_cfg[int(c)] for c in config_ids])
        except KeyError as err:
            raise DatabaseError(f"write_curves: unknown task or configuration id {err}") from None
        E = int(self._f.attrs["epochs"])
        e_idx = (list(range(np.shape(values)[-1])) if epochs is None
                 else [int(e) - 1 for e in epochs])
        values = np.asarray(values, dtype=np.float64)
        expected = (len(profiles), len(t_idx), len(c_idx), len(e_idx))
        if values.shape != expected:
            raise DatabaseError(f"write_curves({metric!r}): values have shape {values.shape}, "
                                f"expected (profiles, tasks, configs, epochs) = {expected}")
        if any(not 0 <= e < E for e in e_idx) or any(p < 0 for p in profiles):
            raise DatabaseError(f"write_curves: epochs must lie in [1, {E}], profiles be >= 0")
        if np.isinf(values).any():
            raise DatabaseError(f"write_curves({metric!r}): values must be finite or NaN")
        if metric not in self._f["curves"]:
            self._f["curves"].create_dataset(
                metric, shape=(self._profiles(), len(names), len(ids), E), dtype=np.float64,
                maxshape=(None, None, None, E), fillvalue=np.nan,
                chunks=(1, 1, max(1, len(ids)), E))
        self._grow_curves(max(profiles) + 1)
        data = self._f["curves"][metric]
        block = data[()]  # fancy-index in memory: h5py wants sorted, unique indices
        block[np.ix_(list(profiles), t_idx, c_idx, e_idx)] = values
        data[...] = block

    def write_batches(self, task: str, config_id: int, profile: int, epoch: int,
                      values: np.ndarray) -> None:
        """Store one epoch's ``(B, 4)`` per-batch training records of a run (B fixed per run)."""
        if task not in self._names() or int(config_id) not in set(self._f["configs/ids"][()]):
            raise DatabaseError(f"write_batches: unknown task {task!r} or configuration "
                                f"{config_id}")
        values = np.asarray(values, dtype=np.float64)
        E = int(self._f.attrs["epochs"])
        if values.ndim != 2 or values.shape[1] != 4 or not 1 <= epoch <= E:
            raise DatabaseError(f"write_batches: values must be (batches, 4) for an epoch in "
                                f"[1, {E}]; got {values.shape} at epoch {epoch}")
        key = f"batches/{task}/{int(config_id)}/{int(profile)}"
        if key not in self._f:
            self._f.create_dataset(key, shape=(E, *values.shape), dtype=np.float64,
                                   fillvalue=np.nan)
        data = self._f[key]
        if data.shape[1:] != values.shape:
            raise DatabaseError(f"write_batches: {key} holds {data.shape[1]} batches per epoch, "
                                f"got {values.shape[0]}")
        data[epoch - 1] = values

    def set_pairs(self, pairs: Sequence[Pair]) -> None:
        """Store train/test pairs (every task named must exist)."""
        names = set(self._names())
        for p in pairs:
            unknown = [t for t in (*p.sources, p.target) if t not in names]
            if unknown:
                raise DatabaseError(f"pair names unknown task(s) {unknown}")
        self._f.attrs["pairs"] = _json([{"sources": list(p.sources), "target": p.target}
                                        for p in pairs])
