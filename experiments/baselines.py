"""Baseline tuning methods, all through the ask/tell interface of :class:`at2.tuner.Tuner`.

Every method queries one epoch at a time, on the same cells and budget as AT2:

- :class:`RandomTuner` (``random``) and :class:`RandomFullTuner` (``random_full``), random search
  epoch-wise and configuration-wise (Bergstra & Bengio, 2012);
- :class:`HyperbandTuner` (``hyperband``), successive-halving brackets over epochs (Li et al.,
  2017);
- :class:`TransferTopKTuner` (``transfer_topk``), zero-shot transfer: configurations in the order of
  their mean rank on the source tasks (the "top-k" portfolio of e.g. Wistuba et al., 2015);
- GP baselines on BoTorch/GPyTorch, scored with the same UCB as AT2 (:class:`GPTuner`):
  :class:`FreezeThawGPTuner` (``freeze_thaw_gp``, Swersky et al., 2014, no transfer),
  :class:`MultiTaskGPTuner` (``mtgp``, Swersky et al., 2013, BoTorch's ``MultiTaskGP``) and
  :class:`LatentKroneckerGPTuner` (``lkgp``, Lin et al., 2024, BoTorch's ``LatentKroneckerGP``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from botorch.exceptions import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import MultiTaskGP, SingleTaskGP
from botorch.models.latent_kronecker_gp import LatentKroneckerGP
from botorch.models.model import Model
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from linear_operator.utils.warnings import NumericalWarning

from at2.epoch_kernel import FreezeThawKernel
from at2.tuner import Query, SurrogateTuner, Tuner
from hyperrec.database import Database
from hyperrec.options import check_option

log = logging.getLogger(__name__)
LENGTHSCALE_FLOOR = 2.5e-2  # lower bound of the GP baselines' Matern lengthscales (BoTorch's)


class RandomTuner(Tuner):
    """Random epoch-wise search: each query trains a uniformly random configuration (among those
    not finished) for its next epoch; the recommendation is the best value observed so far."""

    name = "random"

    def ask(self) -> Query:
        choices = torch.nonzero(self._trainable()).squeeze(-1).cpu()
        if not len(choices):
            raise ValueError("every configuration of the target is fully trained")
        c = int(choices[torch.randint(len(choices), (1,), generator=self.generator)])
        config_id = self.grid.config_ids[c]
        return Query(config_id, self.next_epoch(config_id))


class SequentialTuner(Tuner):
    """Trains configurations one after another to their last epoch, in :meth:`order`."""

    _order: list[int] | None = None

    @abstractmethod
    def order(self) -> list[int]:
        """Configuration indices (columns) in the order they are trained."""

    def ask(self) -> Query:
        if self._order is None:
            self._order = self.order()
        trainable = self._trainable().tolist()
        c = next((c for c in self._order if trainable[c]), None)
        if c is None:
            raise ValueError("every configuration of the target is fully trained")
        config_id = self.grid.config_ids[c]
        return Query(config_id, self.next_epoch(config_id))


class RandomFullTuner(SequentialTuner):
    """Random search over configurations: a random configuration is trained to its last epoch,
    then the next one."""

    name = "random_full"

    def order(self) -> list[int]:
        return torch.randperm(self.grid.shape[1], generator=self.generator).tolist()


class TransferTopKTuner(SequentialTuner):
    """Zero-shot transfer: configurations ranked by their mean rank on the source tasks (rank by
    best-epoch value, ties by configuration id) and trained to the last epoch in that order."""

    name = "transfer_topk"
    needs_sources = True

    def order(self) -> list[int]:
        ranks = np.mean([self.database.ranking(task, self.metric, self.profile)
                         for task in self.sources], axis=0)
        return np.lexsort((self.database.config_ids, ranks)).tolist()


class HyperbandTuner(Tuner):
    """Hyperband (Li et al., 2017): brackets of successive halving over epochs, cycled.

    Bracket ``s`` (from ``s_max = floor(log_eta(E))`` down to 0) starts
    ``ceil((s_max + 1) / (s + 1) * eta^s)`` random configurations (unstarted ones first) with
    ``E * eta^-s`` epochs each, then keeps the best ``1/eta`` of each rung, by their value at the
    rung's epoch, for ``eta`` times more epochs. A configuration that already trained in an
    earlier bracket continues from where it stopped. The recommendation is the best observed value.

    Args:
        eta: Halving rate (default 3).
        **kwargs: As :class:`Tuner`.
    """

    name = "hyperband"

    def __init__(self, database: Database, source_tasks: Sequence[str], target: str, *,
                 eta: int = 3, **kwargs: Any) -> None:
        check_option("eta", eta, int, 2)
        super().__init__(database, source_tasks, target, **kwargs)
        self.eta = eta
        E = self.grid.shape[-1]
        self.s_max = int(math.floor(math.log(E, eta) + 1e-9))
        self._rungs = self._brackets()
        self._rung: tuple[list[int], int] | None = None

    def _brackets(self) -> Iterator[tuple[list[int], int]]:
        """Yields each rung as (its configuration columns, its epoch), bracket after bracket."""
        E = self.grid.shape[-1]
        while True:
            for s in range(self.s_max, -1, -1):
                n = math.ceil((self.s_max + 1) / (s + 1) * self.eta**s)
                members = self._sample(n)
                for i in range(s + 1):
                    epoch = min(E, max(1, round(E * self.eta ** (i - s))))
                    yield members, epoch
                    done = self.grid.epochs_done()[members].clamp(1, epoch) - 1
                    values = self.sign * self.grid.values[-1, members, done]
                    keep = max(1, len(members) // self.eta)
                    order = torch.argsort(-values.nan_to_num(-torch.inf), stable=True)
                    members = [members[k] for k in order[:keep].tolist()]

    def _sample(self, n: int) -> list[int]:
        """``n`` random trainable configurations, never-started ones first."""
        started = self.grid.epochs_done() > 0
        trainable = self._trainable()
        perm = torch.randperm(len(started), generator=self.generator).to(self.device)
        fresh = perm[(~started & trainable)[perm]]
        resumed = perm[(started & trainable)[perm]]
        return torch.cat([fresh, resumed])[:n].tolist()

    def ask(self) -> Query:
        if not self._trainable().any():
            raise ValueError("every configuration of the target is fully trained")
        while True:
            if self._rung is None:
                self._rung = next(self._rungs)
            members, epoch = self._rung
            done, trainable = self.grid.epochs_done().tolist(), self._trainable().tolist()
            pending = [c for c in members if done[c] < epoch and trainable[c]]
            if pending:
                config_id = self.grid.config_ids[pending[0]]
                return Query(config_id, self.next_epoch(config_id))
            self._rung = None

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "eta": self.eta}


def unit_encodings(encodings: torch.Tensor) -> torch.Tensor:
    """``(C, D)`` configuration encodings min-max scaled per column to [0, 1] (constant columns
    become 0), so that choice indices and numeric parameters share one scale."""
    lo, hi = encodings.min(0).values, encodings.max(0).values
    return (encodings - lo) / (hi - lo).where(hi > lo, torch.ones_like(hi))


class GPTuner(SurrogateTuner):
    """A GP baseline on BoTorch: builds a model on the current data (:meth:`make_model`, of
    ``sign * value``, so that larger is better for a minimised metric too), fits
    its hyper-parameters by marginal likelihood (``fit_gpytorch_mll``, warm-started) before the
    first query and after every ``refit_every`` observations, and otherwise conditions the last
    fitted hyper-parameters on the new data. Scored with UCB like AT2 (:class:`SurrogateTuner`).

    Args:
        refit_every: Refit the hyper-parameters after this many observations (default: the
            class's ``refit_every``, 1 unless a subclass says otherwise).
        fit_iterations: L-BFGS iterations per fit at most (default 100; warm starts converge in
            fewer, and a cold multi-task fit would otherwise run to 2,000).
        **kwargs: As :class:`at2.tuner.SurrogateTuner` (``beta``) and :class:`Tuner`.
    """

    refit_every: int = 1

    def __init__(self, database: Database, source_tasks: Sequence[str], target: str, *,
                 refit_every: int | None = None, fit_iterations: int = 100,
                 **kwargs: Any) -> None:
        refit_every = type(self).refit_every if refit_every is None else refit_every
        check_option("refit_every", refit_every, int, 1)
        check_option("fit_iterations", fit_iterations, int, 1)
        super().__init__(database, source_tasks, target, **kwargs)
        self.refit_every, self.fit_iterations = refit_every, fit_iterations
        self.model: Model | None = None
        self.x = unit_encodings(self.grid.encodings)

    @abstractmethod
    def make_model(self) -> Model | None:
        """A model of the current data (``None`` while there is too little to model)."""

    @abstractmethod
    def predict_with(self, model: Model) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of the target, ``(C, E)`` or ``(C, 1)``."""

    def inference(self, model: Model) -> contextlib.AbstractContextManager:
        """Linear-algebra settings for fitting and predicting (default: GPyTorch's)."""
        return contextlib.nullcontext()

    def _rebuild(self, refit: bool) -> None:
        with torch.random.fork_rng(devices=[]):  # random initial values and fit restarts
            torch.manual_seed(self.seed * 1000 + int(self.observed.sum()))
            model = self.make_model()
            if model is None:
                return
            if self.model is not None:  # warm start from the previous hyper-parameters
                state = {k: v for k, v in self.model.state_dict().items()
                         if not k.startswith("outcome_transform.")}
                model.load_state_dict(state, strict=False, keep_transforms=False)
            if refit:
                self._fit(model)
        self.model = model.eval()

    def _fit(self, model: Model) -> None:
        """Marginal-likelihood fit; if every attempt fails, keep the hyper-parameters it had."""
        state = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            with self.inference(model), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fit_gpytorch_mll retries and reports
                fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model),
                                 optimizer_kwargs={"options": {"maxiter": self.fit_iterations}})
        except ModelFittingError as err:
            log.warning("%s: hyper-parameter fit failed after %d observations (%s); keeping "
                        "the previous values", self.name, int(self.observed.sum()), err)
            model.load_state_dict(state, keep_transforms=False)

    def fit(self, progress: bool = False) -> None:  # one L-BFGS run: no progress to show
        self._rebuild(refit=True)

    def update(self) -> None:
        self._rebuild(refit=int(self.observed.sum()) % self.refit_every == 0)

    def predict(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.model is None:  # nothing to model yet: every cell ties
            shape = self.grid.shape[1:]
            return (torch.zeros(shape, dtype=self.grid.values.dtype, device=self.device),
                    torch.ones(shape, dtype=self.grid.values.dtype, device=self.device))
        with torch.no_grad(), self.inference(self.model):
            return self.predict_with(self.model)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "refit_every": self.refit_every,
                "fit_iterations": self.fit_iterations}


class FreezeThawGPTuner(GPTuner):
    """Freeze-thaw Bayesian optimisation (Swersky, Snoek & Adams, 2014) on the target alone.

    A single-task GP over (configuration, epoch) cells: each curve's starting level varies over
    configurations with a Matern-5/2 ARD kernel, and its progress with the product of a second
    Matern kernel and the freeze-thaw epoch kernel, ``k = s0 M0(x, x') + M1(x, x') FT(t, t')``.
    Observations are the target's observed cells; no source task is used.
    """

    name = "freeze_thaw_gp"

    def make_model(self) -> Model | None:
        observed = self.observed
        if not observed.any():
            return None
        c, e = torch.nonzero(observed, as_tuple=True)
        D = self.x.shape[-1]
        X = torch.cat([self.x[c], self.grid.t[e].unsqueeze(-1)], -1)
        Y = self.sign * self.grid.values[-1, c, e].unsqueeze(-1)
        # lengthscales bounded below as in BoTorch's default kernels: on [0, 1] inputs a smaller
        # one only decorrelates distinct values further, while Matern's distances computed at
        # that scale lose their precision and the covariance turns indefinite (lengthscales of
        # 4e-8 gave eigenvalues of -7e-4)
        def matern() -> MaternKernel:
            return MaternKernel(ard_num_dims=D, active_dims=tuple(range(D)),
                                lengthscale_constraint=GreaterThan(LENGTHSCALE_FLOOR))

        covar = ScaleKernel(matern()) + matern() * FreezeThawKernel(active_dims=(D,))
        return SingleTaskGP(X, Y, covar_module=covar.to(X))

    def predict_with(self, model: Model) -> tuple[torch.Tensor, torch.Tensor]:
        C, E = self.grid.shape[1:]  # a batch of C curves, so that no C*E x C*E matrix forms
        X = torch.cat([self.x.unsqueeze(1).expand(C, E, -1),
                       self.grid.t.view(1, E, 1).expand(C, E, 1)], -1)
        posterior = model.posterior(X)
        # the lazy covariance's own diagonal: `posterior.variance` goes through a product whose
        # round-off turns variances of ~1e-11 at observed cells negative (and warns about it)
        variance = posterior.mvn.lazy_covariance_matrix.diagonal(dim1=-2, dim2=-1)
        return posterior.mean.view(C, E), variance.view(C, E)


class MultiTaskGPTuner(GPTuner):
    """Multi-task BO (Swersky, Snoek & Adams, 2013) with BoTorch's ``MultiTaskGP``: a GP over
    (configuration, task) with a learned task covariance (ICM), fitted to every source task's
    last-epoch values and the target's current (latest observed) values. It predicts one value
    per configuration; UCB picks the configuration, which then trains its next epoch."""

    name = "mtgp"
    refit_every = 5  # a fit takes ~1 s on 2 cores (400-500 points)

    def make_model(self) -> Model | None:
        T, C, E = self.grid.shape
        values = self.sign * self.grid.values
        done = self.grid.epochs_done()
        current = values[-1].gather(1, (done - 1).clamp_min(0).unsqueeze(-1)).squeeze(-1)
        y = torch.cat([values[:-1, :, -1], current.where(done > 0, torch.nan).unsqueeze(0)])
        task = torch.arange(T, dtype=values.dtype, device=self.device).repeat_interleave(C)
        X = torch.cat([self.x.repeat(T, 1), task.unsqueeze(-1)], -1)
        keep = ~torch.isnan(y.flatten())
        return MultiTaskGP(X[keep], y.flatten()[keep].unsqueeze(-1), task_feature=-1,
                           output_tasks=[T - 1], all_tasks=list(range(T)))

    def predict_with(self, model: Model) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = model.posterior(self.x)
        return posterior.mean, posterior.variance


class LatentKroneckerGPTuner(GPTuner):
    """BoTorch's ``LatentKroneckerGP`` (Lin et al., 2024) with its default kernels: a Matern-5/2
    ARD kernel over (task one-hot, configuration) rows times a Matern kernel over epochs, on the
    full grid of source curves and the target's observed cells (missing cells are latent),
    fitted and sampled with iterative solvers.

    The posterior mean and variance of the target are estimated from ``samples`` pathwise
    posterior samples (Matheron's rule), drawn with the run's seed. (BoTorch's ``posterior``
    would form the dense 37,500 x 7,500 cross-covariance of HyperRec's grid.)

    Args:
        samples: Posterior samples per query (default 32).
        min_noise: Lower bound of the noise variance, in standardised units (default 1e-3; the
            conjugate-gradient solves slow down as the noise shrinks).
        refit_every: As :class:`GPTuner`; default 25 (a fit takes ~40 s on HyperRec on 2 cores,
            and each query's samples ~8 s).
    """

    name = "lkgp"
    refit_every = 25

    def __init__(self, database: Database, source_tasks: Sequence[str], target: str, *,
                 samples: int = 32, min_noise: float = 1e-3, **kwargs: Any) -> None:
        check_option("samples", samples, int, 1)
        check_option("min_noise", min_noise, float, 0)
        super().__init__(database, source_tasks, target, **kwargs)
        self.samples, self.min_noise = samples, min_noise
        T, C, _ = self.grid.shape
        one_hot = torch.eye(T, dtype=self.x.dtype, device=self.device).repeat_interleave(C, 0)
        self.rows = torch.cat([one_hot, self.x.repeat(T, 1)], -1)

    def inference(self, model: Model) -> contextlib.AbstractContextManager:
        return model.use_iterative_methods()

    def make_model(self) -> Model:
        T, C, E = self.grid.shape
        likelihood = GaussianLikelihood(noise_constraint=GreaterThan(self.min_noise))
        return LatentKroneckerGP(self.rows, self.grid.t.unsqueeze(-1),
                                 self.sign * self.grid.values.reshape(T * C, E),
                                 likelihood=likelihood)

    def predict_with(self, model: Model) -> tuple[torch.Tensor, torch.Tensor]:
        T, C, E = self.grid.shape
        n = len(self.rows) * E + int(model.mask_valid.sum()) + C * E
        generator = torch.Generator().manual_seed(self.seed * 1000 + int(self.observed.sum()))
        base = torch.randn(self.samples, n, generator=generator, dtype=self.x.dtype)
        with warnings.catch_warnings():  # the target rows are training rows: their conditional
            warnings.simplefilter("ignore", NumericalWarning)  # covariance is 0 and gets jitter
            paths = model._rsample_from_base_samples(self.rows[-C:], self.grid.t.unsqueeze(-1),
                                                     base.to(self.device))
        return paths.mean(0), paths.var(0)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "samples": self.samples, "min_noise": self.min_noise}


METHODS: dict[str, type[Tuner]] = {
    cls.name: cls for cls in (RandomTuner, RandomFullTuner, HyperbandTuner, TransferTopKTuner,
                              FreezeThawGPTuner, MultiTaskGPTuner, LatentKroneckerGPTuner)}
