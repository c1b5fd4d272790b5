r"""Speed of the AT2 engines on one published pair: offline fit, seconds per query, peak memory.

Prints, in the same run, the time of a fixed reference computation (Cholesky of a 2000 x 2000
float64 matrix) so that figures from different machines compare as ratios. For the variational
engine it also prints the time of one minibatch step and of the linear algebra alone that such a
step must do (Cholesky of ``K_uu``, the triangular solve against ``K_uf``, the product with
``L_S'``, and their gradients, as the engine computes them, mixed precision included, on random
matrices of the same sizes): a floor under the step's time on this machine, and the parts of one
step of the fitted engine on a minibatch of its data (``step_parts_s``: ``K_uu`` and ``K_uf`` with
their gradients, the whitening and marginal variances with theirs, the KL term, and the whole ELBO
step without the optimizer). It measures; it does not judge.

    python benchmarks/at2_speed.py --database data/HyperRec.h5 --pair 0 --engine exact
    python benchmarks/at2_speed.py --database data/HyperRec.h5 --pair 0 --engine variational \
        --option epochs=200 --queries 5
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from collections.abc import Callable

import numpy as np
import torch
from gpytorch.mlls import VariationalELBO
from torch import Tensor

from at2.cli import parse_options
from at2.linalg import whitened_marginals
from at2.tuner import ENGINES, AT2Tuner
from at2.variational import VariationalEngine
from hyperrec.database import Database


def reference_cholesky_seconds(repeats: int = 5) -> float:
    """Median time of a 2000 x 2000 float64 Cholesky factorisation."""
    a = torch.randn(2000, 2000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spd = a @ a.T + 2000 * torch.eye(2000, dtype=torch.float64)
    return median_seconds(lambda: torch.linalg.cholesky(spd), repeats, warmup=1)


def median_seconds(work: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``work()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        work()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def whitened_terms_backward(K_uu: Tensor, K_uf: Tensor, L_S: Tensor, m: Tensor,
                            product_dtype: torch.dtype | None) -> None:
    """The linear algebra of a whitened-SVGP minibatch step as the variational engine does it,
    forward and backward: the marginals' mean ``m' A`` and variance reduction ``|L_S' A|^2 -
    |A|^2`` with ``A = chol(K_uu)^-1 K_uf`` (:func:`at2.linalg.whitened_marginals`)."""
    mean, reduction = whitened_marginals(K_uu, K_uf, m, L_S, product_dtype)
    (mean.square() + reduction).sum().backward()


def svgp_linear_algebra_seconds(inducing: int, batch: int,
                                product_dtype: torch.dtype | None = None,
                                repeats: int = 10) -> float:
    """Median time of :func:`whitened_terms_backward` in float32 on random matrices of the
    sizes of a step (``inducing`` x ``batch``)."""
    g = torch.Generator().manual_seed(0)
    root = torch.randn(inducing, 20, generator=g)
    K_uu = (root @ root.T / 20 + torch.eye(inducing)).requires_grad_()
    K_uf = (0.1 * torch.randn(inducing, batch, generator=g)).requires_grad_()
    L_S = (0.01 * torch.randn(inducing, inducing, generator=g)).tril().requires_grad_()
    m = torch.randn(inducing, generator=g).requires_grad_()
    return median_seconds(lambda: whitened_terms_backward(K_uu, K_uf, L_S, m, product_dtype),
                          repeats)


def step_parts_seconds(engine: VariationalEngine, repeats: int = 20) -> dict[str, float]:
    """Median times of the parts of one minibatch step of a fitted variational engine, forward
    and backward, on ``batch_size`` of its observed cells (drawn with a fixed seed): ``K_uu``,
    ``K_uf`` (from the per-factor tables), the whitening and marginal variances (on those two,
    detached: :func:`whitened_terms_backward`), the KL term, and the whole ELBO step without the
    optimizer. The engine's parameters are left as they were (their gradients are cleared)."""
    gp, grid = engine.gp, engine.grid
    strategy, kernel = gp.variational_strategy, gp.covar_module
    Z = strategy.inducing_points
    cells = torch.nonzero(grid.observed, as_tuple=True)
    pick = torch.randperm(cells[0].numel(), generator=torch.Generator().manual_seed(0))
    batch = tuple(c[pick[: engine.batch_size]] for c in cells)
    x, y = grid.inputs(*batch), (grid.values[batch] - engine.shift) / engine.scale
    K_uu = kernel.forward(Z, Z).detach()
    K_uu.diagonal().add_(strategy.jitter_val)
    K_uu.requires_grad_()
    K_uf = kernel.on_grid(Z, grid, *batch).detach().requires_grad_()
    q = strategy._variational_distribution
    L_S, m = q.chol_variational_covar, q.variational_mean
    elbo = VariationalELBO(engine.model.likelihood, gp, num_data=cells[0].numel())
    parts = {
        "K_uu": lambda: kernel.forward(Z, Z).sum().backward(),
        "K_uf": lambda: kernel.on_grid(Z, grid, *batch).sum().backward(),
        "whitening_and_variances": lambda: whitened_terms_backward(
            K_uu, K_uf, L_S, m, strategy.product_dtype),
        "kl": lambda: strategy.kl_divergence().backward(),
        "elbo_step": lambda: (-elbo(gp(x, cells=batch), y, x=x)).backward(),
    }
    gp.train()
    seconds = {}
    for name, work in parts.items():
        seconds[name] = round(median_seconds(work, repeats), 4)
        gp.zero_grad(set_to_none=True)
        engine.model.likelihood.zero_grad(set_to_none=True)
    gp.eval()
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database", required=True)
    p.add_argument("--pair", type=int, default=0)
    p.add_argument("--engine", choices=sorted(ENGINES), default="exact")
    p.add_argument("--queries", type=int, default=100, help="queries to time (default 100)")
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--device", default="cpu")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    reference = reference_cholesky_seconds()
    db = Database.open(args.database)
    pair = db.pair(args.pair)
    tuner = AT2Tuner(db, pair.sources, pair.target, engine=args.engine, seed=args.seed,
                     device=args.device, engine_options=parse_options(args.option))
    start = time.perf_counter()
    result = tuner.tune(args.queries, progress=False)
    total = time.perf_counter() - start
    per_query = np.array(result.series("seconds"))
    report = {
        "database": db.name, "pair": args.pair, "target": pair.target, "engine": args.engine,
        "engine_options": tuner.engine_options, "device": str(tuner.device),
        "threads": torch.get_num_threads(), "cpu": torch.backends.cpu.get_cpu_capability(),
        "queries": args.queries,
        "offline_fit_s": round(tuner.fit_seconds, 3),
        "query_mean_s": round(float(per_query.mean()), 4),
        "query_median_s": round(float(np.median(per_query)), 4),
        "total_s": round(total, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "reference_cholesky_2000_s": round(reference, 4),
        "query_mean_in_reference_units": round(float(per_query.mean()) / reference, 1),
        "final_recommended_rank": result.records[-1].recommended_rank,
    }
    if args.engine == "variational":
        engine = tuner.engine
        steps = engine.refit_epochs * -(-int(tuner.grid.observed.sum()) // engine.batch_size)
        start = time.perf_counter()
        engine.update()
        report["minibatch_step_s"] = round((time.perf_counter() - start) / steps, 4)
        strategy = engine.gp.variational_strategy
        report["step_linear_algebra_s"] = round(svgp_linear_algebra_seconds(
            len(strategy.inducing_points), engine.batch_size, strategy.product_dtype), 4)
        report["step_parts_s"] = step_parts_seconds(engine)
    print(json.dumps(report, indent=1))  # noqa: T201 - the benchmark's output


if __name__ == "__main__":
    main()
