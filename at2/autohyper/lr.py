"""autoHyper: choose a configuration's initial learning rate (and optionally weight decay) from
short training trials, by the zero-rank response of its convolution weights.

A trial trains a fresh model for ``epochs_per_trial`` epochs at one hyper-parameter point; its
response is the fraction of convolution unfoldings with EVBMF rank 0, averaged over the trial's
epochs (1 = nothing learned, 0 = every layer learned structure). Trials whose low-fidelity curve
shows divergence or no learning (a non-finite training loss, or a last-epoch training accuracy
below ``min_accuracy_ratio`` times chance) get response 1: exploding weights look "structured" to
EVBMF, and the search must not walk into them.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from hyperrec.database import atomic_file
from hyperrec.training import train_epoch

from .metrics import LowRankMetrics, low_rank_metrics
from .search import learning_rate, trust_region_search, weight_decay

log = logging.getLogger(__name__)
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TrialCurves:
    """What an epoch trainer returns for one trial: per-epoch training loss and top-1
    accuracy ``(epochs_run,)``, the low-rank metrics after each epoch, the number of classes, and
    ``epochs_run`` < requested when training stopped early on a non-finite loss."""

    train_loss: np.ndarray
    train_accuracy: np.ndarray
    metrics: tuple[LowRankMetrics, ...]
    classes: int


EpochTrainer = Callable[[Mapping[str, float], int], TrialCurves]
"""``trainer(hparams, epochs)``: train a fresh model with ``hparams`` (``lr``, optionally
``weight_decay``) for ``epochs`` epochs and return its :class:`TrialCurves`."""


def make_optimizer(name: str, params: Iterable[nn.Parameter], lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """``adam`` (default betas) or ``sgd`` with ``momentum``."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")


OptimizerFactory = Callable[[Iterable[nn.Parameter], Mapping[str, float]], torch.optim.Optimizer]
"""``factory(params, hparams)``: an optimizer for ``params`` with the trial's hyper-parameters."""


def named_optimizer(name: str, momentum: float = 0.9) -> OptimizerFactory:
    """The :data:`OptimizerFactory` of ``"adam"`` or ``"sgd"`` (with ``momentum``) reading
    ``lr`` and, when searched, ``weight_decay`` from the trial's hyper-parameters."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")

    def factory(params: Iterable[nn.Parameter], h: Mapping[str, float]) -> torch.optim.Optimizer:
        return make_optimizer(name, params, h["lr"], h.get("weight_decay", 0.0), momentum)
    return factory


def make_epoch_trainer(model_factory: Callable[[], nn.Module], train_loader: Iterable, *,
                       classes: int, optimizer: str | OptimizerFactory = "adam",
                       momentum: float = 0.9, device: str | torch.device = "cpu",
                       seed: int = 0) -> EpochTrainer:
    """An :data:`EpochTrainer` training ``model_factory()`` on ``train_loader`` with a constant
    learning rate. ``optimizer``: ``"adam"``, ``"sgd"`` (with ``momentum``) or an
    :data:`OptimizerFactory`. Every trial re-seeds torch with ``seed`` (same initial weights and
    batch order for every point, so responses differ only by the hyper-parameters)."""
    factory = named_optimizer(optimizer, momentum) if isinstance(optimizer, str) else optimizer
    device = torch.device(device)

    def trainer(hparams: Mapping[str, float], epochs: int) -> TrialCurves:
        torch.manual_seed(seed)
        model = model_factory().to(device)
        opt = factory(model.parameters(), hparams)
        loss, accuracy, metrics = [], [], []
        for _ in range(epochs):
            record = train_epoch(model, train_loader, opt, device=device)
            loss.append(record.loss.mean())
            accuracy.append(record.accuracy[:, 0].mean())
            finite = bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())
            if not (np.isfinite(loss[-1]) and finite):
                break
            metrics.append(low_rank_metrics(model))
        return TrialCurves(np.asarray(loss), np.asarray(accuracy), tuple(metrics), classes)

    return trainer


@dataclass(frozen=True)
class Trial:
    """One autoHyper trial: its hyper-parameters, response, whether its curve was accepted
    (False: diverged or did not learn), last-epoch training loss and accuracy, epochs trained and
    wall seconds."""

    index: int
    hparams: dict[str, float]
    response: float
    accepted: bool
    train_loss: float
    train_accuracy: float
    epochs: int
    seconds: float


@dataclass(frozen=True)
class AutoHyperResult:
    """The chosen hyper-parameters, whether the search converged, and every trial in order."""

    values: dict[str, float]
    converged: bool
    trials: list[Trial] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return sum(t.epochs for t in self.trials)

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.trials)

    def write_csv(self, path: str | Path) -> None:
        """One row per trial: index, hyper-parameters, response, accepted, loss, accuracy,
        epochs, seconds (written atomically)."""
        names = list(self.trials[0].hparams) if self.trials else list(self.values)
        with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["trial", *names, "response", "accepted", "train_loss",
                             "train_accuracy", "epochs", "seconds"])
            for t in self.trials:
                writer.writerow([t.index, *(t.hparams[n] for n in names), t.response,
                                 int(t.accepted), t.train_loss, t.train_accuracy, t.epochs,
                                 t.seconds])


def trial_response(curves: TrialCurves, epochs: int, min_accuracy_ratio: float = 2.0
                   ) -> tuple[float, bool]:
    """(response, accepted) of a trial's curves; see the module docstring."""
    learned = (len(curves.metrics) == epochs and bool(np.isfinite(curves.train_loss).all())
               and curves.train_accuracy[-1] >= min_accuracy_ratio / curves.classes)
    if not learned:
        return 1.0, False
    return float(np.mean([m.zero_rank_fraction for m in curves.metrics])), True


def find_initial_lr(epoch_trainer: EpochTrainer, *, lr_start: float = 1e-4,
                    lr_scale: float = 1.45, tune_weight_decay: bool = False,
                    weight_decay_start: float = 0.0, weight_decay_scale: float = 2.0,
                    weight_decay_floor: float = 1e-5, epochs_per_trial: int = 5,
                    min_accuracy_ratio: float = 2.0, start_threshold: float = 0.85,
                    zeta_power: float = 0.8, zeta_threshold: float = 5e-3,
                    shrink_rate: float = 2.5, tolerance: float = 5e-3, max_trials: int = 100,
                    csv_path: str | Path | None = None, progress: bool = True
                    ) -> AutoHyperResult:
    """Search the initial learning rate (and weight decay with ``tune_weight_decay``).

    Defaults are the method's: lr from 1e-4 by factors of 1.45, weight decay from 0 by factors
    of 2 (first step up to ``weight_decay_floor``), 5 epochs per trial, and the search constants of
    :func:`at2.autohyper.search.trust_region_search`. ``csv_path`` receives the trial history,
    rewritten after every trial.
    """
    dims = [learning_rate(lr_start, lr_scale)]
    if tune_weight_decay:
        dims.append(weight_decay(weight_decay_start, weight_decay_scale, weight_decay_floor))
    trials: list[Trial] = []
    bar = tqdm(desc="autoHyper trials", unit="trial", disable=not progress)

    def respond(hparams: Mapping[str, float]) -> float:
        start = time.perf_counter()
        curves = epoch_trainer(hparams, epochs_per_trial)
        response, accepted = trial_response(curves, epochs_per_trial, min_accuracy_ratio)
        trial = Trial(len(trials), dict(hparams), response, accepted,
                      float(curves.train_loss[-1]), float(curves.train_accuracy[-1]),
                      len(curves.train_loss), time.perf_counter() - start)
        trials.append(trial)
        log.info("trial %d %s: response %.3f%s (loss %.3f, accuracy %.3f, %.1f s)", trial.index,
                 hparams, response, "" if accepted else " [rejected]", trial.train_loss,
                 trial.train_accuracy, trial.seconds)
        bar.update()
        bar.set_postfix(lr=f"{hparams['lr']:.3g}", response=f"{response:.2f}")
        if csv_path is not None:
            AutoHyperResult({}, False, trials).write_csv(csv_path)
        return response

    try:
        outcome = trust_region_search(
            respond, dims, start_threshold=start_threshold, zeta_power=zeta_power,
            zeta_threshold=zeta_threshold, shrink_rate=shrink_rate, tolerance=tolerance,
            max_trials=max_trials)
    finally:
        bar.close()
    result = AutoHyperResult(outcome.values, outcome.converged, trials)
    if csv_path is not None:
        result.write_csv(csv_path)
    log.info("autoHyper chose %s after %d trials (%d epochs, %.1f s)", outcome.values,
             len(trials), result.epochs, result.seconds)
    return result
