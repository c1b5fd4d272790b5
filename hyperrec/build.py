"""Build learning curves: train HyperRec configurations on an image task and record them.

A *run* is one (task, configuration, profile) trained for ``epochs`` epochs exactly as the
configuration says (:func:`make_model`, :func:`make_optimizer`, :func:`make_scheduler`; the
scheduler steps once per epoch). Per epoch it records the training batches' cross-entropy and
top-1/5/10 accuracy, the training time, and on validation and test separately the cross-entropy,
top-1/5/10 accuracy and evaluation time (:data:`EPOCH_METRICS`).

Safety and resumption: a worker keeps its run's state in a checkpoint (model, optimizer,
scheduler, random states and every finished epoch's records) replaced atomically after each
epoch; workers never open the database. The driver (:func:`build`) is its single writer: it
writes what the workers report, from their return values and, while runs are in progress, from
their checkpoints. A killed build therefore loses at most the epoch in progress; rerunning it
writes anything checkpointed but not yet recorded and continues every unfinished run from its
checkpoint. Runs already complete in the database are never retrained.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .database import Database, DatabaseError, atomic_file
from .options import check_option
from .parallel import start_ray
from .space import SearchSpace
from .spaces import hyperrec_space, to_published
from .tasks import ImageTask, load_task
from .training import TOPK, evaluate, train_epoch

log = logging.getLogger(__name__)

EPOCH_METRICS = ("val_acc", "val_top5", "val_top10", "val_loss", "val_time",
                 "test_acc", "test_top5", "test_top10", "test_loss", "test_time", "train_time")
"""Per-epoch metrics a run records (accuracies in [0, 1], times in seconds)."""
EVAL_BATCH = 512


@dataclass(frozen=True)
class TaskSpec:
    """How workers load the task: ``spec`` (``"digits"`` or a folder), split seed, image size,
    and the task's name in the database."""

    spec: str
    name: str
    split_seed: int = 0
    image_size: int = 32

    def load(self) -> ImageTask:
        return load_task(self.spec, split_seed=self.split_seed, image_size=self.image_size)


@dataclass(frozen=True)
class Run:
    """One run: a configuration (space form, with its database id) trained on the task as
    profile ``profile`` for ``epochs`` epochs, on ``device`` (mixed precision with ``amp``).
    :func:`plan_build` validates the configurations it plans; a run itself may carry one
    outside the space (a learning rate refined by autoHyper)."""

    task: TaskSpec
    config_id: int
    config: Mapping[str, Any]
    profile: int
    epochs: int
    device: str = "cpu"
    amp: bool = False

    @property
    def seed(self) -> int:
        """The training seed: a function of (profile, configuration id) only."""
        return int(np.random.SeedSequence([self.profile, self.config_id]).generate_state(1)[0])

    def checkpoint(self, work: Path) -> Path:
        """The run's training state (model, optimizer, scheduler, random states, records)."""
        return work / self.task.name / f"{self.config_id}-{self.profile}.pt"

    def records_file(self, work: Path) -> Path:
        """The run's records alone (small: what the driver reads while the run progresses)."""
        return work / self.task.name / f"{self.config_id}-{self.profile}.records.pt"


@dataclass
class RunRecords:
    """Records of a run's finished epochs: ``epoch[m]`` lists one value per epoch for each of
    :data:`EPOCH_METRICS`; ``batches`` one ``(B, 4)`` array per epoch."""

    epoch: dict[str, list[float]] = field(
        default_factory=lambda: {m: [] for m in EPOCH_METRICS})
    batches: list[np.ndarray] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.batches)


# ---------------------------------------------------------------------- the configuration
def make_model(config: Mapping[str, Any], channels: int, classes: int) -> nn.Module:
    """torchvision's untrained ResNet34/ResNet50 with ``classes`` outputs and a first
    convolution taking ``channels`` input channels."""
    from torchvision import models

    model = {"ResNet34": models.resnet34, "ResNet50": models.resnet50}[config["model"]](
        weights=None, num_classes=classes)
    if channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def make_optimizer(config: Mapping[str, Any], params: Iterable[nn.Parameter],
                   validate: bool = True) -> torch.optim.Optimizer:
    """Adam (lr, weight decay, betas) or SGD with momentum (lr, weight decay, momentum).
    ``validate=False`` admits values outside the space (see :func:`to_published`)."""
    published = to_published(hyperrec_space(), config, validate=validate)
    kwargs = dict(published["optimizer_param"])
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return getattr(torch.optim, published["optimizer"])(params, **kwargs)


def make_scheduler(config: Mapping[str, Any], optimizer: torch.optim.Optimizer,
                   validate: bool = True) -> torch.optim.lr_scheduler.LRScheduler:
    """The configuration's scheduler with its parameters, as published (CyclicLR in
    ``exp_range`` mode from the learning rate). It is stepped once per epoch."""
    published = to_published(hyperrec_space(), config, validate=validate)
    return getattr(torch.optim.lr_scheduler, published["scheduler"])(
        optimizer, **published["scheduler_param"])


# ---------------------------------------------------------------------- a worker's run
def _loader(data, batch_size: int, generator: torch.Generator | None = None) -> DataLoader:
    return DataLoader(data, batch_size=batch_size, shuffle=generator is not None,
                      generator=generator)


def train_run(run: Run, work: str | Path, threads: int | None = None,
              progress: bool = False) -> RunRecords:
    """Train ``run`` from its checkpoint (if any) to ``run.epochs``; returns every epoch's
    records. The checkpoint under ``work`` is replaced atomically after each epoch."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(run.device)
    task = run.task.load()
    torch.manual_seed(run.seed)
    model = make_model(run.config, task.channels, task.classes).to(device)
    optimizer = make_optimizer(run.config, model.parameters(), validate=False)
    scheduler = make_scheduler(run.config, optimizer, validate=False)
    shuffle = torch.Generator().manual_seed(run.seed)
    records = RunRecords()
    path = run.checkpoint(Path(work))
    if path.is_file():
        state = torch.load(path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        shuffle.set_state(state["shuffle"])
        torch.set_rng_state(state["torch_rng"])
        records = RunRecords(state["epoch"], list(state["batches"]))
    train = _loader(task.train, int(run.config["batch_size"]), shuffle)
    val, test = _loader(task.validation, EVAL_BATCH), _loader(task.test, EVAL_BATCH)
    for epoch in tqdm(range(records.epochs + 1, run.epochs + 1), desc=f"run {run.config_id}-"
                      f"{run.profile}", leave=False, disable=not progress):
        trained = train_epoch(model, train, optimizer, device=device, amp=run.amp)
        scheduler.step()
        results = {"val": evaluate(model, val, device=device),
                   "test": evaluate(model, test, device=device)}
        for split, ev in results.items():
            names = ("acc", *(f"top{k}" for k in TOPK[1:]))
            for name, value in zip(names, ev.accuracy):
                records.epoch[f"{split}_{name}"].append(float(value))
            records.epoch[f"{split}_loss"].append(ev.loss)
            records.epoch[f"{split}_time"].append(ev.seconds)
        records.epoch["train_time"].append(trained.seconds)
        records.batches.append(np.column_stack([trained.loss, trained.accuracy]))
        path.parent.mkdir(parents=True, exist_ok=True)
        saved = {"epoch": records.epoch, "batches": records.batches}
        with atomic_file(path) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "shuffle": shuffle.get_state(),
                        "torch_rng": torch.get_rng_state(), **saved, "run": asdict(run)}, tmp)
        with atomic_file(run.records_file(Path(work))) as tmp:
            torch.save(saved, tmp)
        log.debug("run %s-%s epoch %d: val acc %.3f", run.config_id, run.profile, epoch,
                  records.epoch["val_acc"][-1])
    return records


def checkpointed_records(run: Run, work: str | Path) -> RunRecords | None:
    """The records ``run``'s worker has saved so far, or None when it has none (read-only; the
    small records file, not the training state). After a kill between the two files it may lag
    the checkpoint by an epoch, which the resumed worker then reports."""
    path = run.records_file(Path(work))
    if not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=False)
    return RunRecords(saved["epoch"], list(saved["batches"]))


# ---------------------------------------------------------------------- the driver
def write_records(db: Database, run: Run, records: RunRecords, done: int) -> int:
    """Write epochs ``done+1 ..`` of ``records`` into the database; returns epochs now done."""
    if records.epochs <= done:
        return done
    epochs = list(range(done + 1, records.epochs + 1))
    with db.edit() as w:
        for metric in EPOCH_METRICS:
            values = np.asarray(records.epoch[metric][done:], dtype=float)
            w.write_curves(metric, values.reshape(1, 1, 1, -1), tasks=[run.task.name],
                           profiles=[run.profile], config_ids=[run.config_id], epochs=epochs)
        for epoch in epochs:
            w.write_batches(run.task.name, run.config_id, run.profile, epoch,
                            records.batches[epoch - 1])
    return records.epochs


def epochs_done(db: Database, task: str, config_ids: Sequence[int], profiles: int) -> np.ndarray:
    """``(profiles, len(config_ids))`` number of leading epochs recorded for each run."""
    if task not in db.tasks or EPOCH_METRICS[0] not in db.metrics:
        return np.zeros((profiles, len(config_ids)), dtype=int)
    curves = np.full((profiles, len(config_ids), db.epochs), np.nan)
    have = min(profiles, db.profiles)
    stored = db.curves(EPOCH_METRICS[0], [task])[:have, 0][:, db.config_index(config_ids)]
    curves[:have] = stored
    return np.cumprod(~np.isnan(curves), axis=-1).sum(-1)


def _run_worker(run: Run, work: str, threads: int) -> RunRecords:
    from .cli import setup_logging

    setup_logging(quiet=True)
    return train_run(run, work, threads)


Submit = Callable[[Sequence[Run], str, int, int], Iterable[tuple[Run, RunRecords | None]]]


def _process_pool(runs: Sequence[Run], work: str, workers: int, threads: int,
                  poll: float = 10.0) -> Iterable[tuple[Run, RunRecords | None]]:
    """Runs in spawned processes; yields ``(run, records)`` when a run ends and ``(run, None)``
    for every run still going every ``poll`` seconds (the driver then reads its checkpoint)."""
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_run_worker, r, work, threads): r for r in runs}
        while futures:
            done, _ = wait(futures, timeout=poll, return_when=FIRST_COMPLETED)
            for future in done:
                yield futures.pop(future), future.result()
            for run in list(futures.values()):
                yield run, None


def _ray(runs: Sequence[Run], work: str, workers: int, threads: int, address: str | None = None,
         poll: float = 10.0) -> Iterable[tuple[Run, RunRecords | None]]:
    """As :func:`_process_pool` on a Ray cluster (local, or the one at ``address``); records come
    back as the tasks' return values, so workers need no shared file system beyond ``work``."""
    ray = start_ray(address, workers, threads)
    remote = ray.remote(num_cpus=threads)(_run_worker)
    refs = {remote.remote(r, work, threads): r for r in runs}
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1, timeout=poll)
        for ref in done:
            yield refs.pop(ref), ray.get(ref)
        for run in list(refs.values()):
            yield run, None


@dataclass(frozen=True)
class BuildPlan:
    """What :func:`build` will do: the database, the task, the runs and how many epochs of
    each are already recorded."""

    database: Path
    task: TaskSpec
    runs: list[Run]
    done: dict[tuple[int, int], int]


def plan_build(out: str | Path, task: TaskSpec, *, configs: int | None = None,
               config_ids: Sequence[int] | None = None, config_seed: int = 0, seeds: int = 2,
               epochs: int = 75, device: str = "cpu", amp: bool = False) -> BuildPlan:
    """Validate everything and prepare the database, before any training.

    A new database file gets ``configs`` configurations sampled from the HyperRec space with
    ``config_seed``; an existing one (e.g. a copy of the published HyperRec database) keeps its
    configurations: ``config_ids``, or ``configs`` of them chosen with ``config_seed``, or all.
    The task is added if new; an existing task must have been split the same way.
    """
    for name, value, low in (("seeds", seeds, 1), ("epochs", epochs, 1),
                             ("config_seed", config_seed, 0)):
        check_option(name, value, int, low)
    if configs is not None:
        check_option("configs", configs, int, 1)
    loaded = task.load()  # bad task paths and empty folders fail here
    out = Path(out)
    space: SearchSpace = hyperrec_space()
    if out.exists():
        db = Database.open(out)
        if db.space != space:
            raise DatabaseError(f"{out}: the builder trains HyperRec configurations; this "
                                f"database's space is {db.space.name!r}")
        if epochs > db.epochs:
            raise ValueError(f"--epochs {epochs} exceeds the database's {db.epochs} epochs")
        if configs and configs > len(db.config_ids):
            raise ValueError(f"--configs {configs} exceeds the {len(db.config_ids)} "
                             f"configurations of {out}")
        ids = (list(config_ids) if config_ids is not None else
               sorted(np.random.default_rng(config_seed).choice(
                   db.config_ids, size=configs, replace=False).tolist()) if configs else
               db.config_ids.tolist())
        db.config_index(ids)
    else:
        if not configs:
            raise ValueError(f"{out} does not exist: give --configs N to sample N configurations")
        with Database.build(out, space, name="HyperRec-built", epochs=epochs,
                            provenance={"builder": "hyperrec build"}) as w:
            w.add_configs(space.sample(configs, seed=config_seed))
        db = Database.open(out)
        ids = db.config_ids.tolist()
    if task.name in db.tasks:
        stored = db.task_meta[db.tasks.index(task.name)]
        if stored.get("split_seed") != task.split_seed or stored.get("images") != len(
                loaded.train) + len(loaded.validation) + len(loaded.test):
            raise DatabaseError(f"{out}: task {task.name!r} exists with a different data set or "
                                f"split ({stored}); choose another --task-name")
    else:
        with db.edit() as w:
            w.add_tasks([task.name], [loaded.meta])
    configs_by_id = dict(zip(db.config_ids.tolist(), db.configs))
    for cid in ids:
        space.validate(configs_by_id[cid])
    done = epochs_done(db, task.name, ids, seeds)
    runs = [Run(task, cid, configs_by_id[cid], p, epochs, device, amp)
            for p in range(seeds) for cid in ids]
    return BuildPlan(out, task, runs,
                     {(r.config_id, r.profile): int(done[r.profile, i % len(ids)])
                      for i, r in enumerate(runs)})


def build(plan: BuildPlan, *, workers: int = 1, backend: str = "process",
          address: str | None = None, work: str | Path | None = None,
          poll: float = 10.0) -> Database:
    """Train every unfinished run of ``plan`` and record it (see the module docstring).

    Args:
        workers: Parallel runs (processes or Ray tasks); each gets ``cores // workers`` threads.
        backend: ``"process"`` or ``"ray"``.
        address: Ray cluster address (default: start a local one).
        work: Checkpoint folder (default ``<database>.build/`` beside the file).
        poll: Seconds between the driver's checkpoint reads while runs are in progress.
    """
    db = Database.open(plan.database)
    work = Path(work) if work is not None else plan.database.with_name(
        plan.database.name + ".build")
    done = dict(plan.done)
    for run in plan.runs:  # epochs a previous, interrupted build checkpointed but never wrote
        records = checkpointed_records(run, work)
        if records is not None:
            done[run.config_id, run.profile] = write_records(db, run, records,
                                                      done[run.config_id, run.profile])
    todo = [r for r in plan.runs if done[r.config_id, r.profile] < r.epochs]
    log.info("%d runs, %d already complete", len(plan.runs), len(plan.runs) - len(todo))
    if not todo:
        return db
    workers = max(1, min(workers, len(todo)))
    threads = max(1, (os.cpu_count() or 1) // workers)
    total = sum(r.epochs for r in todo)
    stream: Iterable[tuple[Run, RunRecords | None]]
    if backend == "process" and workers == 1:
        stream = ((r, train_run(r, work, threads, progress=True)) for r in todo)
    elif backend == "process":
        stream = _process_pool(todo, str(work), workers, threads, poll)
    elif backend == "ray":
        stream = _ray(todo, str(work), workers, threads, address, poll)
    else:
        raise ValueError(f"unknown backend {backend!r}; choose process or ray")
    with tqdm(total=total, initial=sum(done[r.config_id, r.profile] for r in todo),
              desc="epochs", unit="epoch") as bar:
        for run, records in stream:
            key = run.config_id, run.profile
            if records is None:  # in progress: record what its checkpoint holds so far
                records = checkpointed_records(run, work)
                if records is None:
                    continue
            before = done[key]
            done[key] = write_records(db, run, records, before)
            bar.update(done[key] - before)
            if done[key] == run.epochs and before < run.epochs:
                for done_file in (run.checkpoint(work), run.records_file(work)):
                    done_file.unlink(missing_ok=True)  # recorded: the files are not needed
                log.info("run %s (configuration %d, profile %d) finished: val acc %.3f",
                         run.task.name, run.config_id, run.profile, records.epoch["val_acc"][-1])
    return db
