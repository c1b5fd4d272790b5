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
"""

from __future__ import annotations

import torch
from gpytorch.kernels import Kernel, PolynomialKernel
from torch import Tensor, nn

from hyperrec.space import SearchSpace


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

    Inputs: encodings ``x1 (..., n, D)``, ``x2 (..., m, D)``; output ``(..., n, m)``.
    """

    def __init__(self, space: SearchSpace, **kwargs) -> None:
        super().__init__(**kwargs)
        self.features = ConfigFeatures(space)
        self.polynomial = PolynomialKernel(power=2)
        self.polynomial.offset = 1.0

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, **params) -> Tensor:
        f1 = self.features(x1)
        f2 = f1 if x2 is x1 else self.features(x2)
        k = self.polynomial.forward(f1, f2, diag=diag)
        d1 = self.polynomial.forward(f1, f1, diag=True)
        d2 = d1 if f2 is f1 else self.polynomial.forward(f2, f2, diag=True)
        if diag:
            return k / torch.sqrt(d1 * d2)
        return k / torch.sqrt(d1.unsqueeze(-1) * d2.unsqueeze(-2))
