"""Report of a sweep: a Markdown table and PNG plots from the record directories.

    python -m experiments.report records/ --out report/

For every database and method, the mean and standard error over pairs and seeds of the
recommended configuration's rank (0 = best) and normalized regret at queries 10, 25, 50, 100
(``results.md``), and their curves versus queries (``rank_regret.png``; one query = one epoch
trained, so this is also the cumulative training cost in epochs) and versus the method's
cumulative wall time, offline fit included (``rank_regret_time.png``), one panel per database,
bands = one standard error.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the non-interactive backend
import numpy as np  # noqa: E402

from at2.records import RESULT_FILE, write_atomic  # noqa: E402
from hyperrec.cli import setup_logging  # noqa: E402

CHECKPOINTS = (10, 25, 50, 100)
METRICS = {"recommended_rank": "recommended rank", "regret": "normalized regret"}
log = logging.getLogger(__name__)

Runs = dict[tuple[str, str], dict[str, np.ndarray]]
"""(database, method) -> series name -> ``(runs, queries)`` array (NaN-padded)."""


def load(root: str | Path, methods: Sequence[str] | None = None,
         pairs: Sequence[int] | None = None) -> Runs:
    """Every complete record under ``root`` (``*_pair_<k>/<method>/seed_*/result.json``),
    grouped; optionally only those of ``methods`` and ``pairs``."""
    files = [f for f in sorted(Path(root).glob(f"*_pair_*/*/seed_*/{RESULT_FILE}"))
             if (methods is None or f.parts[-3] in methods)
             and (pairs is None or int(f.parts[-4].rpartition("_pair_")[2]) in pairs)]
    if not files:
        raise FileNotFoundError(f"{root}: no records (*_pair_<k>/<method>/seed_*/{RESULT_FILE}"
                                f"{'' if methods is None else f' of methods {list(methods)}'}"
                                f"{'' if pairs is None else f' of pairs {list(pairs)}'})")
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for f in files:
        result = json.loads(f.read_text())
        if result.get("fit_seconds") and result["seconds"]:  # the offline phase counts as cost
            result["seconds"][0] += result["fit_seconds"]
        grouped[result["database"], result["method"]].append(result)
    runs: Runs = {}
    for key, results in grouped.items():
        length = max(len(r["recommended_rank"]) for r in results)
        runs[key] = {name: np.array([np.pad(np.asarray(r[name], float), (0, length - len(r[name])),
                                            constant_values=np.nan) for r in results])
                     for name in (*METRICS, "seconds")}
    return runs


def mean_se(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over runs (axis 0), ignoring NaN padding."""
    finite = np.isfinite(values)
    n = finite.sum(0)
    mean = np.where(finite, values, 0).sum(0) / np.maximum(n, 1)
    squares = np.where(finite, values - mean, 0) ** 2
    sd = np.sqrt(squares.sum(0) / np.maximum(n - 1, 1))
    return np.where(n > 0, mean, np.nan), sd / np.sqrt(np.maximum(n, 1))


def table(runs: Runs) -> str:
    """Markdown: one row per (database, method), ``mean ± se`` per metric and checkpoint."""
    length = max(v["recommended_rank"].shape[1] for v in runs.values())
    checkpoints = [c for c in CHECKPOINTS if c <= length]
    head = " | ".join(f"{label.split()[-1]} q{c}" for label in METRICS.values()
                      for c in checkpoints)
    lines = [f"| database | method | runs | {head} |", "|---" * (3 + 2 * len(checkpoints)) + "|"]
    for (database, method), series in sorted(runs.items()):
        cells = []
        for name in METRICS:
            mean, se = mean_se(series[name])
            fmt = "{:.1f} ± {:.1f}" if name == "recommended_rank" else "{:.3f} ± {:.3f}"
            cells += [fmt.format(mean[c - 1], se[c - 1]) if c <= len(mean) else "" for c in
                      checkpoints]
        lines.append(f"| {database} | {method} | {len(series['seconds'])} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(runs: Runs, path: Path, versus_time: bool) -> None:
    """Rank (top row) and regret (bottom row) per database (columns), one line per method."""
    databases = sorted({d for d, _ in runs})
    fig, axes = plt.subplots(2, len(databases), figsize=(5.5 * len(databases), 7), squeeze=False)
    for j, database in enumerate(databases):
        for method in sorted(m for d, m in runs if d == database):
            series = runs[database, method]
            x = (np.nanmean(np.nancumsum(series["seconds"], 1), 0) if versus_time
                 else np.arange(1, series["seconds"].shape[1] + 1))
            for i, name in enumerate(METRICS):
                mean, se = mean_se(series[name])
                ax = axes[i, j]
                ax.plot(x, mean, label=method)
                ax.fill_between(x, mean - se, mean + se, alpha=0.2)
        for i, label in enumerate(METRICS.values()):
            ax = axes[i, j]
            ax.set_title(database if i == 0 else "")
            ax.set_ylabel(label)
            ax.set_xlabel("cumulative wall time of the method, offline fit included (s)"
                          if versus_time
                          else "queries (= epochs trained)")
            if versus_time:
                ax.set_xscale("log")
            ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(root: str | Path, out: str | Path, methods: Sequence[str] | None = None,
           pairs: Sequence[int] | None = None) -> Path:
    """Write ``results.md`` and the two plots into ``out``; returns the table's path."""
    runs = load(root, methods, pairs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "results.md", table(runs))
    plot(runs, out / "rank_regret.png", versus_time=False)
    plot(runs, out / "rank_regret_time.png", versus_time=True)
    log.info("report of %d (database, method) groups written to %s", len(runs), out)
    return out / "results.md"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("records", help="root of the record directories")
    p.add_argument("--out", default="report", help="output folder (default report/)")
    p.add_argument("--methods", type=lambda text: text.split(","), default=None,
                   help="comma-separated methods to include (default: all)")
    p.add_argument("--pairs", type=lambda text: [int(k) for k in text.split(",")], default=None,
                   help="comma-separated pair indices to include (default: all)")
    args = p.parse_args(argv)
    setup_logging()
    try:
        table_path = report(args.records, args.out, args.methods, args.pairs)
        print(table_path.read_text())  # noqa: T201 - the table
    except (FileNotFoundError, KeyError, ValueError) as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
