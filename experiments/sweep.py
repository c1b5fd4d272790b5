"""The reproduction sweep: databases x published pairs x methods x seeds, in parallel.

    python -m experiments.sweep --data data --methods at2,random,hyperband --seeds 0,1,2

Trials are independent (:mod:`experiments.reproduce`); finished ones are skipped, so an
interrupted sweep continues where it stopped when run again. Trials run in a process pool sized to
the cores (``--workers``), or on a Ray cluster (``--backend ray``: a local one, or the cluster at
``--address``; needs the ``ray`` extra). The exit status is 1 if any trial failed, and the failed
trials are listed.
"""

from __future__ import annotations

import argparse
import logging
import os
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm.auto import tqdm

from at2.cli import parse_options
from hyperrec.cli import setup_logging
from hyperrec.database import Database
from hyperrec.parallel import start_ray
from hyperrec.training import resolve_device

from .reproduce import METHODS, Trial, finished, run_trial

log = logging.getLogger(__name__)

DATABASES = ("HyperRec", "LCBench")
PAIRS = (0, 1, 2, 3, 4)
SEEDS = (0, 1, 2)
DEFAULT_METHODS = ("at2", "random", "random_full", "hyperband", "transfer_topk",
                   "freeze_thaw_gp", "mtgp")
"""Every method but ``lkgp``, which costs ~15 minutes per trial on a 2-core CPU (ask for it with
``--methods``)."""
QUICK = {"budget": 20, "seeds": (0,), "pairs": (0,)}
"""``--quick``: one pair per database, one seed, 20 queries (minutes on a 2-core CPU)."""


def trials(data: str | Path, databases: Iterable[str], pairs: Iterable[int],
           methods: Iterable[str], seeds: Iterable[int], **common) -> list[Trial]:
    """Every (database, pair, method, seed) trial; ``common``: ``budget``, ``profile``,
    ``device``, ``options`` (per method name: a dict of its options). Missing databases, pairs
    or a profile a database lacks, and a device this machine lacks, are refused here, before
    any trial runs."""
    options = common.pop("options", {})
    paths = [Path(data) / f"{name}.h5" for name in databases]
    pairs = list(pairs)
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: no such database (run `hyperrec "
                                "import-at2` first)")
    for path in paths:  # refuse what no trial could run before starting any
        db = Database.open(path)
        for pair in pairs:
            db.pair(pair)
        db.check_profile(common.get("profile", 0))
    resolve_device(common.get("device", "auto"))
    return [Trial(str(path), pair, method, seed, options=options.get(method, {}), **common)
            for path in paths for pair in pairs for method in methods for seed in seeds]


def _run(trial: Trial, root: str, threads: int) -> str:
    """Worker entry: one trial with ``threads`` torch threads; returns the record path."""
    torch.set_num_threads(threads)
    setup_logging(quiet=True)
    return str(run_trial(trial, root))


def _describe(trial: Trial) -> str:
    return f"{Path(trial.database).stem} pair {trial.pair} {trial.method} seed {trial.seed}"


def run_sweep(todo: Sequence[Trial], root: str | Path, *, workers: int | None = None,
              backend: str = "process", address: str | None = None) -> list[tuple[Trial, str]]:
    """Run ``todo`` (skipping finished trials); returns the failed ones with their error."""
    root = str(root)
    dbs = {path: Database.open(path) for path in {t.database for t in todo}}
    pending = [t for t in todo
               if not finished(t, t.directory(root, dbs[t.database].name), dbs[t.database])]
    log.info("%d trials, %d already finished", len(todo), len(todo) - len(pending))
    workers = max(1, min(workers or os.cpu_count() or 1, len(pending) or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    submit = {"process": _process_pool, "ray": _ray}[backend]
    failed = []
    with tqdm(total=len(pending), desc="trials") as bar:
        for trial, error in submit(pending, root, workers, threads, address):
            if error:
                log.error("%s failed: %s", _describe(trial), error.strip().splitlines()[-1])
                failed.append((trial, error))
            bar.update()
    return failed


ResultStream = Iterable[tuple[Trial, str | None]]


def _process_pool(pending: Sequence[Trial], root: str, workers: int, threads: int,
                  address: str | None) -> ResultStream:
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_run, t, root, threads): t for t in pending}
        for future in as_completed(futures):
            error = future.exception()
            yield futures[future], "".join(traceback.format_exception(error)) if error else None


def _ray(pending: Sequence[Trial], root: str, workers: int, threads: int,
         address: str | None) -> ResultStream:
    ray = start_ray(address, workers, threads)
    remote = ray.remote(num_cpus=threads)(_run)
    refs = {remote.remote(t, root, threads): t for t in pending}
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1)
        trial = refs.pop(done[0])
        try:
            ray.get(done[0])
            yield trial, None
        except Exception as err:  # noqa: BLE001 - a failed trial is reported, not fatal
            yield trial, f"{type(err).__name__}: {err}"


def _csv(kind: Callable = str) -> Callable[[str], tuple]:
    return lambda text: tuple(kind(t) for t in text.split(",") if t)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data", help="folder of the database files (NAME.h5)")
    p.add_argument("--databases", type=_csv(), default=DATABASES)
    p.add_argument("--pairs", type=_csv(int), default=None, help="default 0,1,2,3,4")
    p.add_argument("--methods", type=_csv(), default=DEFAULT_METHODS,
                   help=f"comma-separated, from {','.join(sorted(METHODS))}")
    p.add_argument("--seeds", type=_csv(int), default=None, help="default 0,1,2")
    p.add_argument("--budget", type=int, default=None, help="queries per trial; default 100")
    p.add_argument("--profile", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--option", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a method's option, repeatable (e.g. at2.beta=0.5)")
    p.add_argument("--records", default="records", help="root of the record directories")
    p.add_argument("--workers", type=int, default=None, help="parallel trials; default cores")
    p.add_argument("--backend", choices=("process", "ray"), default="process")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: start one)")
    p.add_argument("--quick", action="store_true",
                   help="pair 0 of each database, seed 0, budget 20 (unless given)")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return p


def method_options(pairs: Sequence[str], methods: Sequence[str]) -> dict[str, dict]:
    """``["at2.beta=0.5"]`` -> ``{"at2": {"beta": 0.5}}``; the method must be in the sweep."""
    options: dict[str, dict] = {}
    for pair in pairs:
        method, dot, rest = pair.partition(".")
        if not dot or method not in methods:
            raise ValueError(f"--option {pair!r}: expected METHOD.KEY=VALUE with METHOD one of "
                             f"{list(methods)}")
        options.setdefault(method, {}).update(parse_options([rest]))
    return options


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.quiet)
    quick = QUICK if args.quick else {}
    try:
        unknown = sorted(set(args.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
        todo = trials(args.data, args.databases,
                      args.pairs or quick.get("pairs", PAIRS), args.methods,
                      args.seeds or quick.get("seeds", SEEDS),
                      budget=args.budget or quick.get("budget", 100), profile=args.profile,
                      device=args.device, options=method_options(args.option, args.methods))
        failed = run_sweep(todo, args.records, workers=args.workers, backend=args.backend,
                           address=args.address)
    except (ValueError, OSError, IndexError) as err:
        log.error("%s", err)
        return 2
    for trial, _ in failed:
        log.error("failed: %s", _describe(trial))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
