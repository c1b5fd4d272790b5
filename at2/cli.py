"""``at2`` command line: tune a target task with AT2 on a learning-curve database; choose an
initial learning rate with autoHyper."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from hyperrec.cli import run_command
from hyperrec.database import DEFAULT_METRIC, Database, DatabaseError
from hyperrec.options import check_option
from hyperrec.training import resolve_device

from . import records
from .autohyper.lr import OPTIMIZERS, AutoHyperResult
from .live import LiveResult, tune_live
from .task_kernel import DEFAULT_TASK_PSD, PSD_REPAIRS
from .tuner import ENGINES, AT2Tuner, TuningResult, check_engine
from .warp import DEFAULT_WARP, WARP_CHOICES

log = logging.getLogger("at2")
ERRORS = (DatabaseError, KeyError, IndexError, ValueError, OSError)
"""Expected failures of a run (bad input, missing or corrupt files): one log line, exit 1."""

TUNE_DEFAULTS: dict[str, Any] = {
    "database": None, "source": None, "target": None, "pair": None, "profile": 0,
    "metric": DEFAULT_METRIC, "budget": 100, "engine": "exact", "beta": 0.25,
    "task_psd": DEFAULT_TASK_PSD, "warp": DEFAULT_WARP, "restarts": None, "offset": None, "seed": 0,
    "device": "auto", "engine_options": {}, "out": None, "live": None, "final_epochs": None,
    "autohyper": False,
}
_NUMBERS = {"pair": (int, 0), "profile": (int, 0), "budget": (int, 1), "beta": (float, 0),
            "seed": (int,), "final_epochs": (int, 1), "autohyper": (bool,), "restarts": (int, 1),
            "offset": (float, 0)}
"""How :func:`resolve_tune_config` checks the numeric and boolean keys (``check_option``)."""


def _csv(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["fit_steps=100", "lr=0.05"]`` -> ``{"fit_steps": 100, "lr": 0.05}`` (YAML scalars)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def resolve_tune_config(args: argparse.Namespace) -> dict[str, Any]:
    """Merge ``--config`` YAML, command-line flags and the database's published pair."""
    config = dict(TUNE_DEFAULTS)
    if args.config:
        loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of option: value")
        unknown = sorted(set(loaded) - set(TUNE_DEFAULTS))
        if unknown:
            raise ValueError(f"{args.config}: unknown key(s) {unknown}; allowed: "
                             f"{sorted(TUNE_DEFAULTS)}")
        config.update(loaded)
    config.update({k: v for k, v in vars(args).items() if k in TUNE_DEFAULTS and v is not None})
    for key, value in config.items():  # a --config file can hold anything: check every type
        if key in _NUMBERS:
            if not (value is None and key in ("pair", "final_epochs", "restarts", "offset")):
                check_option(key, value, *_NUMBERS[key])
        elif key == "engine_options":
            if not isinstance(value, dict):
                raise ValueError(f"option engine_options={value!r}: expected a mapping")
        elif key == "source":
            if not (value is None or isinstance(value, str) or (
                    isinstance(value, list) and all(isinstance(s, str) for s in value))):
                raise ValueError(f"option source={value!r}: expected task names")
        elif value is not None and not isinstance(value, str):
            raise ValueError(f"option {key}={value!r}: expected a string")
    config["engine_options"] = {**config["engine_options"], **parse_options(args.option or [])}
    for key in ("database", "out"):
        if not config[key]:
            raise ValueError(f"--{key} is required")
    db = Database.open(config["database"])
    if config["autohyper"] and not config["live"]:
        raise ValueError("--autohyper refines the recommendation before its full training: it "
                         "needs --live TASK")
    if config["pair"] is not None and (config["source"] or config["target"]):
        raise ValueError("give either --pair or --source/--target, not both")
    if config["pair"] is not None:
        pair = db.pair(config["pair"])
        config["source"], config["target"] = list(pair.sources), pair.target
    if config["live"]:  # the target is the live task (its name in the database)
        live_name = "digits" if config["live"] == "digits" else Path(config["live"]).resolve().name
        config["target"] = config["target"] if config["pair"] is None and config[
            "target"] else live_name
    if not config["source"] or not config["target"]:
        raise ValueError("give --source and --target, or --pair K for a published pair")
    if isinstance(config["source"], str):
        config["source"] = _csv(config["source"])
    check_engine(config["engine"], config["engine_options"])
    # unknown task names fail here (a live target is added to the database when new)
    db.task_index([*config["source"], *([] if config["live"] else [config["target"]])])
    return config


def tune_live_command(config: dict[str, Any], progress: bool = True) -> LiveResult:
    """``at2 tune --live TASK``: train the target's queries, then the recommendation."""
    from hyperrec.build import TaskSpec

    out = Path(config["out"])
    device = str(resolve_device(config["device"]))
    records.write_config(out, {**config, "device": device, "torch": str(torch.__version__)})
    result = tune_live(config["database"], config["source"],
                       TaskSpec(str(config["live"]), config["target"]), budget=config["budget"],
                       out=out, final_epochs=config["final_epochs"],
                       autohyper=config["autohyper"], engine=config["engine"],
                       engine_options=config["engine_options"], beta=config["beta"],
                       task_psd=config["task_psd"], warp=config["warp"],
                       restarts=config["restarts"], offset=config["offset"], seed=config["seed"],
                       device=device, progress=progress)
    records.write_atomic(out / records.LIVE_FILE, json.dumps(result.summary(), indent=1))
    return result


def tune(config: dict[str, Any], progress: bool = True) -> TuningResult | LiveResult:
    """Run ``at2 tune`` for a resolved configuration and write its record directory."""
    if config["live"]:
        return tune_live_command(config, progress)
    db = Database.open(config["database"])
    tuner = AT2Tuner(db, config["source"], config["target"], engine=config["engine"],
                     beta=config["beta"], engine_options=config["engine_options"],
                     task_psd=config["task_psd"], warp=config["warp"],
                     restarts=config["restarts"], offset=config["offset"],
                     profile=config["profile"],
                     metric=config["metric"], seed=config["seed"], device=config["device"])
    out = Path(config["out"])
    records.write_config(out, {**config, "device": str(tuner.device),
                               "engine_options": tuner.engine_options,  # as resolved
                               "warp": tuner.warp_name, "restarts": tuner.restarts,
                               "offset": tuner.offset, "torch": str(torch.__version__)})
    result = tuner.tune(config["budget"], progress=progress)
    records.write_result(out, result)
    ranks = result.series("recommended_rank")
    log.info("%s -> %s: recommended rank %s after %d queries (offline fit %.1f s, %.3f s/query)",
             ",".join(config["source"]), config["target"], ranks[-1], len(ranks),
             tuner.fit_seconds, sum(result.series("seconds")) / max(len(ranks), 1))
    return result


def autohyper(args: argparse.Namespace) -> AutoHyperResult:
    """Run ``at2 autohyper``: choose the small CNN's initial learning rate on an image task and
    write ``config.yaml``, ``trials.csv`` and ``result.json`` into ``--out``."""
    from hyperrec.tasks import load_task

    from .autohyper.study import Training, autohyper_on_task, learning_rate_study

    check_option("epochs_per_trial", args.epochs_per_trial, int, 1)
    check_option("batch_size", args.batch_size, int, 1)
    study = Database.open(args.study) if args.study else None
    task = load_task(args.data or args.task, split_seed=args.split_seed,
                     image_size=args.image_size)
    study_task = args.study_task or task.name
    if study is not None:  # a study that cannot run fails here, before any training
        learning_rate_study(study, study_task, {args.optimizer: 1.0})
    device = resolve_device(args.device)
    recipe = Training(optimizer=args.optimizer, batch_size=args.batch_size, device=str(device))
    out = Path(args.out)
    config = {"task": task.name, "task_meta": task.meta, "optimizer": args.optimizer,
              "batch_size": args.batch_size, "epochs_per_trial": args.epochs_per_trial,
              "weight_decay": args.weight_decay, "seed": args.seed, "device": str(device),
              "torch": str(torch.__version__)}
    records.write_config(out, config)
    result = autohyper_on_task(task, recipe, seed=args.seed, out=out,
                               epochs_per_trial=args.epochs_per_trial,
                               tune_weight_decay=args.weight_decay, progress=not args.quiet)
    records.write_atomic(out / "result.json", json.dumps(
        {**config, "values": result.values, "converged": result.converged,
         "trials": len(result.trials), "epochs": result.epochs, "seconds": result.seconds},
        indent=1))
    if study is not None:
        rows = learning_rate_study(study, study_task, {args.optimizer: result.values["lr"]})
        records.write_atomic(out / "study.json", json.dumps(rows, indent=1))
        for row in rows:
            log.info("study: %s", row)
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="at2", description=__doc__)
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tune", help="tune a target task by replaying its curves from a database")
    t.add_argument("--config", help="YAML file with any of the options below")
    t.add_argument("--database", help="database file (.h5)")
    t.add_argument("--source", help="comma-separated source tasks")
    t.add_argument("--target", help="target task")
    t.add_argument("--pair", type=int, help="use the database's published pair K instead")
    t.add_argument("--profile", type=int, help="profile (training seed) to read; default 0")
    t.add_argument("--metric", help=f"metric to tune; default {DEFAULT_METRIC}")
    t.add_argument("--budget", type=int, help="number of queries (epochs); default 100")
    t.add_argument("--engine", choices=sorted(ENGINES), help="inference engine; default exact")
    t.add_argument("--beta", type=float, help="UCB exploration weight; default 0.25")
    t.add_argument("--task-psd", choices=sorted(PSD_REPAIRS),
                   help=f"how the task-similarity matrix is made PSD; default {DEFAULT_TASK_PSD}")
    t.add_argument("--warp", choices=sorted(WARP_CHOICES),
                   help="model the metric through this increasing transform; default auto "
                        "(= copula: each task's values as normal scores of their ranks)")
    t.add_argument("--restarts", type=int,
                   help="offline fits from as many initial weight draws, the best kept; "
                        "default 4 (exact), 1 (variational)")
    t.add_argument("--offset", type=float,
                   help="variance of the target's own offset per configuration, as a fraction "
                        "of its prior variance; default 0.05 (exact), 0 (variational)")
    t.add_argument("--seed", type=int, help="seed of the run; default 0")
    t.add_argument("--device", help="auto (default), cpu or cuda")
    t.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="engine option, repeatable (exact: fit_steps, refit_steps, lr; "
                        "variational: epochs, refit_epochs, inducing, batch_size, lr, momentum, "
                        "warmup_ratio)")
    t.add_argument("--out", help="record directory")
    t.add_argument("--live", metavar="TASK",
                   help="train the target live instead of replaying it: 'digits' or an "
                        "ImageFolder directory (the target is then its name in the database)")
    t.add_argument("--final-epochs", type=int,
                   help="live: epochs of the recommendation's final training (default: the "
                        "database's)")
    t.add_argument("--autohyper", action="store_true", default=None,
                   help="live: refine the recommendation's learning rate with autoHyper first")
    t.set_defaults(run=lambda args: tune(resolve_tune_config(args), progress=not args.quiet))
    a = sub.add_parser("autohyper", help="choose an initial learning rate by autoHyper")
    src = a.add_mutually_exclusive_group()
    src.add_argument("--task", default="digits", choices=["digits"],
                     help="built-in offline task (default digits)")
    src.add_argument("--data", help="an ImageFolder directory (root/<class>/<image>) instead")
    a.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adam")
    a.add_argument("--epochs-per-trial", type=int, default=5)
    a.add_argument("--weight-decay", action="store_true", help="search weight decay as well")
    a.add_argument("--batch-size", type=int, default=64)
    a.add_argument("--image-size", type=int, default=32, help="side of --data images (px)")
    a.add_argument("--split-seed", type=int, default=0)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    a.add_argument("--out", required=True, help="output directory")
    a.add_argument("--study", metavar="DATABASE",
                   help="compare the pick with the learning rates of a database task's best "
                        "configurations (writes study.json)")
    a.add_argument("--study-task", help="the task of --study (default: the tuned task's name)")
    a.set_defaults(run=autohyper)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(parser(), argv, ERRORS, log)
