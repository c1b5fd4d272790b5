"""The AT2 paper's inference: a sparse variational GP (SVGP) over (task, configuration, epoch) rows.

Covers any pattern of observed cells, sources with gaps included. The same kernels, per-task mean
and per-task likelihood as the exact engine; learnable inducing points (default 1000) initialised
at a seeded subset of all the grid's cells, the target's unobserved ones included, their task and
categorical columns held fixed (they index task and embedding tables) and their epoch coordinate
kept positive. Drawn from the observed cells only, as they were before, the offline fit placed none
on the target, and then ``q(f)`` at its cells could only follow the sources': with the task column
fixed, the target's observations had nothing of its own to move. Trained on the variational ELBO by
minibatch SGD with momentum and a linear warm-up then linear decay of the learning rate; the
defaults are the paper's sweep: 200 offline epochs, learning rate 0.02, momentum 0.8, warm-up ratio
0.01, batch 1000, and 3 refit epochs after each query.

The engine trains on standardised values ``(y - shift) / scale`` (the mean and standard deviation
of the data it is given); its model's constant means, task-kernel scale and noise variances, and
the ELBO it reports, are in those units, while :meth:`~VariationalEngine.posterior_grid`,
:meth:`~VariationalEngine.predict` and :meth:`~at2.engine.Engine.noise` answer in the data's. Why:
SGD on a task's constant mean is stable only while ``lr * n_task / (n * noise_task) < 2 (1 +
momentum)``, and every refit starts again at the full learning rate. On HyperRec pair 0 the
offline fit ends with source noise variances of 8e-4 (accuracy units), where that product is about
5: in accuracy units the first refit drove two source means to -14 and -25 and their noise to 28,
and the run recommended the target's rank-56 configuration throughout. Standardised, the same
noise is 0.025 and the product 0.16.

Training uses :class:`_WhitenedStrategy`, gpytorch's whitened ``VariationalStrategy`` with a leaner
minibatch path: the ELBO needs only the marginal variances, so a training call reads ``m`` and
``L_S`` straight from the variational parameters, computes ``K_uu`` and ``K_uf`` (never the batch's
own ``n x n`` block; ``K_uf`` gathered from per-factor tables over the grid's tasks,
configurations and epochs; the task matrix and the inducing points' configuration directions
computed once for both and the diagonal, :meth:`~at2.model.ColumnProductKernel.shared_terms`),
and whitens ``K_uf`` and forms the marginals in one autograd
function (:func:`~at2.linalg.whitened_marginals`, whose backward fuses the passes autograd would
make over the ``M x n`` intermediates and skips a product it would form): the variance from
``L_S' K_uu^-1/2 K_uf`` (one ``M x M x n`` product, where the generic path forms ``S = L_S L_S'``
and ``(S - I) K_uu^-1/2 K_uf``); the KL term is the closed form for the whitened prior. Prediction
(eval mode) is gpytorch's own path, except for the marginals at all target cells
(:meth:`VariationalEngine.posterior_grid`), which take the lean path. What a step costs is then
mostly its own linear algebra (``benchmarks/at2_speed.py`` prints both).

Mixed precision (default where the hardware has fast bfloat16 products,
:func:`~at2.linalg.fast_bfloat16`): the step's largest products, ``L_S' K_uu^-1/2 K_uf``, the two
of its gradient and the ``K_uu`` gradient's ``G A'``, run in bfloat16 with float32 accumulation
(AMX on recent x86 CPUs, tensor cores on GPUs). Their rounding (relative 2^-8) enters only a
non-negative term of the marginal variances and the stochastic gradient; everything that cancels
(``K_uu``, its Cholesky factor, ``K_uu^-1/2 K_uf``, ``k_ff - |K_uu^-1/2 k_uf|^2``) stays in the
model's dtype. On HyperRec pair 0 a step took 0.060 s instead of 0.075 s on two cores of an Intel
CPU with AMX (before :func:`~at2.linalg.whitened_marginals` fused its passes).
"""

from __future__ import annotations

import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.mlls import VariationalELBO
from gpytorch.models import ApproximateGP
from gpytorch.variational import CholeskyVariationalDistribution, VariationalStrategy
from linear_operator.operators import DiagLinearOperator
from torch import Tensor
from tqdm.auto import trange

from .engine import Engine
from .linalg import fast_bfloat16, whitened_marginals
from .model import AT2Surrogate, CurveGrid

_MIN_T = 1e-3


class _WhitenedStrategy(VariationalStrategy):
    """``VariationalStrategy`` (whitened, Cholesky-parametrised ``q(u) = N(m, L_S L_S')``) whose
    training call returns only marginal variances, computed with one ``M x M x n`` product; see
    the module docstring. Identical in value to the parent's when ``product_dtype`` is None (else
    the products named there are computed in it); eval mode is the parent's unless
    ``cells`` are given.

    ``L_S``'s parameter is kept lower triangular, as initialised, by a hook that zeroes the upper
    triangle of its gradient (plain SGD then never moves it), so the training path reads it
    without the two ``tril`` passes, forward and backward, that the forward and the KL term would
    otherwise take each step."""

    def __init__(self, model: ApproximateGP, inducing_points: Tensor, grid: CurveGrid,
                 product_dtype: torch.dtype | None = None) -> None:
        super().__init__(model, inducing_points, CholeskyVariationalDistribution(
            inducing_points.shape[0]), learn_inducing_locations=True)
        self.grid = grid
        self.product_dtype = product_dtype
        self._variational_distribution.chol_variational_covar.register_hook(Tensor.tril)

    def __call__(self, x: Tensor, prior: bool = False, diag: bool = True,
                 cells: tuple[Tensor, Tensor, Tensor] | None = None,
                 **kwargs) -> MultivariateNormal:
        """``q(f)`` at rows ``x (n, D + 2)``. The lean path (marginal variances only) runs in
        training, and in eval mode when ``cells`` are given: the rows' task, configuration and
        epoch indices on ``grid`` (``(n,)`` each), which let ``K_uf`` come from per-factor tables
        (:meth:`~at2.model.ColumnProductKernel.on_grid`)."""
        lean = diag and (self.training or cells is not None)
        if prior or not (lean and self.variational_params_initialized.item()):
            return super().__call__(x, prior=prior, diag=diag, **kwargs)
        self._clear_cache()
        kernel, Z = self.model.covar_module, self.inducing_points
        shared = kernel.shared_terms(Z)
        K_uu = kernel.forward(Z, Z, **shared)
        K_uu.diagonal().add_(self.jitter_val)
        K_uf = (kernel.forward(Z, x, **shared) if cells is None
                else kernel.on_grid(Z, self.grid, *cells, **shared))
        q = self._variational_distribution
        mean, reduction = whitened_marginals(K_uu, K_uf, q.variational_mean,
                                             q.chol_variational_covar, self.product_dtype)
        variance = (kernel.forward(x, x, diag=True, task_matrix=shared["task_matrix"])
                    + self.jitter_val + reduction)
        return MultivariateNormal(self.model.mean_module(x) + mean,
                                  DiagLinearOperator(variance.clamp_min(1e-10)))

    @torch.no_grad()
    def initialize_variational(self, generator: torch.Generator) -> None:
        """What gpytorch does at the first call, ``q(u)`` at the whitened prior ``N(0, I)`` with
        its mean jittered by ``mean_init_std``, drawn from ``generator`` instead of the global
        random state (which made runs of one seed differ within a process)."""
        q = self._variational_distribution
        jitter = torch.randn(q.variational_mean.shape, generator=generator)
        q.variational_mean.copy_(jitter * q.mean_init_std)
        q.chol_variational_covar.copy_(torch.eye(q.chol_variational_covar.shape[-1]))
        self.variational_params_initialized.fill_(1)

    def kl_divergence(self) -> Tensor:
        """``KL(N(m, L_S L_S') || N(0, I))`` in closed form."""
        q = self._variational_distribution
        L_S = q.chol_variational_covar  # lower triangular (class docstring)
        return 0.5 * (L_S.square().sum() + q.variational_mean.square().sum() - L_S.shape[-1]
                      - torch.log(torch.diagonal(L_S).square()).sum())


class _SparseGP(ApproximateGP):
    def __init__(self, model: AT2Surrogate, inducing_points: Tensor, grid: CurveGrid,
                 product_dtype: torch.dtype | None) -> None:
        super().__init__(_WhitenedStrategy(self, inducing_points, grid, product_dtype))
        self.mean_module = model.mean
        self.covar_module = model.covar_module

    def forward(self, x: Tensor) -> MultivariateNormal:
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))


def warmup_linear(total_steps: int, warmup_ratio: float):
    """Learning-rate factor: linear warm-up over ``warmup_ratio`` of the steps, then linear decay
    to zero (the schedule of the paper's sweep)."""
    warmup = max(1, int(round(warmup_ratio * total_steps)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


class VariationalEngine(Engine):
    """SVGP inference and ELBO training for :class:`AT2Surrogate` (module docstring).

    Args:
        model: The surrogate, initialised in the data's units
            (:meth:`~at2.model.AT2Surrogate.initialize_from`); moved to the grid's device and
            dtype (float32 is typical here) and rescaled to standardised units (module docstring).
        grid: The curves; its last task is the target.
        inducing: Number of inducing points (default 1000).
        epochs: Offline training epochs (default 200).
        refit_epochs: Epochs after each new observation (default 3).
        lr, momentum, warmup_ratio, batch_size: SGD settings (defaults 0.02, 0.8, 0.01, 1000).
        seed: Seeds the inducing cells and the minibatch order.
        mixed_precision: Compute a training step's largest products, ``L_S' K_uu^-1/2 K_uf``, the
            two of its gradient and the ``K_uu`` gradient's ``G A'`` (``M x M x batch`` each), in
            bfloat16 with float32 accumulation (the rest stays in the model's dtype). The first
            is also that of :meth:`posterior_grid`'s variances. Default None: True where the
            grid's device has fast bfloat16 products (:func:`~at2.linalg.fast_bfloat16`), False
            elsewhere, where they are emulated and dozens of times slower than in float32.
    """

    name = "variational"
    models_offset = False
    options = {"inducing": (int, 1), "epochs": (int, 0), "refit_epochs": (int, 0),
               "lr": (float, 0), "momentum": (float, 0, 1), "warmup_ratio": (float, 0, 1),
               "batch_size": (int, 1), "seed": (int,), "mixed_precision": (bool,)}

    def __init__(self, model: AT2Surrogate, grid: CurveGrid, inducing: int = 1000,
                 epochs: int = 200, refit_epochs: int = 3, lr: float = 0.02,
                 momentum: float = 0.8, warmup_ratio: float = 0.01, batch_size: int = 1000,
                 seed: int = 0, mixed_precision: bool | None = None) -> None:
        self.check_options({"inducing": inducing, "epochs": epochs, "refit_epochs": refit_epochs,
                            "lr": lr, "momentum": momentum, "warmup_ratio": warmup_ratio,
                            "batch_size": batch_size, "seed": seed,
                            "mixed_precision": mixed_precision})
        self.check_offset(model.offset_kernel.fraction)
        self.model = model.to(device=grid.values.device, dtype=grid.values.dtype)
        self.shift, self.scale = _standardisation(grid.values[grid.observed])
        with torch.no_grad():  # the model arrives in data units (AT2Surrogate.initialize_from)
            model.mean.constants.sub_(self.shift).div_(self.scale)
            model.task_kernel.outputscale = model.task_kernel.outputscale / self.scale**2
            # plain SGD diverges from a small initial noise (first ELBO gradients of order
            # residual^2 / noise): start every task at the data's variance
            model.likelihood.noise = model.task_kernel.outputscale.expand(grid.shape[0])
        self.grid = grid
        self.epochs, self.refit_epochs = epochs, refit_epochs
        self.lr, self.momentum, self.warmup_ratio = lr, momentum, warmup_ratio
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        T, C, E = grid.shape
        pick = torch.randperm(T * C * E, generator=self.generator)[: min(inducing, T * C * E)]
        Z = grid.inputs(*torch.unravel_index(pick.to(grid.values.device), (T, C, E)))
        if mixed_precision is None:
            mixed_precision = fast_bfloat16(Z.device)
        self.mixed_precision = mixed_precision
        self.gp = _SparseGP(model, Z, grid, torch.bfloat16 if mixed_precision else None).to(Z)
        self.gp.variational_strategy.initialize_variational(self.generator)
        discrete = torch.zeros(Z.shape[-1], dtype=torch.bool, device=Z.device)
        discrete[: 1 + len(model.space.categorical)] = True  # task and choice columns are indices
        self.gp.variational_strategy.inducing_points.register_hook(
            lambda grad: grad.masked_fill(discrete, 0.0))

    def _data(self) -> tuple[Tensor, Tensor, Tensor]:
        """All observed cells: rows ``(N, D + 2)``, values ``(N,)`` and grid indices ``(3, N)``
        (task, configuration, epoch)."""
        cells = torch.nonzero(self.grid.observed, as_tuple=True)
        y = (self.grid.values[cells] - self.shift) / self.scale
        return self.grid.inputs(*cells), y, torch.stack(cells)

    def _train(self, epochs: int, progress: bool = False) -> list[float]:
        self.model.task_kernel.update(self.grid.values, self.grid.observed)
        X, y, cells = self._data()
        elbo = VariationalELBO(self.model.likelihood, self.gp, num_data=len(y))
        parameters = {*self.gp.parameters(), *self.model.likelihood.parameters()}
        optimizer = torch.optim.SGD(parameters, lr=self.lr, momentum=self.momentum)
        batches = -(-len(y) // self.batch_size)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_linear(epochs * batches, self.warmup_ratio))
        inducing = self.gp.variational_strategy.inducing_points
        history = []
        self.gp.train()
        for _ in trange(epochs, desc="variational fit", disable=not progress, leave=False):
            order = torch.randperm(len(y), generator=self.generator).to(y.device)
            total = 0.0
            for batch in order.split(self.batch_size):
                optimizer.zero_grad(set_to_none=True)
                loss = -elbo(self.gp(X[batch], cells=cells[:, batch].unbind()), y[batch],
                             x=X[batch])
                loss.backward()
                optimizer.step()
                schedule.step()
                with torch.no_grad():
                    inducing[:, -1].clamp_(min=_MIN_T)
                total += loss.detach() * len(batch)
            history.append(-(total / len(y)).item())
        self.gp.eval()
        return history

    def fit(self, progress: bool = False) -> list[float]:
        """The offline fit. A target without observations gets no gradient for its noise
        variance, which then starts as a typical source's: the geometric mean of the sources'."""
        history = self._train(self.epochs, progress)
        if not self.grid.observed[-1].any():
            with torch.no_grad():
                noise = self.model.likelihood.noise
                self.model.likelihood.noise = torch.cat([noise[:-1],
                                                         noise[:-1].log().mean().exp()[None]])
        return history

    def update(self) -> None:
        self._train(self.refit_epochs)

    @torch.no_grad()
    def posterior_grid(self) -> tuple[Tensor, Tensor]:
        C, E = self.grid.shape[1:]
        config = torch.arange(C, device=self.grid.values.device).repeat_interleave(E)
        epoch = torch.arange(E, device=self.grid.values.device).repeat(C)
        task = torch.full_like(config, self.grid.target)
        f = self.gp(self.grid.inputs(self.grid.target, config, epoch), cells=(task, config, epoch))
        return (self.shift + self.scale * f.mean.view(C, E),
                self.scale**2 * f.variance.view(C, E))

    def predict(self, X: Tensor) -> MultivariateNormal:
        f = self.gp(X)
        return MultivariateNormal(self.shift + self.scale * f.mean,
                                  f.lazy_covariance_matrix * self.scale**2)


def _standardisation(values: Tensor) -> tuple[Tensor, Tensor]:
    """Shift and scale of values ``(n,)``: their mean and standard deviation (0 and 1 when there
    are too few values or they are constant)."""
    if values.numel() < 2:
        return values.new_zeros(()), values.new_ones(())
    scale = values.std()
    return values.mean(), torch.where(scale > 0, scale, torch.ones_like(scale))
