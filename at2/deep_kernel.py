"""AT2's deep kernel over configurations of any :class:`~hyperrec.space.SearchSpace`.

Features: a learned embedding for each categorical choice (one row per option plus one for
"inactive", width = the number of options), concatenated with the space's numeric encoding
(``[0, 1]`` per numeric slot), then an MLP ``Linear(w, w) - Tanh - Linear(w, w)`` with ``w`` the
concatenated width. The kernel is the degree-2 polynomial kernel ``p(x, x') = (phi(x) . phi(x') +
c)^2`` on the features, normalised to unit variance::

    k(x, x') = p(x, x') / sqrt(p(x, x) p(x', x'))

Why normalised: the raw polynomial kernel lets the MLP give some configurations thousands of times
the prior variance of others. Fully observed source tasks cannot constrain that (HyperRec pair 4:
prior standard deviations of 1.7 to 9 accuracy units at the last epoch), and the target inherits
it, which ruins its predictions. Normalised, the kernel is a correlation between configurations
and all amplitude lives in the task and epoch kernels. Still positive semi-definite.

Computed as the squared inner product of unit vectors: with ``psi(x) = [phi(x), sqrt(c)] /
sqrt(|phi(x)|^2 + c)``, ``k(x, x') = (psi(x) . psi(x'))^2`` -- one matrix product and one square
over the ``n x m`` output, which matters in the variational engine's minibatch steps.
"""

from __future__ import annotations

import torch
from gpytorch.constraints import Positive
from gpytorch.kernels import Kernel
from torch import Tensor, nn

from hyperrec.space import SearchSpace

from .task_kernel import set_constrained


class ConfigFeatures(nn.Module):
    """``phi``: encodings ``(..., D)`` from ``space.encode`` -> features ``(..., w)``."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.n_categorical = len(space.categorical)
        self.embeddings = nn.ModuleList(nn.Embedding(k + 1, k) for k in space.cardinalities)
        self.width = sum(space.cardinalities) + len(space.numeric)
        self.mlp = nn.Sequential(nn.Linear(self.width, self.width), nn.Tanh(),
                                 nn.Linear(self.width, self.width))

    def forward(self, x: Tensor) -> Tensor:
        codes = x[..., : self.n_categorical].round().long()
        parts = [emb(codes[..., i]) for i, emb in enumerate(self.embeddings)]
        return self.mlp(torch.cat([*parts, x[..., self.n_categorical:]], dim=-1))


class DeepPolynomialKernel(Kernel):
    """Normalised degree-2 polynomial kernel on :class:`ConfigFeatures` (module docstring).

    Inputs: encodings ``x1 (..., n, D)``, ``x2 (..., m, D)``; output ``(..., n, m)``. The offset
    ``c`` is learnable (positive, initially 1).
    """

    def __init__(self, space: SearchSpace, offset: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.features = ConfigFeatures(space)
        self.register_parameter("raw_offset", nn.Parameter(torch.zeros(())))
        self.register_constraint("raw_offset", Positive())
        set_constrained(self, "offset", offset)

    @property
    def offset(self) -> Tensor:
        return self.raw_offset_constraint.transform(self.raw_offset)

    def directions(self, x: Tensor) -> Tensor:
        """``psi``: encodings ``(..., D)`` -> unit vectors ``(..., w + 1)``."""
        phi = self.features(x)
        psi = torch.cat([phi, self.offset.sqrt().expand(*phi.shape[:-1], 1)], dim=-1)
        return psi / torch.linalg.vector_norm(psi, dim=-1, keepdim=True)

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False,
                config_directions1: Tensor | None = None, **params) -> Tensor:
        """``config_directions1``: :meth:`directions` of ``x1``, when the caller has them already
        (default: computed)."""
        psi1 = self.directions(x1) if config_directions1 is None else config_directions1
        psi2 = psi1 if x2 is x1 else self.directions(x2)
        if diag:
            return (psi1 * psi2).sum(-1).square()
        return (psi1 @ psi2.mT).square()
