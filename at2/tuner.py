"""Ask/tell tuning over the (configuration, epoch) cells of a target task.

:class:`Tuner` holds what every method shares: the grid of source and target curves, the rule that
a configuration's epochs are observed in order (one query = one epoch), the seeded generator, and
:meth:`Tuner.tune`, which replays the target's curves from the database as the oracle and records
each query. :class:`AT2Tuner` chooses queries with the AT2 surrogate and UCB.

Epochs are 1-based everywhere in this API: ``epoch`` is the number of epochs trained.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from hyperrec.database import DEFAULT_METRIC, Database, higher_is_better
from hyperrec.options import check_option
from hyperrec.training import resolve_device

from .acquisition import UpperConfidenceBound, best_cell
from .exact import ExactEngine
from .model import AT2Surrogate, CurveGrid
from .task_kernel import DEFAULT_TASK_PSD
from .variational import VariationalEngine
from .warp import DEFAULT_WARP, make_warp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Query:
    """A query: train configuration ``config_id`` for epoch ``epoch`` (1-based).

    ``ucb`` and ``mean`` are the acquisition value that chose it and the posterior mean at the
    queried cell (NaN for methods without a model).
    """

    config_id: int
    epoch: int
    ucb: float = float("nan")
    mean: float = float("nan")


@dataclass(frozen=True)
class QueryRecord:
    """One replayed query and the recommendation that followed it."""

    index: int
    config_id: int
    epoch: int
    value: float
    ucb: float
    mean: float
    recommended: int
    recommended_rank: int
    regret: float
    seconds: float


@dataclass
class TuningResult:
    """The records of a replayed tuning run, with its settings."""

    settings: dict[str, Any]
    records: list[QueryRecord] = field(default_factory=list)

    def series(self, name: str) -> list[Any]:
        return [getattr(r, name) for r in self.records]

    def summary(self) -> dict[str, Any]:
        """``result.json`` content: the settings and the per-query series."""
        return {**self.settings,
                "recommended_rank": self.series("recommended_rank"),
                "regret": self.series("regret"),
                "query_value": self.series("value"),
                "seconds": self.series("seconds")}

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.records]


class Tuner(ABC):
    """Base of every tuning method: ask/tell over the target task's cells.

    Args:
        database: The learning-curve database.
        source_tasks: Tasks whose curves are known in full (methods without transfer ignore them).
        target: The task being tuned.
        profile: Which profile (training seed) of the database to read.
        metric: The metric to optimise (default ``val_acc``); losses and times are minimised
            (:func:`hyperrec.database.higher_is_better`, :attr:`sign`).
        seed: Seeds every random choice of the run.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        dtype: Floating-point type of the grid (default float64).
    """

    name: ClassVar[str]
    needs_sources: ClassVar[bool] = False
    """Whether the method transfers from the source tasks, and so needs at least one."""

    def __init__(self, database: Database, source_tasks: Sequence[str], target: str, *,
                 profile: int = 0, metric: str = DEFAULT_METRIC, seed: int = 0,
                 device: str | torch.device | None = "cpu",
                 dtype: torch.dtype = torch.float64) -> None:
        if self.needs_sources and not source_tasks:
            raise ValueError(f"{self.name} transfers from source tasks: give at least one")
        self.database, self.target, self.sources = database, target, tuple(source_tasks)
        self.profile, self.metric, self.seed = profile, metric, seed
        self.sign = 1.0 if higher_is_better(metric) else -1.0
        """``sign * value`` grows as the metric improves (1.0 to maximise, -1.0 to minimise)."""
        self.device = resolve_device(device)
        self.grid = CurveGrid.from_database(database, self.sources, target, profile, metric,
                                            dtype, self.device)
        self._column = {c: i for i, c in enumerate(self.grid.config_ids)}
        self.generator = torch.Generator().manual_seed(seed)
        C, E = self.grid.shape[1:]
        self.available = torch.ones(C, E, dtype=torch.bool, device=self.device)
        """Cells that can be trained (replay restricts this to the oracle's observed cells)."""

    # ------------------------------------------------------------------ cells
    @property
    def observed(self) -> torch.Tensor:
        """``(C, E)`` bool: the target cells observed so far."""
        return self.grid.observed[-1]

    def _trainable(self) -> torch.Tensor:
        """``(C,)`` bool: configurations whose next epoch exists and can be trained."""
        done = self.grid.epochs_done()
        E = self.grid.shape[-1]
        nxt = self.available.gather(1, done.clamp_max(E - 1).unsqueeze(-1)).squeeze(-1)
        return (done < E) & nxt

    def candidates(self) -> torch.Tensor:
        """``(C, E)`` bool: unobserved cells of configurations that can be trained next."""
        return ~self.observed & self._trainable().unsqueeze(-1)

    def next_epoch(self, config_id: int) -> int:
        """The epoch (1-based) that configuration ``config_id`` would train next."""
        return int(self.grid.epochs_done()[self._index(config_id)]) + 1

    def _index(self, config_id: int) -> int:
        try:
            return self._column[int(config_id)]
        except KeyError:
            raise KeyError(f"unknown configuration id {config_id}") from None

    # ------------------------------------------------------------------ ask / tell
    @abstractmethod
    def ask(self) -> Query:
        """The next query: a configuration and the epoch to train it for."""

    def tell(self, config_id: int, epoch: int, value: float) -> None:
        """Report the observed ``value`` of ``config_id`` after ``epoch`` epochs (in order)."""
        c = self._index(config_id)
        expected = self.next_epoch(config_id)
        if expected > self.grid.shape[-1]:
            raise ValueError(f"configuration {config_id} has all its {self.grid.shape[-1]} "
                             "epochs observed")
        if epoch != expected:
            raise ValueError(f"configuration {config_id}: epochs are observed in order; "
                             f"expected epoch {expected}, got {epoch}")
        if not np.isfinite(value):
            raise ValueError(f"configuration {config_id}, epoch {epoch}: value {value} "
                             "is not finite")
        self.grid.values[-1, c, epoch - 1] = float(value)
        self._observed()

    def prepare(self, progress: bool = False) -> None:
        """Hook before the first query (models do their offline fit here); ``progress`` shows
        a progress bar over a long fit. :meth:`tune` calls it; surrogate tuners also call it at the
        first :meth:`ask` (call it first to see the fit's progress in an ask/tell loop)."""

    def _observed(self) -> None:
        """Hook after each :meth:`tell` (models refit here)."""

    def recommend(self) -> int:
        """The configuration recommended now; by default the best value observed so far."""
        values = torch.where(self.observed, self.sign * self.grid.values[-1], -torch.inf)
        return self.grid.config_ids[int(values.max(-1).values.argmax())]

    # ------------------------------------------------------------------ replay
    def settings(self) -> dict[str, Any]:
        """What a record needs to reproduce the run: what it was asked to do, resolved."""
        return {"method": self.name, "database": self.database.name,
                "database_path": str(self.database.path), "sources": list(self.sources),
                "target": self.target, "profile": self.profile, "metric": self.metric,
                "seed": self.seed, "device": str(self.device)}

    def outcomes(self) -> dict[str, Any]:
        """How the run went beyond its records (fit times, objectives), for ``result.json``."""
        return {}

    def tune(self, budget: int, progress: bool = True) -> TuningResult:
        """Replay ``budget`` queries with the database's target curves as the oracle."""
        db = self.database
        oracle = db.curves(self.metric, [self.target], self.profile)[0]
        observed = ~np.isnan(oracle)
        reachable = int(np.cumprod(observed, axis=-1).sum())  # epochs in order, up to a gap
        if not 1 <= budget <= reachable:
            raise ValueError(f"budget must be between 1 and the {reachable} cells of "
                             f"{self.target!r} that replay can reach; got {budget}")
        self.available = torch.as_tensor(observed, device=self.device)
        rank = db.ranking(self.target, self.metric, self.profile)
        score = self.sign * db.best_values(self.target, self.metric, self.profile)  # larger: better
        best, worst = np.nanmax(score), np.nanmin(score)
        result = TuningResult({})
        self.prepare(progress)
        for index in tqdm(range(1, budget + 1), desc=f"{self.name} {self.target}",
                          disable=not progress, leave=False):
            start = time.perf_counter()
            query = self.ask()
            c = self._index(query.config_id)
            value = float(oracle[c, query.epoch - 1])
            self.tell(query.config_id, query.epoch, value)
            recommended = self.recommend()
            r = self._index(recommended)
            regret = float((best - score[r]) / (best - worst)) if best > worst else 0.0
            result.records.append(QueryRecord(
                index, query.config_id, query.epoch, value, query.ucb, query.mean, recommended,
                int(rank[r]), regret, time.perf_counter() - start))
        result.settings = {**self.settings(), "budget": budget, **self.outcomes()}
        return result


ENGINES = {"exact": ExactEngine, "variational": VariationalEngine}
ENGINE_DTYPES = {"exact": torch.float64, "variational": torch.float32}


def check_engine(engine: str, options: dict[str, Any] | None = None) -> None:
    """Raise ``ValueError`` for an unknown engine name or a bad option of it."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {sorted(ENGINES)}")
    ENGINES[engine].check_options(options or {})


class SurrogateTuner(Tuner):
    """A tuner driven by a posterior over the target's cells: UCB chooses the cell, the chosen
    configuration trains its next epoch, and the recommendation is the configuration with the
    highest posterior mean over its cells.

    Subclasses implement :meth:`fit` (the offline phase, before the first query) and
    :meth:`predict`, and may refresh themselves after each observation in :meth:`update`.

    Args:
        beta: UCB exploration weight (default 0.25).
        **kwargs: As :class:`Tuner`.
    """

    def __init__(self, database: Database, source_tasks: Sequence[str], target: str, *,
                 beta: float = 0.25, **kwargs: Any) -> None:
        super().__init__(database, source_tasks, target, **kwargs)
        self.acquisition = UpperConfidenceBound(beta)
        self.fit_seconds: float | None = None
        self._posterior: tuple[torch.Tensor, torch.Tensor] | None = None

    @abstractmethod
    def fit(self, progress: bool = False) -> None:
        """The offline phase, run once before the first query (``progress``: as
        :meth:`prepare`)."""

    @abstractmethod
    def predict(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of the target, ``(C, E)`` per cell or ``(C, 1)`` when the
        model predicts one value per configuration, in the surrogate's units, where larger is
        better (:meth:`to_metric` maps them back)."""

    def update(self) -> None:
        """Hook after each observation, once fitted (models refit here)."""

    def prepare(self, progress: bool = False) -> None:
        if self.fit_seconds is None:
            start = time.perf_counter()
            self.fit(progress)
            self.fit_seconds = time.perf_counter() - start

    def posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`predict`, cached until the next :meth:`tell`."""
        self.prepare()
        if self._posterior is None:
            self._posterior = self.predict()
        return self._posterior

    def ask(self) -> Query:
        mean, var = self.posterior()
        scores = self.acquisition(mean, var)
        allowed = self.candidates()
        if scores.shape[-1] == 1:  # one score per configuration
            allowed = allowed.any(-1, keepdim=True)
        c, e = best_cell(scores, allowed, self.generator)
        config_id = self.grid.config_ids[c]
        epoch = self.next_epoch(config_id)
        cell = min(epoch - 1, mean.shape[-1] - 1)
        ucb, mean = self.to_metric(torch.stack([scores[c, e], mean[c, cell]]))
        return Query(config_id, epoch, float(ucb), float(mean))

    def to_metric(self, modelled: torch.Tensor) -> torch.Tensor:
        """Posterior values in the metric's units. The surrogate models ``sign * value`` (larger
        is better) unless a subclass transforms it otherwise."""
        return self.sign * modelled

    def _observed(self) -> None:
        self._posterior = None
        if self.fit_seconds is not None:
            self.update()

    def recommend(self) -> int:
        """The configuration with the highest posterior mean over all its cells."""
        mean, _ = self.posterior()
        return self.grid.config_ids[int(mean.max(-1).values.argmax())]

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "beta": self.acquisition.beta}

    def outcomes(self) -> dict[str, Any]:
        return {**super().outcomes(), "fit_seconds": self.fit_seconds}


class AT2Tuner(SurrogateTuner):
    """Amortized Auto-Tuning: the AT2 surrogate with UCB over (configuration, next epoch).

    Args:
        database, source_tasks, target: As :class:`Tuner`.
        engine: ``"exact"`` (default) or ``"variational"``.
        beta: UCB exploration weight (default 0.25).
        engine_options: Passed to the engine (e.g. ``fit_steps``, ``refit_steps``).
        task_psd: How the task-similarity matrix is made positive semi-definite:
            ``"nonnegative"`` (default), ``"target_row"`` or ``"nearest"`` (see
            :mod:`at2.task_kernel`).
        warp: ``"auto"`` (default: ``"copula"``), ``"copula"``, ``"log_error"`` or ``"none"``:
            the surrogate models the metric through this increasing transform (:mod:`at2.warp`);
            observations are told and recorded in the metric's units (:attr:`grid`), and a
            query's ``ucb`` and ``mean`` are transformed back (the copula's: interpolated
            between the target's observed values, NaN before the first one); the engine (and
            :class:`~at2.botorch_model.AT2Model` on it) answers in warped units, on
            :attr:`modelled`. :attr:`warp_name` is the resolved name.
        restarts: Offline fits from as many draws of the deep kernel's initial weights (the
            run's seed draws them in turn; the first is the draw of ``restarts=1``); the fit with
            the highest objective per datum (the exact marginal likelihood, or the ELBO) is
            kept and :attr:`fit_objectives` lists them. Default: the engine's
            ``default_restarts``, 4 for ``"exact"`` (seconds each; over seeds 1-10 the mean
            LCBench rank at 100 queries went from 8.8 to 7.0) and 1 for ``"variational"`` (a fit
            at the paper's settings takes minutes).
        offset: The variance of the target's own offset per configuration, constant over its
            epochs, as a fraction of the target's prior variance
            (:class:`~at2.offset_kernel.ConfigurationOffsetKernel`; 0: the paper's product kernel
            alone). Default: the engine's ``default_offset``, 0.05 for ``"exact"`` (over seeds
            1-10 the mean HyperRec rank at 100 queries went from 5.8 to 4.5, LCBench's at 10
            queries from 13.8 to 9.8) and 0 for ``"variational"``, which does not model it.
        **kwargs: ``profile``, ``metric``, ``seed``, ``device``, ``dtype`` as :class:`Tuner`; the
            dtype defaults to float64 for the exact engine and float32 for the variational one.
    """

    name = "at2"
    needs_sources = True

    def __init__(self, database: Database, source_tasks: Sequence[str], target: str, *,
                 engine: str = "exact", engine_options: dict[str, Any] | None = None,
                 task_psd: str = DEFAULT_TASK_PSD, warp: str = DEFAULT_WARP,
                 restarts: int | None = None, offset: float | None = None,
                 **kwargs: Any) -> None:
        check_engine(engine, engine_options)
        self.restarts = ENGINES[engine].default_restarts if restarts is None else restarts
        check_option("restarts", self.restarts, int, 1)
        offset = ENGINES[engine].default_offset if offset is None else offset
        ENGINES[engine].check_offset(offset)
        self.offset = float(offset)
        kwargs.setdefault("dtype", ENGINE_DTYPES[engine])
        super().__init__(database, source_tasks, target, **kwargs)
        self.warp = make_warp(warp, self.metric)
        self.warp.check(self.grid.values, self.metric)
        self.warp_name = self.warp.name
        self.modelled = CurveGrid(self.warp(self.grid.values), self.grid.encodings,
                                  self.grid.tasks, self.grid.config_ids)
        """The grid in the surrogate's units (the warp of :attr:`grid`), which the engine reads."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # the deep kernels' initial weights, one per restart
            models = [AT2Surrogate(database.space, len(self.sources) + 1, task_psd=task_psd,
                                   offset=self.offset) for _ in range(self.restarts)]
        for model in models:
            model.initialize_from(self.modelled)
        self.engine_name, self.engine_options = engine, dict(engine_options or {})
        if engine == "variational":
            self.engine_options.setdefault("seed", self.seed)
        self._engines = [ENGINES[engine](model, self.modelled, **self.engine_options)
                         for model in models]
        self.engine = self._engines[0]
        """The inference engine; after :meth:`fit`, the restart with the best objective."""
        self.fit_objectives: list[float | None] = []
        """Each restart's objective per datum at the end of the offline fit (None without fit
        steps)."""
        if engine == "variational":  # record what the hardware decided (None: auto)
            self.engine_options["mixed_precision"] = self.engine.mixed_precision

    def fit(self, progress: bool = False) -> None:
        """The offline phase: fit the surrogate to the source curves (and any target data).

        Without target observations the target's constant mean gets no gradient; it then starts
        at the average fitted source mean (with the pinned epoch kernel, the value at epoch 0).
        """
        self.fit_objectives = [(engine.fit(progress) or [None])[-1] for engine in self._engines]
        scores = [-math.inf if v is None or math.isnan(v) else v for v in self.fit_objectives]
        best = int(np.argmax(scores))  # None: no fit steps; NaN: diverged
        self.engine, self._engines = self._engines[best], [self._engines[best]]
        if not self.observed.any():  # no target data moved its mean: start it as a typical source
            with torch.no_grad():
                means = self.engine.model.mean.constants
                means[-1] = means[:-1].mean()
        log.info("%s engine fitted from %d initial draws (objective per datum %s), kept draw %d",
                 self.engine.name, len(scores), ", ".join(f"{v:.3f}" for v in scores), best)

    def tell(self, config_id: int, epoch: int, value: float) -> None:
        self.warp.check(torch.tensor([float(value)], dtype=torch.float64), self.metric)
        super().tell(config_id, epoch, value)

    def _observed(self) -> None:
        self.modelled.values[-1] = self.warp(self.grid.values[-1])
        super()._observed()

    def to_metric(self, modelled: torch.Tensor) -> torch.Tensor:
        return self.warp.inverse(modelled, self.grid.values[-1])

    def predict(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.engine.posterior_grid()

    def update(self) -> None:
        self.engine.update()

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "engine": self.engine_name,
                "engine_options": self.engine_options,
                "task_psd": self.engine.model.task_kernel.psd,
                "warp": self.warp_name, "restarts": self.restarts, "offset": self.offset}

    def outcomes(self) -> dict[str, Any]:
        return {**super().outcomes(), "fit_objectives": self.fit_objectives}
