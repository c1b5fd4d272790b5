"""Live tuning: AT2's queries answered by training, then the recommendation's full training.

Each query trains the chosen configuration on the target task for its next epoch (resuming from
the run's checkpoint, :func:`hyperrec.build.train_run`), records the epoch into the database
(this process is its single writer) and tells the tuner the validation accuracy. After the
budget, the recommended configuration is trained from scratch for ``final_epochs``; with
``autohyper`` its learning rate is first refined by :func:`at2.autohyper.find_initial_lr` (the
trials use the configuration's model, optimizer and batch size at a constant learning rate), and
the parameters derived from the learning rate keep their ratio to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hyperrec.build import (
    Run,
    TaskSpec,
    make_model,
    make_optimizer,
    plan_build,
    train_run,
    write_records,
)
from hyperrec.database import Database
from hyperrec.options import check_option
from hyperrec.spaces import with_learning_rate

from .autohyper.lr import AutoHyperResult, find_initial_lr, make_epoch_trainer
from .task_kernel import DEFAULT_TASK_PSD
from .tuner import ENGINES, AT2Tuner, check_engine
from .warp import DEFAULT_WARP

log = logging.getLogger(__name__)


@dataclass
class LiveResult:
    """A live run: one row per query (``index``, ``config_id``, ``epoch``, ``value``, ``ucb``,
    ``mean``, ``recommended``, ``seconds``), the recommendation, the configuration finally
    trained (its learning rate refined when autoHyper ran), the autoHyper search if any, the
    final training's per-epoch ``val_acc`` / ``test_acc``, and the surrogate's warp as resolved."""

    queries: list[dict[str, Any]] = field(default_factory=list)
    recommended: int | None = None
    final_config: dict[str, Any] = field(default_factory=dict)
    autohyper: AutoHyperResult | None = None
    final: dict[str, list[float]] = field(default_factory=dict)
    warp: str | None = None

    def summary(self) -> dict[str, Any]:
        ah = self.autohyper
        return {"queries": self.queries, "recommended": self.recommended,
                "final_config": self.final_config, "final": self.final, "warp": self.warp,
                "autohyper": None if ah is None else {
                    "values": ah.values, "converged": ah.converged, "trials": len(ah.trials),
                    "epochs": ah.epochs, "seconds": ah.seconds}}


def refine_learning_rate(config: Mapping[str, Any], task: TaskSpec, *, device: str = "cpu",
                         seed: int = 0, csv_path: str | Path | None = None,
                         progress: bool = True, **options: Any) -> AutoHyperResult:
    """autoHyper on a HyperRec configuration: trials train its model with its optimizer (and its
    other optimizer parameters) and batch size at the trial's constant learning rate."""
    data = task.load()
    loader = DataLoader(data.train, batch_size=int(config["batch_size"]), shuffle=True)
    trainer = make_epoch_trainer(
        lambda: make_model(config, data.channels, data.classes), loader, classes=data.classes,
        optimizer=lambda params, h: make_optimizer(with_learning_rate(config, h["lr"]), params,
                                                   validate=False),
        device=device, seed=seed)
    return find_initial_lr(trainer, csv_path=csv_path, progress=progress, **options)


def tune_live(database: str | Path, sources: Sequence[str], task: TaskSpec, *, budget: int,
              out: str | Path, final_epochs: int | None = None, autohyper: bool = False,
              autohyper_options: Mapping[str, Any] | None = None, engine: str = "exact",
              engine_options: Mapping[str, Any] | None = None, beta: float = 0.25,
              task_psd: str = DEFAULT_TASK_PSD, warp: str = DEFAULT_WARP,
              restarts: int | None = None, offset: float | None = None, seed: int = 0,
              device: str = "cpu", progress: bool = True) -> LiveResult:
    """Tune ``task`` live with AT2 (``sources`` from ``database``), then train the
    recommendation for ``final_epochs`` (default: the database's epochs). Checkpoints go to
    ``out/runs`` (queries) and ``out/final``; the target's queried epochs are written to the
    database as profile 0 of the task. Bad settings are refused before the task is added to the
    database or anything is trained."""
    out = Path(out)
    check_engine(engine, engine_options)
    for name, value in (("final_epochs", final_epochs), ("restarts", restarts)):
        if value is not None:
            check_option(name, value, int, 1)
    if offset is not None:
        ENGINES[engine].check_offset(offset)
    db = Database.open(database)
    check_option("budget", budget, int, 0, len(db.configs) * db.epochs)  # the target's cells
    plan = plan_build(database, task, seeds=1, epochs=db.epochs, device=device)
    db = Database.open(database)
    configs = {r.config_id: r.config for r in plan.runs}
    tuner = AT2Tuner(db, sources, task.name, engine=engine, engine_options=engine_options,
                     beta=beta, task_psd=task_psd, warp=warp, restarts=restarts, offset=offset,
                     seed=seed, device=device)
    result = LiveResult(warp=tuner.warp_name)
    tuner.prepare(progress)
    for index in tqdm(range(1, budget + 1), desc=f"live {task.name}", disable=not progress):
        start = time.perf_counter()
        query = tuner.ask()
        run = Run(task, query.config_id, configs[query.config_id], 0, query.epoch, device)
        records = train_run(run, out / "runs")
        write_records(db, run, records, query.epoch - 1)
        value = records.epoch["val_acc"][query.epoch - 1]
        tuner.tell(query.config_id, query.epoch, value)
        result.queries.append({"index": index, "config_id": query.config_id,
                               "epoch": query.epoch, "value": value, "ucb": query.ucb,
                               "mean": query.mean, "recommended": tuner.recommend(),
                               "seconds": time.perf_counter() - start})
    result.recommended = tuner.recommend() if budget else None
    if result.recommended is None:
        return result
    config = dict(configs[result.recommended])
    if autohyper:
        result.autohyper = refine_learning_rate(config, task, device=device, seed=seed,
                                                csv_path=out / "autohyper.csv",
                                                progress=progress, **(autohyper_options or {}))
        config = with_learning_rate(config, result.autohyper.values["lr"])
    result.final_config = config
    final = train_run(Run(task, result.recommended, config, 0, final_epochs or db.epochs, device),
                      out / "final", progress=progress)
    result.final = {"val_acc": final.epoch["val_acc"], "test_acc": final.epoch["test_acc"]}
    log.info("live %s: recommended configuration %d, final val acc %.3f, test acc %.3f",
             task.name, result.recommended, final.epoch["val_acc"][-1],
             final.epoch["test_acc"][-1])
    return result
