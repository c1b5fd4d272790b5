"""One reproduction trial: (database, published pair, profile, method, seed) -> a record directory.

    python -m experiments.reproduce --database data/HyperRec.h5 --pair 0 --method at2 --seed 0

writes ``records/<database>_<profile>_pair_<k>/<method>/seed_<s>/`` with ``config.yaml`` (the
resolved trial), ``queries.csv``, ``result.json`` (the schema of ``at2 tune``) and ``log.txt``.
The trial runs in a temporary sibling directory that is renamed into place when complete, so a
record directory that exists is finished (and is never recomputed), and an interrupted trial
leaves only a temporary directory, removed when the trial runs again. A finished record stands
for a trial only if it was made with the same settings, the method's resolved defaults included:
one made before a default changed is refused, not reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from at2 import records
from at2.cli import ERRORS, parse_options
from at2.tuner import AT2Tuner, Tuner
from hyperrec.cli import run_command
from hyperrec.database import Database

from .baselines import METHODS as BASELINES

METHODS: dict[str, type[Tuner]] = {"at2": AT2Tuner, **BASELINES}
"""Every method a trial can run, by name."""

LOG_FILE = "log.txt"
log = logging.getLogger(__name__)


def method_options(method: str) -> set[str]:
    """The keyword arguments ``method`` accepts beyond the trial's own (database, pair, seed...)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    names: set[str] = set()
    for cls in METHODS[method].__mro__:
        if "__init__" in vars(cls):
            names |= {p.name for p in inspect.signature(cls.__init__).parameters.values()
                      if p.kind is p.KEYWORD_ONLY}
    return names - {"profile", "seed", "device", "metric", "dtype"}


@dataclass(frozen=True)
class Trial:
    """A trial's full configuration.

    Attributes:
        database: Path of the database file (``.h5``).
        pair: Index of the database's published train/test pair.
        method: A name of :data:`METHODS`.
        seed: Seed of the method's random choices.
        profile: Which profile (training seed) of the database replays the curves (default 0).
        budget: Number of queries (epochs trained; default 100).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        options: Keyword arguments of the method (e.g. ``{"beta": 0.5}``), validated.
    """

    database: str
    pair: int
    method: str
    seed: int = 0
    profile: int = 0
    budget: int = 100
    device: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.options) - method_options(self.method))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for method {self.method!r}; allowed: "
                             f"{sorted(method_options(self.method))}")
        if self.budget < 1:
            raise ValueError(f"budget must be >= 1, got {self.budget}")

    def directory(self, root: str | Path, database_name: str) -> Path:
        return (Path(root) / f"{database_name}_{self.profile}_pair_{self.pair}" / self.method
                / f"seed_{self.seed}")


RESUME_KEYS = ("pair", "method", "seed", "profile", "budget", "options")
"""The settings of ``config.yaml`` a finished record must share with a trial to stand for it."""
WHERE = frozenset({"device", "database_path"})
"""Settings that say where a run went, not what it ran: a record made on another device, or from
a database file since moved, stands for the same trial."""


def make_tuner(trial: Trial, db: Database) -> Tuner:
    """The trial's tuner, not yet fitted."""
    pair = db.pair(trial.pair)
    return METHODS[trial.method](db, pair.sources, pair.target, profile=trial.profile,
                                 seed=trial.seed, device=trial.device, **trial.options)


def finished(trial: Trial, out: str | Path, db: Database | None = None) -> bool:
    """Whether ``out`` holds the complete record of ``trial`` (``db``: its database, opened if
    not given). A complete record made with other settings (a different budget, profile or
    options, or a method default that has changed since: the method's resolved settings in
    ``result.json`` against those of the trial's tuner now) is refused with a ``ValueError``:
    skipping the trial would report a run that was not asked for, and rerunning it would
    overwrite one that was."""
    if not records.is_complete(out):
        return False
    stored = records.read_config(out)
    differs = [f"{key} {stored.get(key)!r} there, {getattr(trial, key)!r} now"
               for key in RESUME_KEYS if stored.get(key) != getattr(trial, key)]
    if not differs:  # the same request: was it resolved the same way?
        tuner = make_tuner(trial, db or Database.open(trial.database))
        now = json.loads(json.dumps(tuner.settings()))  # as result.json holds them
        result = records.read_result(out)
        differs = [f"{key} {result.get(key)!r} there, {value!r} now"
                   for key, value in now.items()
                   if key not in WHERE and result.get(key) != value]
    if differs:
        raise ValueError(f"{out} holds a finished trial with other settings ({'; '.join(differs)});"
                         " record into another directory or move that one away")
    return True


def run_trial(trial: Trial, root: str | Path = "records", progress: bool = False) -> Path:
    """Run ``trial`` unless its record exists (:func:`finished`); return the record directory."""
    db = Database.open(trial.database)
    out = trial.directory(root, db.name)
    if finished(trial, out, db):
        log.info("%s: finished before, skipped", out)
        return out
    for stale in [*out.parent.glob(f"{out.name}.tmp-*"), out]:  # leftovers of a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    handler = logging.FileHandler(tmp / LOG_FILE)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root_logger = logging.getLogger()
    root_logger.addHandler(handler)
    try:
        pair = db.pair(trial.pair)
        tuner = make_tuner(trial, db)
        log.info("%s: %s on %s -> %s", out, trial.method, ",".join(pair.sources), pair.target)
        records.write_config(tmp, {**dataclasses.asdict(trial), "database_name": db.name,
                                   "sources": list(pair.sources), "target": pair.target,
                                   "resolved_device": str(tuner.device),
                                   "torch": str(torch.__version__)})
        result = tuner.tune(trial.budget, progress=progress)
        records.write_result(tmp, result)
        ranks = result.series("recommended_rank")
        log.info("%s: recommended rank %d after %d queries", out, ranks[-1], len(ranks))
    finally:
        root_logger.removeHandler(handler)
        handler.close()
    os.replace(tmp, out)
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", required=True, help="database file (.h5)")
    p.add_argument("--pair", type=int, required=True, help="published pair index")
    p.add_argument("--method", required=True, choices=sorted(METHODS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", type=int, default=0)
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--device", default="auto")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="method option, repeatable (e.g. beta=0.5, engine=variational)")
    p.add_argument("--records", default="records", help="root of the record directories")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    p.set_defaults(run=lambda args: print(run_trial(  # noqa: T201 - the record's path
        Trial(args.database, args.pair, args.method, args.seed, args.profile, args.budget,
              args.device, parse_options(args.option)), args.records,
        progress=not args.quiet)))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(parser(), argv, ERRORS, log)


if __name__ == "__main__":
    raise SystemExit(main())
