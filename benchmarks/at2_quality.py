r"""Quality of AT2 on the published pairs: mean recommended rank at queries 10, 25, 50, 100 over
the five pairs of a database, beside random epoch-wise search computed the same way. With
``--every-target``, over every task of the database as the target instead (27 HyperRec, 35
LCBench), each with as many source tasks as a published pair has, drawn at random (``--pair-seed``)
from the others: five pairs rank coarsely, a small change to the model moves their mean by
several ranks.

    python benchmarks/at2_quality.py --database data/HyperRec.h5 --engine exact --seeds 2021
    python benchmarks/at2_quality.py --database data/LCBench.h5 --engine variational \
        --option epochs=5 --option refit_epochs=1
    python benchmarks/at2_quality.py --database data/LCBench.h5 --task-psd nearest
    python benchmarks/at2_quality.py --database data/HyperRec.h5 --diagnose
    python benchmarks/at2_quality.py --database data/LCBench.h5 --every-target --random-seeds 5

Random search is averaged over ``--random-seeds`` seeds (default 20). Prints a Markdown table and
the wall time of the AT2 runs. Beside AT2's recommendation the table gives, from the same runs, the
rank of the configuration with the highest value observed so far: where it is better, the loop
found good configurations and the posterior's recommendation passed them over; where both are
poor, the loop did not train them. With several seeds an entry is the mean over seeds and pairs
± the standard error, over seeds, of the mean over pairs. ``--beta`` sets UCB's exploration
weight (default 0.25), ``--restarts`` the number of offline fits from fresh initial weights
(default: the engine's, 4 exact, 1 variational) and ``--offset`` the target's own offset per
configuration (default: the engine's, 0.05 exact, 0 variational). For a database with several
profiles (HyperRec has two training seeds) a last reference row gives the rank of the
configuration that is best when trained with another seed: the ranks a recommendation can be
expected to carry from one training run to the next.

With ``--diagnose`` it prints instead, per pair and seed, where the recommendations come from: at
queries 10, 25 and 100 the Spearman correlation of each configuration's posterior best (highest
mean over its epochs) with its true best-epoch value, beside the same for the zero-shot order by
mean source rank; the true ranks of the posterior's top five; for configurations not trained yet,
the mean posterior standard deviation at the last epoch and the mean and RMS error of their
posterior best (all of them, and the 20 truly best); and, after the last query, the epochs spent
per configuration (most first, with each one's true rank) and how the fitted model ties the target
to the sources: the fraction of the target's prior variance (task kernel) left given the sources,
the weights of the sources' deviations in the target's conditional mean, the target's constant
mean and noise variance, and the RMS misfit of the posterior mean on the target's observations.
It measures; it does not judge.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter

import numpy as np
import torch
from scipy.stats import spearmanr

from at2.cli import parse_options
from at2.task_kernel import DEFAULT_TASK_PSD, PSD_REPAIRS
from at2.tuner import ENGINES, AT2Tuner
from at2.warp import DEFAULT_WARP, WARP_CHOICES
from experiments.baselines import RandomTuner
from hyperrec.database import Database, Pair

CHECKPOINTS = (10, 25, 50, 100)
DIAGNOSE_AT = (10, 25, 100)


def every_target(db: Database, sources: int, seed: int) -> list[Pair]:
    """Every task of ``db`` as a target, with ``sources`` source tasks drawn at random (seeded)
    from the others."""
    rng = np.random.default_rng(seed)
    return [Pair(tuple(str(s) for s in rng.choice([s for s in db.tasks if s != t], sources,
                                                  replace=False)), t)
            for t in db.tasks]


def run_ranks(make, db: Database, pairs: list[Pair], seeds, budget: int,
              profile: int = 0) -> np.ndarray:
    """``(pairs, seeds, 2, budget)`` rank on ``profile`` of the recommended configuration and of
    the configuration with the highest value observed so far (first reached on ties)."""
    column = {cid: i for i, cid in enumerate(db.config_ids)}
    out = []
    for pair in pairs:
        rank = db.ranking(pair.target, profile=profile)
        runs = []
        for seed in seeds:
            result = make(db, pair, seed).tune(budget, progress=False)
            values = np.array(result.series("value"))
            configs = np.array([column[cid] for cid in result.series("config_id")])
            new_best = values > np.maximum.accumulate(np.r_[-np.inf, values[:-1]])
            at = np.maximum.accumulate(np.where(new_best, np.arange(len(values)), 0))
            runs.append([result.series("recommended_rank"), rank[configs[at]]])
        out.append(runs)
    return np.array(out)


def other_profile_ranks(db: Database, pairs: list[Pair], budget: int,
                        profile: int = 0) -> np.ndarray | None:
    """``(pairs, profiles - 1, budget)`` rank on ``profile`` of the configuration that is best on
    each other profile (the same configurations trained with another seed): what the ranks are
    worth when training noise alone decides them. ``None`` for a database with one profile."""
    if db.profiles < 2:
        return None
    ranks = [[db.ranking(pair.target, profile=profile)[db.ranking(pair.target, profile=p).argmin()]
              for p in range(db.profiles) if p != profile] for pair in pairs]
    return np.repeat(np.array(ranks)[..., None], budget, axis=-1)


def mean_and_error(ranks: np.ndarray) -> str:
    """Mean of ``(pairs, seeds)`` ranks, with the standard error of the mean over pairs across
    seeds when there are several seeds."""
    per_seed = ranks.mean(0)
    if len(per_seed) < 2:
        return f"{per_seed.mean():.1f}"
    return f"{per_seed.mean():.1f} ± {per_seed.std(ddof=1) / np.sqrt(len(per_seed)):.1f}"


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
        if index in DIAGNOSE_AT:
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
    lines.append("  " + target_tie(tuner))
    return lines


@torch.no_grad()
def target_tie(tuner: AT2Tuner) -> str:
    """How the fitted model ties the target to the sources (module docstring)."""
    engine = tuner.engine
    model = engine.model
    K = model.task_kernel.matrix()
    weights = torch.linalg.pinv(K[:-1, :-1]) @ K[-1, :-1]
    left = (K[-1, -1] - K[-1, :-1] @ weights) / K[-1, -1]
    mean, _ = tuner.posterior()
    misfit = (mean - tuner.modelled.values[-1])[tuner.observed]
    return (f"target given sources: {float(left):.1e} of its variance left, source weights "
            f"{np.round(weights.cpu().numpy(), 2).tolist()} (sum {float(weights.sum()):.2f}); "
            f"target mean {float(engine.shift + engine.scale * model.mean.constants[-1]):+.2f}, "
            f"noise variance {float(engine.noise(torch.tensor(-1))):.4f}, RMS misfit on its "
            f"observations {float(misfit.square().mean().sqrt()):.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database", required=True)
    p.add_argument("--engine", choices=sorted(ENGINES), default="exact")
    p.add_argument("--seeds", type=int, nargs="+", default=[2021])
    p.add_argument("--random-seeds", type=int, default=20)
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--profile", type=int, default=0,
                   help="the profile (training seed) read for sources and target, and ranked on")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--task-psd", choices=sorted(PSD_REPAIRS), default=DEFAULT_TASK_PSD)
    p.add_argument("--beta", type=float, default=0.25, help="UCB exploration weight")
    p.add_argument("--restarts", type=int, help="offline fits from as many initial weight draws "
                   "(default: the engine's)")
    p.add_argument("--offset", type=float, help="the target's own offset per configuration, as a "
                   "fraction of its prior variance (default: the engine's)")
    p.add_argument("--warp", choices=sorted(WARP_CHOICES), default=DEFAULT_WARP,
                   help="model the metric through this transform (at2.warp)")
    p.add_argument("--every-target", action="store_true",
                   help="every task as the target, with random sources, instead of the published "
                        "pairs")
    p.add_argument("--pair-seed", type=int, default=0,
                   help="seeds the sources drawn for --every-target")
    p.add_argument("--save", metavar="FILE.npz",
                   help="also save AT2's ranks per pair and seed, for paired comparisons: "
                        "ranks (pairs, seeds, 2, budget; recommended, best observed), targets, "
                        "seeds")
    p.add_argument("--diagnose", action="store_true",
                   help="per pair and seed: order, confidence and level of the posterior")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    db = Database.open(args.database)
    options = parse_options(args.option)
    pairs = (every_target(db, len(db.pairs[0].sources), args.pair_seed) if args.every_target
             else db.pairs)

    def make(db: Database, pair: Pair, seed: int) -> AT2Tuner:
        return AT2Tuner(db, pair.sources, pair.target, engine=args.engine, seed=seed,
                        engine_options=options, task_psd=args.task_psd, beta=args.beta,
                        warp=args.warp, restarts=args.restarts, offset=args.offset,
                        profile=args.profile)

    if args.diagnose:
        for k, pair in enumerate(pairs):
            for seed in args.seeds:
                lines = diagnose(make(db, pair, seed), args.budget)
                print(f"pair {k} ({pair.target}), seed {seed}", *lines, sep="\n")  # noqa: T201
        return
    start = time.perf_counter()
    at2 = run_ranks(make, db, pairs, args.seeds, args.budget, args.profile)
    seconds = time.perf_counter() - start
    if args.save:
        np.savez(args.save, ranks=at2, targets=[pair.target for pair in pairs], seeds=args.seeds)
    random = run_ranks(lambda db, pair, seed: RandomTuner(db, pair.sources, pair.target,
                                                          seed=seed, profile=args.profile),
                       db, pairs, range(args.random_seeds), args.budget, args.profile)
    checkpoints = [c for c in CHECKPOINTS if c <= args.budget]
    lines = [f"{db.name}, profile {args.profile}, budget {args.budget}, AT2 {args.engine} "
             f"{options or ''} beta {args.beta} task_psd {args.task_psd} warp {args.warp} restarts "
             f"{args.restarts or 'default'} offset "
             f"{'default' if args.offset is None else args.offset} seeds "
             f"{args.seeds}; {len(pairs)} pairs in {seconds:.0f} s",
             "| method | " + " | ".join(f"q{c}" for c in checkpoints) + " |",
             "|---" * (len(checkpoints) + 1) + "|"]
    rows = ((f"AT2 ({args.engine})", at2[:, :, 0]),
            ("AT2, best observed so far", at2[:, :, 1]),
            (f"random ({args.random_seeds} seeds)", random[:, :, 0]))
    other = other_profile_ranks(db, pairs, args.budget, args.profile)
    if other is not None:
        rows += (("best configuration of another profile (training seed)", other),)
    rows += tuple((f"pair {k} ({pair.target})", at2[k:k + 1, :, 0]) for k, pair in enumerate(pairs))
    for name, ranks in rows:                          # (pairs, seeds, budget)
        lines.append(f"| {name} | " + " | ".join(
            mean_and_error(ranks[:, :, c - 1]) for c in checkpoints) + " |")
    print("\n".join(lines))  # noqa: T201 - the benchmark's output


if __name__ == "__main__":
    main()
