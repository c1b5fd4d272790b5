"""The AT2 surrogate: per-task constant mean, covariance task x deep x epoch (plus, optionally,
the target's own offset per configuration), Gaussian noise (one variance per task).

Inputs of the full model are rows ``x = [task index, configuration encoding (D), t]`` with ``t`` the
epoch scaled to (0, 1]; ``AT2Surrogate.covar_module`` is the product kernel over those columns.
The engines in :mod:`at2.exact` and :mod:`at2.variational` share these modules: the exact
engine evaluates each factor on its own grid, the variational engine the product on points.

:class:`CurveGrid` holds the data both engines see: T tasks (sources first, the target last) on a
shared grid of C configurations x E epochs, NaN where a cell is not observed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import Kernel
from gpytorch.likelihoods import _GaussianLikelihoodBase
from gpytorch.likelihoods.noise_models import Noise
from gpytorch.means import Mean
from linear_operator.operators import DiagLinearOperator
from torch import Tensor, nn

from hyperrec.database import DEFAULT_METRIC, Database
from hyperrec.space import SearchSpace

from .deep_kernel import DeepPolynomialKernel
from .epoch_kernel import FreezeThawKernel
from .offset_kernel import ConfigurationOffsetKernel
from .task_kernel import DEFAULT_TASK_PSD, TaskSimilarityKernel, set_constrained


@dataclass
class CurveGrid:
    """Learning curves on a task x configuration x epoch grid.

    Attributes:
        values: ``(T, C, E)`` observed values, NaN where unobserved; task ``T - 1`` is the target.
        encodings: ``(C, D)`` configuration encodings (``space.encode``).
        tasks: The T task names.
        config_ids: The C configuration ids.
    """

    values: Tensor
    encodings: Tensor
    tasks: list[str]
    config_ids: list[int]

    def __post_init__(self) -> None:
        T, C, E = self.values.shape
        if self.encodings.shape[0] != C or len(self.tasks) != T or len(self.config_ids) != C:
            raise ValueError(f"grid of shape {(T, C, E)} does not match {len(self.tasks)} tasks, "
                             f"{self.encodings.shape[0]} encodings, {len(self.config_ids)} ids")

    @classmethod
    def from_database(cls, db: Database, sources: Sequence[str], target: str, profile: int = 0,
                      metric: str = DEFAULT_METRIC, dtype: torch.dtype = torch.float64,
                      device: torch.device | str | None = None) -> CurveGrid:
        """Source curves from ``db``; the target starts with no observations."""
        if target in sources:
            raise ValueError(f"target {target!r} is also a source task")
        repeated = sorted(s for s, n in Counter(sources).items() if n > 1)
        if repeated:
            raise ValueError(f"source task(s) {repeated} given more than once")
        curves = db.curves(metric, list(sources), profile)
        values = np.concatenate([curves, np.full((1, *curves.shape[1:]), np.nan)])
        return cls(torch.as_tensor(values, dtype=dtype, device=device),
                   torch.as_tensor(db.encodings, dtype=dtype, device=device),
                   [*sources, target], [int(c) for c in db.config_ids])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.values.shape)

    @property
    def target(self) -> int:
        return self.values.shape[0] - 1

    @property
    def observed(self) -> Tensor:
        """``(T, C, E)`` bool."""
        return ~torch.isnan(self.values)

    @property
    def t(self) -> Tensor:
        """``(E,)`` the epochs scaled to (0, 1]: ``1/E, 2/E, ..., 1``."""
        E = self.values.shape[-1]
        return torch.arange(1, E + 1, dtype=self.values.dtype, device=self.values.device) / E

    def epochs_done(self) -> Tensor:
        """``(C,)`` number of leading observed epochs of each target configuration."""
        return self.observed[-1].long().cumprod(-1).sum(-1)

    def inputs(self, task: int | Tensor, config: Tensor, epoch: Tensor) -> Tensor:
        """Model input rows ``[task, encoding, t]`` for cells (``config``/``epoch`` 0-based)."""
        task = torch.as_tensor(task, dtype=self.values.dtype, device=self.values.device)
        t = self.t[epoch]
        return torch.cat([task.expand(t.shape).unsqueeze(-1), self.encodings[config],
                          t.unsqueeze(-1)], dim=-1)


class TaskNoise(Noise):
    """Observation noise with one variance per task; rows ``[task index, ...]`` select it."""

    def __init__(self, num_tasks: int, lower_bound: float = 1e-6) -> None:
        super().__init__()
        self.register_parameter("raw_noise", nn.Parameter(torch.zeros(num_tasks)))
        self.register_constraint("raw_noise", GreaterThan(lower_bound))

    @property
    def noise(self) -> Tensor:
        """``(T,)`` noise variances."""
        return self.raw_noise_constraint.transform(self.raw_noise)

    @noise.setter
    def noise(self, value: Tensor) -> None:
        self.initialize(raw_noise=self.raw_noise_constraint.inverse_transform(
            torch.as_tensor(value).to(self.raw_noise)))

    def forward(self, x: Tensor, *params, shape: torch.Size | None = None,
                **kwargs) -> DiagLinearOperator:
        return DiagLinearOperator(self.noise[x[..., 0].long()])


class TaskGaussianLikelihood(_GaussianLikelihoodBase):
    """Gaussian likelihood with one noise variance per task (``noise``: ``(T,)``).

    Tasks differ in how well the shared kernel fits them; a single noise level absorbs the sources'
    misfit and then treats the target's own (nearly noise-free) observations as noisy. Methods
    that need the noise at data points take the input rows: ``likelihood(f, x)``.
    """

    def __init__(self, num_tasks: int) -> None:
        super().__init__(noise_covar=TaskNoise(num_tasks))

    @property
    def noise(self) -> Tensor:
        return self.noise_covar.noise

    @noise.setter
    def noise(self, value: Tensor) -> None:
        self.noise_covar.noise = value


class TaskConstantMean(Mean):
    """A constant per task: ``m(x) = c[x[..., 0]]`` for rows ``[task index, ...]``."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.constants = nn.Parameter(torch.zeros(num_tasks))

    def forward(self, x: Tensor) -> Tensor:
        return self.constants[x[..., 0].long()]


class AT2Surrogate(nn.Module):
    """The AT2 model's modules (kernels, mean, per-task likelihood), independent of the engine.

    Args:
        space: The search space of the configurations (sets the deep kernel's input layout).
        num_tasks: T, sources plus target (the target last).
        task_psd: How the task kernel's matrix is made PSD (:class:`TaskSimilarityKernel`'s
            ``psd``; default ``"nonnegative"``).
        offset: The variance of the target's own offset per configuration, as a fraction of its
            prior variance (:class:`ConfigurationOffsetKernel`, added to the product kernel on
            the target's cells; default 0, the paper's model).
    """

    def __init__(self, space: SearchSpace, num_tasks: int,
                 task_psd: str = DEFAULT_TASK_PSD, offset: float = 0.0) -> None:
        super().__init__()
        self.space = space
        self.task_kernel = TaskSimilarityKernel(num_tasks, psd=task_psd)
        self.offset_kernel = ConfigurationOffsetKernel(offset)
        self.config_kernel = DeepPolynomialKernel(space)
        self.epoch_kernel = FreezeThawKernel()
        self.mean = TaskConstantMean(num_tasks)
        self.likelihood = TaskGaussianLikelihood(num_tasks)
        self.covar_module = ColumnProductKernel(self.task_kernel, self.config_kernel,
                                                self.epoch_kernel, space.dim)

    @torch.no_grad()
    def initialize_from(self, grid: CurveGrid) -> None:
        """Move to the grid's device/dtype and set data-driven starting values: task means, task
        kernel distances, scales, noise."""
        self.to(device=grid.values.device, dtype=grid.values.dtype)
        observed = grid.observed
        values = torch.where(observed, grid.values, 0.0)
        count = observed.flatten(1).sum(-1)
        sources = count > 0
        means = values.flatten(1).sum(-1) / count.clamp_min(1)
        means[~sources] = means[sources].mean() if sources.any() else 0.5
        self.mean.constants.copy_(means)
        self.task_kernel.update(grid.values, observed)
        centred = torch.where(observed, grid.values - means[:, None, None], 0.0)
        variance = (centred**2).sum() / observed.sum().clamp_min(1)
        self.task_kernel.outputscale = variance.clamp_min(1e-4)
        # Epoch scale starts at 1 / E[(|phi|^2 + c)^2] (0.19 on HyperRec pair 0, 0.46 on LCBench's;
        # fits end near 0.5-1.7). Starting it at 1 measured no better: mean rank at 100 queries over
        # seeds 1-3, HyperRec / LCBench, 7.4 / 19.3 against 8.3 / 14.9 with this start.
        features = self.config_kernel.features(grid.encodings)
        scale = ((features.square().sum(-1) + self.config_kernel.offset) ** 2).mean()
        set_constrained(self.epoch_kernel, "outputscale", 1.0 / scale)
        self.likelihood.noise = (variance * 1e-2).clamp_min(1e-5).expand(grid.values.shape[0])


class ColumnProductKernel(Kernel):
    """``k_task(x[0]) * k_config(x[1:D+1]) * k_epoch(x[D+1])`` on full input rows ``(..., n, D+2)``.

    A dense elementwise product: gpytorch's ``ProductKernel`` turns products of square blocks into
    ``MulLinearOperator``s, which use approximate root decompositions.
    """

    def __init__(self, task: Kernel, config: Kernel, epoch: Kernel, dim: int) -> None:
        super().__init__()
        self.task, self.config, self.epoch, self.dim = task, config, epoch, dim

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, **params) -> Tensor:
        """``params``: terms of :meth:`shared_terms` (each factor takes its own)."""
        d = self.dim
        parts = ((self.task, slice(0, 1)), (self.config, slice(1, d + 1)),
                 (self.epoch, slice(d + 1, d + 2)))
        out = None
        for kernel, cols in parts:
            a = x1[..., cols]
            k = kernel.forward(a, a if x2 is x1 else x2[..., cols], diag=diag, **params)
            out = k if out is None else out * k
        return out

    def shared_terms(self, x1: Tensor) -> dict[str, Tensor]:
        """What evaluations with rows ``x1 (n, D + 2)`` as their first argument share: the task
        matrix (``task_matrix``, of any rows) and the configuration kernel's directions of
        ``x1`` (``config_directions1``), to pass as keywords to :meth:`forward` and
        :meth:`on_grid`. A variational step evaluates ``k(Z, Z)`` and ``k(Z, X)`` at the inducing
        points ``Z`` and ``diag k(X, X)`` (``task_matrix`` only); computed once instead of three
        and two times, they make a refit of 93 steps 5% faster on HyperRec pair 0."""
        d = self.dim
        return {"task_matrix": self.task.matrix(),
                "config_directions1": self.config.directions(x1[..., 1:d + 1])}

    def on_grid(self, x1: Tensor, grid: CurveGrid, task: Tensor, config: Tensor,
                epoch: Tensor, **params) -> Tensor:
        """``forward(x1, grid.inputs(task, config, epoch))``: the covariance ``(n, m)`` between
        rows ``x1 (n, D + 2)`` and m grid cells (indices ``(m,)`` each); ``params`` as in
        :meth:`forward`.

        The m cells have only T tasks, C configurations and E epochs among them, so each factor is
        evaluated once per distinct value (tables ``(n, T C)`` and ``(n, E)``) and the product is
        gathered from the tables, in :meth:`forward`'s order (the same values to the last bit):
        for m = 1000 cells on HyperRec's 5 x 100 x 75 grid this cuts a variational minibatch's
        ``K_uf`` with its gradient from 20 ms to 6 ms.
        """
        T, C, E = grid.shape
        d = self.dim
        tasks = torch.arange(T, dtype=x1.dtype, device=x1.device).unsqueeze(-1)
        k_task = self.task.forward(x1[..., :1], tasks, **params)  # (n, T)
        k_config = self.config.forward(x1[..., 1:d + 1], grid.encodings, **params)  # (n, C)
        k_epoch = self.epoch.forward(x1[..., d + 1:], grid.t.unsqueeze(-1), **params)  # (n, E)
        task_config = (k_task.unsqueeze(-1) * k_config.unsqueeze(-2)).flatten(-2)  # (n, T C)
        return task_config.index_select(-1, task * C + config) * k_epoch.index_select(-1, epoch)
