"""autoHyper studies: the small CNN on an image task, the fixed longer training that judges a
learning rate (``at2 autohyper``, ``benchmarks/autohyper_digits.py``), and the comparison of a
database task's best learning rates with autoHyper's picks (:func:`learning_rate_study`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hyperrec.database import DEFAULT_METRIC, Database
from hyperrec.tasks import ImageTask
from hyperrec.training import evaluate, train_epoch

from .lr import AutoHyperResult, find_initial_lr, make_epoch_trainer, make_optimizer

log = logging.getLogger(__name__)


def small_cnn(channels: int, classes: int, width: int = 16) -> nn.Sequential:
    """Three 3x3 convolutions (width, 2 width, 4 width channels) with batch norm and ReLU, a
    2x2 max-pool after the second, global average pooling and a linear classifier."""
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(*block(channels, width), *block(width, 2 * width), nn.MaxPool2d(2),
                         *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4 * width, classes))


def loader(data: Dataset, batch_size: int, shuffle: bool = True) -> DataLoader:
    """A data loader shuffling with torch's global generator, which every training here seeds
    first (so a trial's batch order is fixed by its seed)."""
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle)


@dataclass(frozen=True)
class Training:
    """A fixed training recipe: ``epochs`` at a constant learning rate, batch ``batch_size``."""

    optimizer: str = "adam"
    epochs: int = 30
    batch_size: int = 64
    momentum: float = 0.9
    device: str = "cpu"


def accuracy_after_training(task: ImageTask, lr: float, seed: int, recipe: Training) -> float:
    """Top-1 test accuracy of :func:`small_cnn` trained on ``task.train`` by ``recipe``."""
    device = torch.device(recipe.device)
    torch.manual_seed(seed)
    model = small_cnn(task.channels, task.classes).to(device)
    opt = make_optimizer(recipe.optimizer, model.parameters(), lr, momentum=recipe.momentum)
    train = loader(task.train, recipe.batch_size)
    for _ in range(recipe.epochs):
        train_epoch(model, train, opt, device=device)
    return float(evaluate(model, loader(task.test, 512, shuffle=False),
                          device=device).accuracy[0])


def autohyper_on_task(task: ImageTask, recipe: Training, seed: int = 0,
                      out: str | Path | None = None, **search_options) -> AutoHyperResult:
    """Run :func:`find_initial_lr` with :func:`small_cnn` on ``task.train`` (trials use the
    recipe's optimizer and batch size); the trial history goes to ``out/trials.csv``."""
    trainer = make_epoch_trainer(lambda: small_cnn(task.channels, task.classes),
                                 loader(task.train, recipe.batch_size),
                                 classes=task.classes, optimizer=recipe.optimizer,
                                 momentum=recipe.momentum, device=recipe.device, seed=seed)
    csv_path = Path(out) / "trials.csv" if out is not None else None
    if csv_path is not None:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
    return find_initial_lr(trainer, csv_path=csv_path, **search_options)


def lr_grid(low: float = 1e-4, high: float = 1e-1, points: int = 10) -> np.ndarray:
    """The comparison grid: ``points`` log-spaced learning rates from ``low`` to ``high``."""
    return np.logspace(np.log10(low), np.log10(high), points)



HYPERREC_OPTIMIZERS = {"adam": "Adam", "sgd": "Momentum"}
"""autoHyper's optimizer names -> the HyperRec space's."""


def learning_rate_study(db: Database, task: str, picks: Mapping[str, float], *,
                        metric: str = DEFAULT_METRIC, profile: int = 0, top: int = 10
                        ) -> list[dict[str, Any]]:
    """How the learning rates of a task's best configurations compare with autoHyper's picks.

    For each optimizer in ``picks`` (``"adam"``/``"sgd"`` -> learning rate), among the
    configurations of that optimizer observed on ``task``: the best one's learning rate, the
    geometric mean learning rate of the ``top`` best, autoHyper's pick and its factor to that mean,
    and the Spearman correlation between a configuration's rank and its learning rate's log
    distance to the pick (positive: configurations closer to autoHyper's choice rank better).
    """
    if not all({"optimizer", "lr"} <= config.keys() for config in db.configs):
        raise ValueError(f"{db.name}: the study needs configurations with an 'optimizer' and an "
                         f"'lr' (the HyperRec space); this database's space is {db.space.name!r}")
    rank = db.ranking(task, metric, profile)
    observed = ~np.isnan(db.best_values(task, metric, profile))
    rows = []
    for name, pick in picks.items():
        family = HYPERREC_OPTIMIZERS.get(name, name)
        members = np.flatnonzero(observed & np.array([c["optimizer"] == family
                                                      for c in db.configs]))
        if members.size == 0:
            raise ValueError(f"task {task!r} has no observed {family} configuration")
        members = members[np.argsort(rank[members])]
        lrs = np.array([db.configs[i]["lr"] for i in members])
        best = lrs[:top]
        geo = float(np.exp(np.log(best).mean()))
        distance = np.abs(np.log(lrs / pick))
        rho = float(spearmanr(distance, rank[members]).statistic) if members.size > 2 else None
        rho = None if rho is None or np.isnan(rho) else rho  # JSON has no NaN
        rows.append({"optimizer": family, "configurations": int(members.size),
                     "best_config_id": int(db.config_ids[members[0]]), "best_lr": float(lrs[0]),
                     f"top{top}_geomean_lr": geo, "autohyper_lr": float(pick),
                     "autohyper_over_top": float(pick / geo), "spearman_rank_vs_distance": rho})
    return rows
