"""autoHyper's trust-region search over one or two hyper-parameters.

The search walks a centre point through a multiplicative lattice: each step evaluates the 3^d
region (every hyper-parameter down a step, unchanged, up a step) and moves the centre.

* **Rise**: while every response of the region is below ``start_threshold`` (the start point is
  already past the under-trained regime) move to the highest response.
* **Descend** (from the first region with a response >= ``start_threshold`` on): move to the
  lowest response. The responses at the centres visited while descending are multiplied up,
  ``zeta = prod(history) ** zeta_power``; whenever ``zeta < zeta_threshold`` every scale shrinks to
  ``(scale - 1) * exp(-shrink_rate) + 1``. The search stops when every scale is within
  ``tolerance`` of 1.

Ties are broken towards the phase's direction (down while rising, up while descending) so a
plateau is crossed instead of circled; ``max_trials`` bounds the number of distinct evaluations.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dimension:
    """One searched hyper-parameter: steps multiply or divide by ``scale`` starting from
    ``start``. A value of 0 steps up to ``floor``; a step down below ``floor`` lands on 0 (so a
    weight decay can start at 0). Both ``start`` and ``floor`` 0 is an error."""

    name: str
    start: float
    scale: float
    floor: float = 0.0

    def __post_init__(self) -> None:
        if not self.scale > 1:
            raise ValueError(f"{self.name}: scale must be > 1, got {self.scale}")
        if self.start < 0 or self.floor < 0 or (self.start == 0 and self.floor == 0):
            raise ValueError(f"{self.name}: start ({self.start}) must be > 0, or 0 with a "
                             f"positive floor (got floor {self.floor})")

    def step(self, value: float, scale: float, direction: int) -> float:
        if direction > 0:
            return value * scale if value > 0 else self.floor
        if direction < 0:
            lower = value / scale
            return lower if lower >= self.floor else 0.0
        return value


def learning_rate(start: float = 1e-4, scale: float = 1.45) -> Dimension:
    return Dimension("lr", start, scale)


def weight_decay(start: float = 0.0, scale: float = 2.0, floor: float = 1e-5) -> Dimension:
    return Dimension("weight_decay", start, scale, floor)


Point = tuple[float, ...]


@dataclass(frozen=True)
class SearchOutcome:
    """Where the search stopped: ``values`` by hyper-parameter name, whether the scales
    converged (False: stopped by ``max_trials``), and the final scales."""

    values: dict[str, float]
    converged: bool
    scales: tuple[float, ...]


def _key(point: Point) -> Point:
    return tuple(float(f"{v:.6g}") for v in point)


def trust_region_search(respond: Callable[[Mapping[str, float]], float],
                        dimensions: Sequence[Dimension], *, start_threshold: float = 0.85,
                        zeta_power: float = 0.8, zeta_threshold: float = 5e-3,
                        shrink_rate: float = 2.5, tolerance: float = 5e-3,
                        max_trials: int = 100) -> SearchOutcome:
    """Run the search on ``respond(hparams) -> response`` (lower is better once descending;
    each distinct point is evaluated once).

    Args:
        respond: the response of a hyper-parameter point, e.g. the zero-rank fraction of a short
            training run.
        dimensions: one or two :class:`Dimension` (any number works; the region has 3^d points).
        start_threshold, zeta_power, zeta_threshold, shrink_rate, tolerance: as in the module
            docstring (defaults 0.85, 0.8, 5e-3, 2.5, 5e-3).
        max_trials: cap on distinct evaluations (default 100).
    """
    if not dimensions:
        raise ValueError("trust_region_search needs at least one dimension")
    names = [d.name for d in dimensions]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate dimension names {names}")
    cache: dict[Point, float] = {}

    def evaluate(point: Point) -> float:
        key = _key(point)
        if key not in cache:
            cache[key] = float(respond(dict(zip(names, key))))
        return cache[key]

    center: Point = _key(tuple(d.start for d in dimensions))
    scales = [d.scale for d in dimensions]
    descending, history = False, []
    while len(cache) < max_trials:
        offsets = itertools.product((-1, 0, 1), repeat=len(dimensions))
        region: dict[Point, int] = {}
        for offset in offsets:
            point = _key(tuple(d.step(v, s, o) for d, v, s, o
                               in zip(dimensions, center, scales, offset)))
            region.setdefault(point, sum(offset))
        responses = {p: evaluate(p) for p in region}
        descending = descending or max(responses.values()) >= start_threshold
        sign = 1 if descending else -1  # minimise while descending, maximise while rising
        center = min(region, key=lambda p: (sign * responses[p], -sign * region[p], p))
        log.debug("centre %s response %.3f (%s)", dict(zip(names, center)), responses[center],
                  "descending" if descending else "rising")
        if descending:
            history.append(responses[center])
            if math.prod(history) ** zeta_power < zeta_threshold:
                scales = [(s - 1) * math.exp(-shrink_rate) + 1 for s in scales]
            if all(s - 1 < tolerance for s in scales):
                return SearchOutcome(dict(zip(names, center)), True, tuple(scales))
    log.warning("autoHyper search stopped after %d trials without converging", len(cache))
    return SearchOutcome(dict(zip(names, center)), False, tuple(scales))
