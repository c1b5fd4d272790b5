"""The two ready search spaces, and the mapping of the published configurations onto them.

* :func:`hyperrec_space` — the 16-dimensional nested HyperRec space (AT2 paper, HyperRec README):
  batch size, model, optimizer (Adam | Momentum) with their parameters, four learning-rate
  schedulers with theirs. Its encoding has 16 slots: 4 choices and 12 numeric parameters
  (``lr``/``weight_decay`` shared by both optimizers, ``gamma`` by three schedulers).
* :func:`lcbench_space` — LCBench's 7 tuned parameters with the ranges of the LCBench benchmark.

``from_published(space, raw)`` turns a dict of the published ``configs.pkl`` files into a
configuration of the space (``SGD`` -> ``Momentum``, ``optimizer_param.betas`` -> ``beta0``,
``beta1``, LCBench's boolean ``num_layers=True`` -> ``1``); ``to_published`` goes back for
HyperRec (the form a trainer consumes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .space import Choice, ConfigError, Derived, IntUniform, LogUniform, SearchSpace, Uniform


def hyperrec_space() -> SearchSpace:
    """The HyperRec space, exactly as tabulated in the HyperRec README."""
    lr, wd = LogUniform("lr", 1e-4, 1e-1), LogUniform("weight_decay", 1e-5, 1e-3)
    optimizer = Choice("optimizer", {
        "Adam": (lr, wd, LogUniform("beta0", 0.5, 0.999), LogUniform("beta1", 0.8, 0.999)),
        "Momentum": (lr, wd, LogUniform("momentum", 1e-3, 1.0)),
    })
    scheduler = Choice("scheduler", {
        "StepLR": (IntUniform("step_size", 2, 20), LogUniform("gamma", 0.1, 0.5)),
        "ExponentialLR": (LogUniform("gamma", 0.85, 0.999),),
        "CyclicLR": (LogUniform("gamma", 0.1, 0.5), Derived("max_lr", 1.1, 1.5, base="lr", cap=1.0),
                     IntUniform("step_size_up", 1, 10)),
        "CosineAnnealingWarmRestarts": (IntUniform("T_0", 2, 20), IntUniform("T_mult", 1, 4),
                                        Derived("eta_min", 0.5, 0.9, base="lr")),
    })
    return SearchSpace([
        IntUniform("batch_size", 32, 128),
        Choice("model", {"ResNet34": (), "ResNet50": ()}),
        optimizer,
        scheduler,
    ], name="hyperrec")


def lcbench_space() -> SearchSpace:
    """LCBench's tuned parameters (Zimmer et al. 2021), the ranges of its published data."""
    return SearchSpace([
        IntUniform("batch_size", 16, 512, log=True),
        LogUniform("learning_rate", 1e-4, 1e-1),
        Uniform("momentum", 0.1, 0.99),
        Uniform("weight_decay", 1e-5, 1e-1),
        IntUniform("num_layers", 1, 5),
        IntUniform("max_units", 64, 1024, log=True),
        Uniform("max_dropout", 0.0, 1.0),
    ], name="lcbench")


SPACES = {"hyperrec": hyperrec_space, "lcbench": lcbench_space}

_HYPERREC_MODELS = {"resnet34": "ResNet34", "resnet50": "ResNet50"}
_HYPERREC_OPTIMIZERS = {"Adam": "Adam", "SGD": "Momentum"}
_HYPERREC_SCHEDULER_KEYS = {
    "StepLR": ("step_size", "gamma"),
    "ExponentialLR": ("gamma",),
    "CyclicLR": ("gamma", "max_lr", "step_size_up"),
    "CosineAnnealingWarmRestarts": ("T_0", "T_mult", "eta_min"),
}


def _hyperrec_from_published(raw: Mapping[str, Any]) -> dict[str, Any]:
    try:
        opt, sched = raw["optimizer_param"], raw["scheduler_param"]
        config: dict[str, Any] = {
            "batch_size": raw["batchsize"],
            "model": _HYPERREC_MODELS[raw["model"]],
            "optimizer": _HYPERREC_OPTIMIZERS[raw["optimizer"]],
            "lr": opt["lr"],
            "weight_decay": opt["weight_decay"],
            "scheduler": raw["scheduler"],
        }
        if config["optimizer"] == "Adam":
            config["beta0"], config["beta1"] = opt["betas"]
        else:
            config["momentum"] = opt["momentum"]
        for key in _HYPERREC_SCHEDULER_KEYS[raw["scheduler"]]:
            config[key] = sched[key]
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"not a published HyperRec configuration: missing or bad {err}") from err
    return config


def _hyperrec_to_published(config: Mapping[str, Any], epochs: int = 75) -> dict[str, Any]:
    optimizer = "Adam" if config["optimizer"] == "Adam" else "SGD"
    opt = {"lr": config["lr"], "weight_decay": config["weight_decay"]}
    if optimizer == "Adam":
        opt["betas"] = [config["beta0"], config["beta1"]]
    else:
        opt["momentum"] = config["momentum"]
    sched = {k: config[k] for k in _HYPERREC_SCHEDULER_KEYS[config["scheduler"]]}
    if config["scheduler"] == "CyclicLR":  # as published: exp_range from lr; Adam has no momentum
        sched = {"mode": "exp_range", "base_lr": config["lr"], **sched}
        if optimizer == "Adam":
            sched["cycle_momentum"] = False
    return {"model": config["model"].lower(), "nepoch": epochs, "batchsize": config["batch_size"],
            "optimizer": optimizer, "scheduler": config["scheduler"],
            "optimizer_param": opt, "scheduler_param": sched}


def _lcbench_from_published(raw: Mapping[str, Any]) -> dict[str, Any]:
    config = {p.name: raw.get(p.name) for p in lcbench_space().params}
    if config["num_layers"] is True:  # 36 published configurations store 1 layer as True
        config["num_layers"] = 1
    return config


def from_published(space: SearchSpace, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Map one published configuration dict onto ``space`` (validated)."""
    convert = {"hyperrec": _hyperrec_from_published, "lcbench": _lcbench_from_published}
    if space.name not in convert:
        raise ValueError(f"no published form is known for space {space.name!r}")
    return space.validate(convert[space.name](raw))


def to_published(space: SearchSpace, config: Mapping[str, Any], epochs: int = 75,
                 validate: bool = True) -> dict[str, Any]:
    """Map a HyperRec configuration back to the published dict form (what a trainer reads).
    ``validate=False`` admits values outside the space's ranges (e.g. a learning rate refined by
    autoHyper); the keys must still be those of a HyperRec configuration."""
    if space.name != "hyperrec":
        raise ValueError(f"no published form is known for space {space.name!r}")
    return _hyperrec_to_published(space.validate(config) if validate else config, epochs)


def with_learning_rate(config: Mapping[str, Any], lr: float) -> dict[str, Any]:
    """A HyperRec configuration with its learning rate replaced; the parameters derived from it
    (CyclicLR's ``max_lr``, capped at 1, and CosineAnnealingWarmRestarts' ``eta_min``) keep their
    ratio to it. The result may lie outside the space's ranges."""
    if not lr > 0:
        raise ConfigError(f"learning rate must be > 0, got {lr}")
    ratio = lr / config["lr"]
    new = {**config, "lr": lr}
    if "max_lr" in config:
        new["max_lr"] = min(config["max_lr"] * ratio, 1.0)
    if "eta_min" in config:
        new["eta_min"] = config["eta_min"] * ratio
    return new
