"""Where AT2's recommendations come from, per published pair: how well the posterior orders the
target's configurations, how confident it is, and how the budget is spent.

    python benchmarks/at2_diagnostics.py --database data/HyperRec.h5 [--engine exact] [--seed 2021]

At queries 10, 25 and 100 it prints, for each pair: the Spearman correlation of each
configuration's posterior best (highest mean over its epochs) with its true best-epoch value, beside
the same for the zero-shot ordering by mean source rank; the true ranks of the posterior's top five;
for configurations not trained yet, the mean posterior standard deviation at the last epoch and the
RMS error of their posterior best; and, after the last query, the epochs spent per configuration
(most first, with each one's true rank). It measures; it does not judge.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter

import numpy as np
from scipy.stats import spearmanr

from at2.cli import parse_options
from at2.tuner import ENGINES, AT2Tuner
from hyperrec.database import Database

CHECKPOINTS = (10, 25, 100)


def diagnose(tuner: AT2Tuner, budget: int) -> list[str]:
    """Replay ``budget`` queries and describe the posterior at the checkpoints."""
    db, target = tuner.database, tuner.target
    oracle = db.curves(tuner.metric, [target], tuner.profile)[0]
    best = np.nanmax(oracle, -1)
    rank = db.ranking(target, tuner.metric, tuner.profile)
    source_rank = np.mean([db.ranking(s, tuner.metric, tuner.profile) for s in tuner.sources], 0)
    zero_shot = spearmanr(-source_rank, best)[0]
    column = {cid: i for i, cid in enumerate(tuner.grid.config_ids)}
    lines, spent = [], Counter()
    for index in range(1, budget + 1):
        query = tuner.ask()
        c = column[query.config_id]
        tuner.tell(query.config_id, query.epoch, float(oracle[c, query.epoch - 1]))
        spent[query.config_id] += 1
        if index in CHECKPOINTS:
            mean, var = (v.cpu().numpy() for v in tuner.posterior())
            predicted = mean.max(-1)
            untrained = ~tuner.observed.any(-1).cpu().numpy()
            top = np.argsort(-predicted, kind="stable")[:5]
            error = (predicted - best)[untrained]
            top20 = error[np.argsort(-best[untrained], kind="stable")[:20]]
            lines.append(
                f"  q{index}: spearman {spearmanr(predicted, best)[0]:.2f} (zero-shot "
                f"{zero_shot:.2f}); top-5 ranks {sorted(rank[top].tolist())}; untrained: std "
                f"{np.sqrt(var[untrained, -1]).mean():.4f}, error mean {error.mean():+.4f} RMS "
                f"{np.sqrt(np.mean(error**2)):.4f}, on the true top 20 mean {top20.mean():+.4f}"
                f" RMS {np.sqrt(np.mean(top20**2)):.4f}")
    lines.append("  epochs spent (config: epochs, rank): " + ", ".join(
        f"{cid}: {n}, {rank[column[cid]]}" for cid, n in spent.most_common(6)))
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database", required=True)
    p.add_argument("--engine", choices=sorted(ENGINES), default="exact")
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    db = Database.open(args.database)
    for k, pair in enumerate(db.pairs):
        tuner = AT2Tuner(db, pair.sources, pair.target, engine=args.engine, seed=args.seed,
                         engine_options=parse_options(args.option))
        print(f"pair {k} ({pair.target})", *diagnose(tuner, args.budget), sep="\n")  # noqa: T201 - the output


if __name__ == "__main__":
    main()
