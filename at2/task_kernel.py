"""AT2's task kernel: similarity of tasks from their low-fidelity learning curves.

For tasks ``i, j`` let ``M_ij`` be the (configuration, epoch) cells observed in both and
``r_ij = |M_ij| / (C E)`` the matched fraction of the grid. With each task's values centred by its
own mean over ``M_ij``::

    d_ij = ||(y_i - mean_i) - (y_j - mean_j)||^2 / |M_ij|      (0.5 if |M_ij| <= 1; 0 if i = j)
    g_ij = U / (1 + (U - 1) r_ij)
    k_ij = s * exp(-d_ij / (l * g_ij)^2)                       s, l > 0, U > 1 (initially 1.5)

The distances come from the data (no gradient) and are recomputed by :meth:`update` whenever a
task gains observations; ``s``, ``l`` and ``U`` are learned. Such a similarity matrix can be
indefinite (a target compared with the sources on a few early cells looks close to all of them,
sources that differ among themselves included), so it is made positive semi-definite, in one of
three ways (``psd``):

* ``"nonnegative"`` (default): the sources' block is projected on its own, the target's (last
  task's) row is replaced by the one whose weights on the sources (``w = K_SS^+ k_St``, the
  target's conditional mean ``sum_j w_j f_j``) have their negative entries set to zero, and that
  row is shrunk along its direction just enough to be PSD (:func:`~at2.linalg.psd_complete_last`).
  The sources' similarities do not depend on the target's few cells, the target keeps variance of
  its own whenever its row allows it, and it is never predicted as a contrast of nearly collinear
  sources (weights of either sign that cancel, such as 0.74 / -1.60 / 1.89 / 0.04).
* ``"target_row"``: the same without setting negative weights to zero.
* ``"nearest"``: the nearest PSD matrix (negative eigenvalues set to zero). Every entry moves, the
  sources' similarities included, and the target is usually left with no variance of its own: a
  fixed combination of the sources.
"""

from __future__ import annotations

from functools import partial

import torch
from gpytorch.constraints import GreaterThan, Positive
from gpytorch.kernels import Kernel
from torch import Tensor

from .linalg import psd_complete_last, psd_project

PSD_REPAIRS = {"nearest": psd_project, "target_row": psd_complete_last,
               "nonnegative": partial(psd_complete_last, nonnegative=True)}
DEFAULT_TASK_PSD = "nonnegative"


def set_constrained(module: torch.nn.Module, name: str, value: float | Tensor) -> None:
    """Set ``module.raw_<name>`` so that its constrained value is ``value``."""
    raw = getattr(module, f"raw_{name}")
    constraint = getattr(module, f"raw_{name}_constraint")
    module.initialize(**{f"raw_{name}": constraint.inverse_transform(
        torch.as_tensor(value).to(raw))})


def low_fidelity_distance(values: Tensor, observed: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise task distances and matched fractions, for all pairs at once.

    Args:
        values: ``(T, N)`` curve values on a shared grid of N (configuration, epoch) cells; the
            entries where ``observed`` is false are ignored (NaN allowed).
        observed: ``(T, N)`` bool.

    Returns:
        ``d (T, T)`` and ``r (T, T)`` as defined in the module docstring.
    """
    m = observed.to(values.dtype)
    y = torch.where(observed, values, torch.zeros_like(values))
    count = m @ m.T  # |M_ij|
    sum_i = y @ m.T  # sum over M_ij of y_i; sum of y_j is its transpose
    sq_i = (y * y) @ m.T
    cross = y @ y.T
    n = count.clamp_min(1.0)
    mean_gap = (sum_i - sum_i.T) / n
    d = ((sq_i + sq_i.T - 2 * cross) / n - mean_gap**2).clamp_min(0.0)
    d = torch.where(count <= 1, torch.full_like(d, 0.5), d)
    d.fill_diagonal_(0.0)
    return d, count / values.shape[-1]


class TaskSimilarityKernel(Kernel):
    """``k(i, j)`` between task indices, from low-fidelity curve similarity (module docstring).

    Inputs are task indices stored as floats: ``x1 (..., n, 1)``, ``x2 (..., m, 1)``; output
    ``(..., n, m)``. Call :meth:`update` with the tasks' curves before use.

    Args:
        num_tasks: T, the number of tasks (sources and target, the target last).
        psd: How the matrix is made PSD: ``"nonnegative"`` (default), ``"target_row"`` or
            ``"nearest"`` (module docstring).
    """

    has_lengthscale = True

    def __init__(self, num_tasks: int, psd: str = DEFAULT_TASK_PSD, **kwargs) -> None:
        if psd not in PSD_REPAIRS:
            raise ValueError(f"unknown psd repair {psd!r}; choose from {sorted(PSD_REPAIRS)}")
        super().__init__(lengthscale_constraint=Positive(), **kwargs)
        self.num_tasks, self.psd = num_tasks, psd
        self.register_parameter("raw_outputscale", torch.nn.Parameter(torch.zeros(())))
        self.register_constraint("raw_outputscale", Positive())
        self.register_parameter("raw_discount", torch.nn.Parameter(torch.zeros(())))
        self.register_constraint("raw_discount", GreaterThan(1.0))
        self.register_buffer("distance", torch.full((num_tasks, num_tasks), 0.5))
        self.register_buffer("matched", torch.zeros(num_tasks, num_tasks))
        self.distance.fill_diagonal_(0.0)
        self.initialize(outputscale=1.0, lengthscale=1.0, discount=1.5)

    @property
    def outputscale(self) -> Tensor:
        return self.raw_outputscale_constraint.transform(self.raw_outputscale)

    @outputscale.setter
    def outputscale(self, value: float | Tensor) -> None:
        set_constrained(self, "outputscale", value)

    @property
    def discount(self) -> Tensor:
        """U > 1: how much a small overlap shrinks the distance's weight."""
        return self.raw_discount_constraint.transform(self.raw_discount)

    @discount.setter
    def discount(self, value: float | Tensor) -> None:
        set_constrained(self, "discount", value)

    @torch.no_grad()
    def update(self, values: Tensor, observed: Tensor) -> None:
        """Recompute distances from curves: ``values``/``observed`` of shape ``(T, C, E)``."""
        if values.shape[0] != self.num_tasks:
            raise ValueError(f"expected curves of {self.num_tasks} tasks, got {values.shape[0]}")
        d, r = low_fidelity_distance(values.flatten(1), observed.flatten(1))
        self.distance.copy_(d)
        self.matched.copy_(r)

    def matrix(self) -> Tensor:
        """The ``(T, T)`` task covariance (PSD)."""
        u = self.discount
        g = u / (1 + (u - 1) * self.matched)
        k = self.outputscale * torch.exp(-self.distance / (self.lengthscale.squeeze() * g) ** 2)
        return PSD_REPAIRS[self.psd](k)

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False,
                task_matrix: Tensor | None = None, **params) -> Tensor:
        """``task_matrix``: :meth:`matrix`, when the caller has it already (default: computed)."""
        k = self.matrix() if task_matrix is None else task_matrix
        i, j = x1[..., 0].long(), x2[..., 0].long()
        if diag:
            return k[i, j]
        # one-hot products rather than k[i, j] with an (n, m) index: the backward of the latter
        # scatters n * m values into T x T (index_put), the costliest op of a minibatch step
        left = torch.nn.functional.one_hot(i, self.num_tasks).to(k)
        right = torch.nn.functional.one_hot(j, self.num_tasks).to(k)
        return left @ k @ right.mT
