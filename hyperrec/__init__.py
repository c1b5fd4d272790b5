"""HyperRec: the hyperparameter-recommendation database.

* :mod:`hyperrec.space` — nested search spaces; :mod:`hyperrec.spaces` — HyperRec and LCBench.
* :mod:`hyperrec.database` — the HDF5 learning-curve store.
* :mod:`hyperrec.importers` — safe import of the databases published with the AT2 paper.
"""

from .database import Best, Database, DatabaseError, Pair
from .space import (
    Choice,
    ConfigError,
    Derived,
    IntUniform,
    LogUniform,
    SearchSpace,
    Uniform,
)
from .spaces import hyperrec_space, lcbench_space

__all__ = [
    "Best", "Choice", "ConfigError", "Database", "DatabaseError", "Derived", "IntUniform",
    "LogUniform", "Pair", "SearchSpace", "Uniform", "hyperrec_space", "lcbench_space",
]
