"""``hyperrec`` command line: import the published AT2 data, inspect a database file, build new
tasks by training configurations."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .database import DEFAULT_METRIC, Best, Database, DatabaseError
from .importers import DATABASES, PublishedDataError, import_at2
from .safe_pickle import UnsafePickleError

log = logging.getLogger("hyperrec")


def summary(db: Database, metric: str = DEFAULT_METRIC) -> dict[str, Any]:
    """What ``hyperrec info`` reports, as a JSON-ready dict."""
    # a task added by an interrupted build may have no observations yet: no best to report
    seen = (~np.isnan(db.curves(metric, profile=0)).all((-2, -1)) if db.profiles else
            np.zeros(len(db.tasks), dtype=bool))
    best = [db.best(t, metric) if s else None for t, s in zip(db.tasks, seen)]
    return {
        "path": str(db.path),
        "name": db.name,
        "space": db.space.name,
        "tasks": len(db.tasks),
        "configurations": len(db.configs),
        "profiles": db.profiles,
        "epochs": db.epochs,
        "metrics": list(db.metrics),
        "coverage": {m: db.coverage(m) for m in db.metrics},
        "pairs": [{"sources": list(p.sources), "target": p.target} for p in db.pairs],
        "best": [{"task": t, **meta, **_best_fields(b)}
                 for t, meta, b in zip(db.tasks, db.task_meta, best)],
    }


def _best_fields(best: Best | None) -> dict[str, Any]:
    """A task's best configuration for :func:`summary` (``None`` values when unobserved)."""
    if best is None:
        return dict.fromkeys(("config_id", "value", "epoch"))
    return {"config_id": best.config_id, "value": best.value, "epoch": best.epoch}


def format_summary(info: dict[str, Any]) -> str:
    lines = [
        f"{info['name']} ({info['path']}): {info['tasks']} tasks x {info['configurations']} "
        f"configurations x {info['profiles']} profiles x {info['epochs']} epochs "
        f"(space {info['space']})",
        "coverage: " + ", ".join(f"{m} {c:.1%}" for m, c in info["coverage"].items()),
        f"published pairs: {len(info['pairs'])}",
    ]
    lines += [f"  pair {k}: {','.join(p['sources'])} -> {p['target']}"
              for k, p in enumerate(info["pairs"])]
    lines.append("best configuration per task (profile 0):")
    lines += [f"  {b['task']:<40} " + (f"config {b['config_id']:>4}  {b['value']:.4f} at epoch "
                                        f"{b['epoch']}" if b["config_id"] is not None else
                                        "no observations yet") for b in info["best"]]
    return "\n".join(lines)


def _import(args: argparse.Namespace) -> None:
    for db in import_at2(args.src, args.out, args.only or tuple(DATABASES)):
        log.info("wrote %s", db)


def _info(args: argparse.Namespace) -> None:
    info = summary(Database.open(args.file), args.metric)
    sys.stdout.write((json.dumps(info, indent=2) if args.json else format_summary(info)) + "\n")


def _build(args: argparse.Namespace) -> None:
    from .build import TaskSpec, build, plan_build
    from .training import resolve_device

    ids = [int(i) for i in args.config_ids.split(",")] if args.config_ids else None
    name = args.task_name or (args.task if args.task == "digits" else
                              Path(args.task).resolve().name)
    plan = plan_build(args.out, TaskSpec(args.task, name, args.split_seed, args.image_size),
                      configs=args.configs, config_ids=ids, config_seed=args.config_seed,
                      seeds=args.seeds, epochs=args.epochs, device=str(resolve_device(args.device)),
                      amp=args.amp)
    build(plan, workers=args.workers, backend=args.backend, address=args.address)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hyperrec", description=__doc__)
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import-at2", help="import the AT2 authors' published data folder")
    imp.add_argument("src", help="folder with HyperRec/, LCBench/ and train_test_pairs.json")
    imp.add_argument("out", help="output folder for HyperRec.h5 and LCBench.h5")
    imp.add_argument("--only", action="append", choices=list(DATABASES),
                     help="import only this database (repeatable)")
    imp.set_defaults(run=_import)
    info = sub.add_parser("info", help="summarise a database file")
    info.add_argument("file")
    info.add_argument("--metric", default=DEFAULT_METRIC)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_info)
    b = sub.add_parser("build", help="train configurations on an image task into a database")
    b.add_argument("--task", required=True, help="'digits' (offline) or an ImageFolder directory")
    b.add_argument("--task-name", help="the task's name in the database (default: from --task)")
    b.add_argument("--out", required=True,
                   help="database file: new, or existing (its configurations are reused)")
    b.add_argument("--configs", type=int, help="number of configurations (sampled, or chosen "
                   "among an existing database's)")
    b.add_argument("--config-ids", help="comma-separated ids of an existing database instead")
    b.add_argument("--config-seed", type=int, default=0)
    b.add_argument("--seeds", type=int, default=2, help="profiles (training seeds); default 2")
    b.add_argument("--epochs", type=int, default=75)
    b.add_argument("--split-seed", type=int, default=0, help="seed of the 60/20/20 split")
    b.add_argument("--image-size", type=int, default=32, help="side of folder images (px)")
    b.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    b.add_argument("--amp", action="store_true", help="mixed precision")
    b.add_argument("--workers", type=int, default=1, help="parallel runs; default 1")
    b.add_argument("--backend", choices=("process", "ray"), default="process")
    b.add_argument("--address", help="Ray cluster to join (default: start one)")
    b.set_defaults(run=_build)
    return p


def setup_logging(quiet: bool = False) -> None:
    """Log to stderr: INFO, or WARNING with ``quiet``. The level is set on the console handler, so
    that a file handler added later (a trial's log) can still receive INFO records."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING if quiet else logging.INFO)
    logging.getLogger().setLevel(logging.INFO)


def run_command(p: argparse.ArgumentParser, argv: Sequence[str] | None,
                errors: tuple[type[Exception], ...], logger: logging.Logger) -> int:
    """Parse ``argv``, set up logging (``-q``: warnings only), run the chosen subcommand.

    Expected failures (``errors``: bad input, missing or corrupt files) are logged as one line
    and give exit status 1; anything else is a bug and keeps its traceback.
    """
    args = p.parse_args(argv)
    setup_logging(args.quiet)
    try:
        args.run(args)
    except errors as err:
        # a KeyError's str() is the repr of its message; log the message itself
        logger.error("%s", err.args[0] if isinstance(err, KeyError) and err.args else err)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(parser(), argv, (DatabaseError, PublishedDataError, UnsafePickleError,
                                        KeyError, ValueError, OSError), log)
