"""autoHyper against a learning-rate grid on scikit-learn's digits with the small CNN.

For each optimizer and seed: autoHyper's pick (trials, epochs, seconds), then the test accuracy of
a fixed longer training (30 epochs, constant learning rate) at that pick, beside the same training
at 10 log-spaced learning rates from 1e-4 to 1e-1. Prints a Markdown table and writes every number
to ``--out`` (JSON and the trial histories). It measures; it does not judge.

    python benchmarks/autohyper_digits.py --out runs/autohyper-digits
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from at2.autohyper.study import Training, accuracy_after_training, autohyper_on_task, lr_grid
from hyperrec.tasks import load_task


def _line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", default="adam,sgd")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of the judging training")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    task = load_task("digits")
    seeds = [int(s) for s in args.seeds.split(",")]
    grid = lr_grid()
    report = {"grid": grid.tolist(), "seeds": seeds, "epochs": args.epochs, "optimizers": {}}
    _line("| optimizer | autoHyper lr (per seed) | trials | trial epochs | search s | "
          "autoHyper test acc | best grid lr | best grid acc | grid epochs |")
    _line("|---|---|---|---|---|---|---|---|---|")
    for name in args.optimizers.split(","):
        recipe = Training(optimizer=name, epochs=args.epochs, device=args.device)
        picks, accs = [], []
        for seed in seeds:
            result = autohyper_on_task(task, recipe, seed=seed, out=args.out / f"{name}-{seed}",
                                       progress=False)
            accs.append(accuracy_after_training(task, result.values["lr"], seed, recipe))
            picks.append({"lr": result.values["lr"], "trials": len(result.trials),
                          "epochs": result.epochs, "seconds": result.seconds,
                          "converged": result.converged, "accuracy_after_training": accs[-1]})
        start = time.perf_counter()
        grid_acc = np.array([[accuracy_after_training(task, lr, seed, recipe) for seed in seeds]
                             for lr in grid])
        grid_seconds = time.perf_counter() - start
        best = int(grid_acc.mean(1).argmax())
        report["optimizers"][name] = {"autohyper": picks, "grid_accuracy": grid_acc.tolist(),
                                      "grid_seconds": grid_seconds}
        lrs = ", ".join(f"{p['lr']:.2e}" for p in picks)
        _line(f"| {name} | {lrs} | "
              f"{np.mean([p['trials'] for p in picks]):.1f} | "
              f"{np.mean([p['epochs'] for p in picks]):.0f} | "
              f"{np.mean([p['seconds'] for p in picks]):.1f} | {100 * np.mean(accs):.1f} | "
              f"{grid[best]:.1e} | {100 * grid_acc[best].mean():.1f} | "
              f"{grid.size * len(seeds) * args.epochs} ({grid_seconds:.0f} s) |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
