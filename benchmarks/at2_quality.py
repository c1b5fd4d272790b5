"""Quality of AT2 on the published pairs: mean recommended rank at queries 10, 25, 50, 100 over
the five pairs of a database, beside random epoch-wise search computed the same way.

    python benchmarks/at2_quality.py --database data/HyperRec.h5 --engine exact --seeds 2021
    python benchmarks/at2_quality.py --database data/LCBench.h5 --engine variational \
        --option epochs=5 --option refit_epochs=1

Random search is averaged over ``--random-seeds`` seeds (default 20). Prints a Markdown table and
the wall time of the AT2 runs.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from at2.cli import parse_options
from at2.tuner import ENGINES, AT2Tuner
from experiments.baselines import RandomTuner
from hyperrec.database import Database

CHECKPOINTS = (10, 25, 50, 100)


def mean_ranks(make, db: Database, seeds, budget: int) -> np.ndarray:
    """``(pairs, budget)`` recommended rank, averaged over seeds."""
    return np.array([
        np.mean([make(db, pair, seed).tune(budget, progress=False).series("recommended_rank")
                 for seed in seeds], axis=0)
        for pair in db.pairs])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database", required=True)
    p.add_argument("--engine", choices=sorted(ENGINES), default="exact")
    p.add_argument("--seeds", type=int, nargs="+", default=[2021])
    p.add_argument("--random-seeds", type=int, default=20)
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    db = Database.open(args.database)
    options = parse_options(args.option)
    start = time.perf_counter()
    at2 = mean_ranks(lambda db, pair, seed: AT2Tuner(
        db, pair.sources, pair.target, engine=args.engine, seed=seed, engine_options=options),
        db, args.seeds, args.budget)
    seconds = time.perf_counter() - start
    random = mean_ranks(lambda db, pair, seed: RandomTuner(db, pair.sources, pair.target,
                                                           seed=seed),
                        db, range(args.random_seeds), args.budget)
    checkpoints = [c for c in CHECKPOINTS if c <= args.budget]
    lines = [f"{db.name}, budget {args.budget}, AT2 {args.engine} {options or ''} seeds "
             f"{args.seeds}; {len(db.pairs)} pairs in {seconds:.0f} s",
             "| method | " + " | ".join(f"q{c}" for c in checkpoints) + " |",
             "|---" * (len(checkpoints) + 1) + "|"]
    for name, ranks in ((f"AT2 ({args.engine})", at2), (f"random ({args.random_seeds} seeds)",
                                                        random)):
        mean = ranks.mean(0)
        lines.append(f"| {name} | " + " | ".join(f"{mean[c - 1]:.1f}" for c in checkpoints)
                     + " |")
    for k, ranks in enumerate(at2):
        lines.append(f"| pair {k} ({db.pairs[k].target}) | "
                     + " | ".join(f"{ranks[c - 1]:.1f}" for c in checkpoints) + " |")
    print("\n".join(lines))  # noqa: T201 - the benchmark's output


if __name__ == "__main__":
    main()
