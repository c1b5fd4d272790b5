"""Amortized Auto-Tuning (AT2): multi-task multi-fidelity GP + UCB over (configuration, epoch).

* :mod:`at2.task_kernel`, :mod:`at2.deep_kernel`, :mod:`at2.epoch_kernel` — the three kernels;
  :mod:`at2.offset_kernel` — the target's own offset per configuration, added to their product.
* :mod:`at2.model` — the surrogate (kernels, per-task mean and noise) and the curve grid.
* :mod:`at2.exact` — exact Kronecker inference; :mod:`at2.variational` — the paper's SVGP.
* :mod:`at2.acquisition` — UCB; :mod:`at2.tuner` — the ask/tell tuner and database replay.
"""

import warnings

with warnings.catch_warnings():  # linear_operator, imported by gpytorch, calls torch.jit.script
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
    import linear_operator  # noqa: F401

from .acquisition import UpperConfidenceBound
from .deep_kernel import ConfigFeatures, DeepPolynomialKernel
from .epoch_kernel import FreezeThawKernel
from .exact import ExactEngine
from .model import AT2Surrogate, CurveGrid, TaskConstantMean, TaskGaussianLikelihood
from .offset_kernel import ConfigurationOffsetKernel
from .task_kernel import TaskSimilarityKernel
from .tuner import AT2Tuner, Query, QueryRecord, Tuner, TuningResult

__all__ = [
    "AT2Surrogate", "AT2Tuner", "ConfigFeatures", "ConfigurationOffsetKernel", "CurveGrid",
    "DeepPolynomialKernel", "ExactEngine", "FreezeThawKernel", "Query", "QueryRecord",
    "TaskConstantMean", "TaskGaussianLikelihood", "TaskSimilarityKernel", "Tuner", "TuningResult",
    "UpperConfidenceBound",
]
