"""autoHyper: initial learning rates from the low-rank structure of short training runs.

* :mod:`at2.autohyper.evbmf` — EVBMF rank estimation; :mod:`at2.autohyper.metrics` — per-layer
  low-rank metrics of convolution weights.
* :mod:`at2.autohyper.search` — the trust-region search over a response.
* :mod:`at2.autohyper.lr` — :func:`find_initial_lr` and the epoch-trainer contract.
* :mod:`at2.autohyper.study` — a small CNN, the fixed training that judges a learning rate.
"""

from .evbmf import EVBMFResult, evbmf
from .lr import (
    AutoHyperResult,
    EpochTrainer,
    Trial,
    TrialCurves,
    find_initial_lr,
    make_epoch_trainer,
)
from .metrics import LowRankMetrics, low_rank_metrics
from .search import Dimension, trust_region_search

__all__ = [
    "AutoHyperResult", "Dimension", "EVBMFResult", "EpochTrainer", "LowRankMetrics", "Trial",
    "TrialCurves", "evbmf", "find_initial_lr", "low_rank_metrics", "make_epoch_trainer",
    "trust_region_search",
]
