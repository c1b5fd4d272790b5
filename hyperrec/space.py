"""Declarative nested (conditional) search spaces.

A :class:`SearchSpace` is a tuple of parameters. A :class:`Choice` is categorical; each of its
options (*branches*) enables its own parameters, which may include further choices. Numeric
parameters are :class:`Uniform`, :class:`LogUniform` or :class:`IntUniform` (discrete uniform,
optionally on a log scale); a :class:`Derived` parameter is a random multiple of another one.

A *configuration* is a flat ``dict`` holding exactly the active parameters: a choice's value is the
name of its option. Parameters with the same name in sibling branches of one choice (the learning
rate of Adam and of Momentum, say) describe the same quantity; they share one slot of the encoding
and at most one of them is active.

The numeric encoding used by models has a fixed length ``space.dim``: first one slot per choice
(``space.categorical``) holding the option index as a float, or ``cardinality`` when the choice is
inactive; then one slot per numeric parameter name (``space.numeric``) scaled to ``[0, 1]`` by the
active branch's range (log-scaled for log distributions; a derived parameter encodes its factor),
or :data:`INACTIVE` when inactive.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

INACTIVE = 0.5
"""Encoding of an inactive numeric parameter: the middle of the unit interval."""

_REL_TOL = 1e-9


class ConfigError(ValueError):
    """A configuration does not belong to its search space."""


@dataclass(frozen=True)
class _Numeric:
    """A numeric parameter on ``[low, high]``; ``log`` scales the encoding logarithmically."""

    name: str
    low: float
    high: float
    log: bool = False
    integer: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"{self.name}: need low < high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"{self.name}: a log scale needs low > 0, got {self.low}")

    def _to_unit(self, x: float) -> float:
        if self.log:
            return (math.log(x) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (x - self.low) / (self.high - self.low)

    def _from_unit(self, u: float) -> float:
        u = min(max(u, 0.0), 1.0)
        if self.log:
            x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            x = self.low + u * (self.high - self.low)
        return min(max(x, self.low), self.high)

    def range_text(self) -> str:
        kind = "integer " if self.integer else ""
        scale = "log-uniform " if self.log else "uniform "
        return f"{scale}{kind}[{self.low}, {self.high}]"

    def sample(self, rng: np.random.Generator, config: Mapping[str, Any]) -> float | int:
        return self.decode(float(rng.uniform()), config)

    def encode(self, value: Any, config: Mapping[str, Any]) -> float:
        return self._to_unit(value)

    def decode(self, u: float, config: Mapping[str, Any]) -> float | int:
        return self._from_unit(u)

    def _error(self, value: Any, problem: str) -> ConfigError:
        return ConfigError(f"{self.name}={value!r} {problem}; allowed: {self.range_text()}")

    def _check_number(self, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise self._error(value, "is not a number")

    def check(self, value: Any, config: Mapping[str, Any]) -> None:
        self._check_number(value)
        slack = _REL_TOL * max(abs(self.low), abs(self.high))
        if not self.low - slack <= value <= self.high + slack:
            raise self._error(value, "is out of range")

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "name": self.name, "low": self.low,
                "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Uniform(_Numeric):
    """Continuous uniform ``U(low, high)``."""


@dataclass(frozen=True)
class LogUniform(_Numeric):
    """Continuous log-uniform ``LU(low, high)``."""

    log: bool = True


@dataclass(frozen=True)
class IntUniform(_Numeric):
    """Discrete uniform ``U{low, ..., high}`` (log-uniform over the integers when ``log``)."""

    integer: ClassVar[bool] = True

    def sample(self, rng: np.random.Generator, config: Mapping[str, Any]) -> int:
        if self.log:  # round a log-uniform draw, widened by half a step at both ends
            lo, hi = math.log(self.low - 0.5), math.log(self.high + 0.5)
            value = int(round(math.exp(rng.uniform(lo, hi))))
            return min(max(value, int(self.low)), int(self.high))
        return int(rng.integers(int(self.low), int(self.high) + 1))

    def decode(self, u: float, config: Mapping[str, Any]) -> int:
        return int(round(self._from_unit(u)))

    def check(self, value: Any, config: Mapping[str, Any]) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise self._error(value, "is not an integer")
        super().check(value, config)


@dataclass(frozen=True)
class Derived(_Numeric):
    """``value = min(cap, config[base] * U(low, high))``: a random multiple of parameter ``base``.

    HyperRec's CyclicLR ``max_lr = min(1, lr * U(1.1, 1.5))`` is ``Derived("max_lr", 1.1, 1.5,
    base="lr", cap=1.0)``. The encoding stores the factor, scaled to ``[0, 1]``.
    """

    base: str = ""
    cap: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.base:
            raise ValueError(f"{self.name}: a derived parameter needs its base parameter")

    def range_text(self) -> str:
        text = f"{self.base} * U({self.low}, {self.high})"
        return f"min({self.cap}, {text})" if self.cap is not None else text

    def _value(self, factor: float, config: Mapping[str, Any]) -> float:
        value = config[self.base] * factor
        return min(self.cap, value) if self.cap is not None else value

    def sample(self, rng: np.random.Generator, config: Mapping[str, Any]) -> float:
        return self._value(float(rng.uniform(self.low, self.high)), config)

    def encode(self, value: Any, config: Mapping[str, Any]) -> float:
        factor = value / config[self.base]
        return min(max(self._to_unit(factor), 0.0), 1.0)  # a capped value sits below the range

    def decode(self, u: float, config: Mapping[str, Any]) -> float:
        return self._value(self._from_unit(u), config)

    def check(self, value: Any, config: Mapping[str, Any]) -> None:
        self._check_number(value)
        base = config.get(self.base)
        if base is None:
            raise ConfigError(f"{self.name} needs its base parameter {self.base!r}")
        lo, hi = self._value(self.low, config), self._value(self.high, config)
        if base <= 0 or not (lo * (1 - _REL_TOL) <= value <= hi * (1 + _REL_TOL)):
            raise ConfigError(
                f"{self.name}={value!r} is out of range; allowed: {self.range_text()} "
                f"= [{lo:.6g}, {hi:.6g}] for {self.base}={base!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "base": self.base, "cap": self.cap}


@dataclass(frozen=True)
class Choice:
    """A categorical parameter; ``branches`` maps each option to the parameters it enables."""

    name: str
    branches: Mapping[str, tuple[Param, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.branches) < 2:
            raise ValueError(f"{self.name}: a choice needs at least two options")
        object.__setattr__(self, "branches", {k: tuple(v) for k, v in self.branches.items()})

    @property
    def options(self) -> tuple[str, ...]:
        return tuple(self.branches)

    def range_text(self) -> str:
        return "one of " + ", ".join(map(repr, self.options))

    def check(self, value: Any, config: Mapping[str, Any]) -> None:
        if not isinstance(value, str) or value not in self.branches:
            raise ConfigError(f"{self.name}={value!r} is not allowed; allowed: {self.range_text()}")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Choice", "name": self.name,
                "branches": {k: [p.to_dict() for p in v] for k, v in self.branches.items()}}


Param = Uniform | LogUniform | IntUniform | Derived | Choice
_TYPES = {t.__name__: t for t in (Uniform, LogUniform, IntUniform, Derived)}


def _param_from_dict(d: Mapping[str, Any]) -> Param:
    d = dict(d)
    kind = d.pop("type")
    if kind == "Choice":
        branches = {k: tuple(map(_param_from_dict, v)) for k, v in d["branches"].items()}
        return Choice(d["name"], branches)
    if kind not in _TYPES:
        raise ValueError(f"unknown parameter type {kind!r}")
    return _TYPES[kind](**d)


class SearchSpace:
    """A nested search space over flat configuration dicts.

    Args:
        params: The top-level parameters (always active).
        name: A short name stored with databases (e.g. ``"hyperrec"``).
    """

    def __init__(self, params: Sequence[Param], name: str = "custom") -> None:
        self.params = tuple(params)
        self.name = name
        self.categorical: tuple[Choice, ...] = ()
        numeric: dict[str, list[_Numeric]] = {}
        self._collect(self.params, numeric, set())
        self.numeric: tuple[str, ...] = tuple(numeric)
        self._numeric_variants = numeric

    def _collect(self, params: Sequence[Param], numeric: dict, seen: set[str]) -> None:
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate parameter names among {names}")
        for p in params:
            if isinstance(p, Choice):
                if p.name in seen or p.name in numeric:
                    raise ValueError(f"choice name {p.name!r} is used twice")
                seen.add(p.name)
                self.categorical += (p,)
                for branch in p.branches.values():
                    self._collect(branch, numeric, seen)
            else:
                if p.name in seen:
                    raise ValueError(f"{p.name!r} is both a choice and a numeric parameter")
                numeric.setdefault(p.name, []).append(p)

    # ------------------------------------------------------------------ structure
    @property
    def dim(self) -> int:
        """Length of the encoding: ``len(categorical) + len(numeric)``."""
        return len(self.categorical) + len(self.numeric)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        """Number of options of each choice (the encoding's first slots)."""
        return tuple(len(c.options) for c in self.categorical)

    def _walk(self, pick: Callable[[Choice], Any]) -> Iterator[Param]:
        """Yield parameters parents-first, entering the branch that ``pick(choice)`` names."""
        stack = list(reversed(self.params))
        while stack:
            p = stack.pop()
            yield p
            if isinstance(p, Choice):
                option = pick(p)
                if isinstance(option, str) and option in p.branches:
                    stack.extend(reversed(p.branches[option]))

    def active(self, config: Mapping[str, Any]) -> list[Param]:
        """The parameters that ``config``'s choices activate, parents before children."""
        return list(self._walk(lambda c: config.get(c.name)))

    def _build(self, pick: Callable[[Choice], str],
               value: Callable[[_Numeric, dict[str, Any]], Any]) -> dict[str, Any]:
        """Make a configuration: options from ``pick``, then numeric values (derived ones last)."""
        config: dict[str, Any] = {}

        def choose(choice: Choice) -> str:
            config[choice.name] = pick(choice)
            return config[choice.name]

        numeric = [p for p in self._walk(choose) if not isinstance(p, Choice)]
        for p in sorted(numeric, key=lambda p: isinstance(p, Derived)):
            config[p.name] = value(p, config)
        return self.validate(config)

    # ------------------------------------------------------------------ validation
    def validate(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Check a configuration; return it as a plain dict, or raise :class:`ConfigError`.

        The error names the offending key: an unknown key, a missing key, a parameter of a branch
        that is not chosen, or a value outside its allowed range.
        """
        if not isinstance(config, Mapping):
            raise ConfigError(f"a configuration is a dict, got {type(config).__name__}")
        active = self.active(config)
        for p in sorted(active, key=lambda p: isinstance(p, Derived)):
            if p.name not in config:
                raise ConfigError(f"missing key {p.name!r} (allowed: {p.range_text()})")
            p.check(config[p.name], config)
        names = {p.name for p in active}
        known = set(self.numeric) | {c.name for c in self.categorical}
        for key in config:
            if key not in known:
                raise ConfigError(f"unknown key {key!r}; this space has {sorted(known)}")
            if key not in names:
                raise ConfigError(f"key {key!r} belongs to a branch that this configuration "
                                  "does not choose")
        return {p.name: config[p.name] for p in active}

    def sample(self, n: int, seed: int | np.random.Generator | None = None) -> list[dict[str, Any]]:
        """Draw ``n`` configurations from the space's distributions (seeded)."""
        rng = np.random.default_rng(seed)
        return [self._build(lambda c: c.options[int(rng.integers(len(c.options)))],
                            lambda p, config: p.sample(rng, config)) for _ in range(n)]

    # ------------------------------------------------------------------ encoding
    def encode(self, configs: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Encode configurations as a float64 array of shape ``(n, dim)`` (see module doc)."""
        n_cat = len(self.categorical)
        rows = []
        for config in configs:
            config = self.validate(config)
            row = np.full(self.dim, INACTIVE)
            row[:n_cat] = self.cardinalities
            for p in self.active(config):
                if isinstance(p, Choice):
                    row[self.categorical.index(p)] = p.options.index(config[p.name])
                else:
                    row[n_cat + self.numeric.index(p.name)] = p.encode(config[p.name], config)
            rows.append(row)
        return np.asarray(rows, dtype=np.float64).reshape(-1, self.dim)

    def decode(self, encoded: np.ndarray) -> list[dict[str, Any]]:
        """Invert :meth:`encode`: ``(n, dim)`` array -> configurations (validated)."""
        encoded = np.atleast_2d(np.asarray(encoded, dtype=np.float64))
        if encoded.ndim != 2 or encoded.shape[1] != self.dim:
            raise ValueError(f"encoding has shape {encoded.shape}, the space needs (n, {self.dim})")
        n_cat = len(self.categorical)

        def option(row: np.ndarray, choice: Choice) -> str:
            index = int(round(row[self.categorical.index(choice)]))
            if not 0 <= index < len(choice.options):
                raise ValueError(f"{choice.name}: option index {index} is out of range")
            return choice.options[index]

        return [self._build(lambda c, row=row: option(row, c),
                            lambda p, config, row=row: p.decode(
                                row[n_cat + self.numeric.index(p.name)], config))
                for row in encoded]

    # ------------------------------------------------------------------ serialisation
    def to_json(self) -> str:
        """The space as JSON (stored in database files; see :meth:`from_json`)."""
        return json.dumps({"name": self.name, "params": [p.to_dict() for p in self.params]})

    @classmethod
    def from_json(cls, text: str) -> SearchSpace:
        data = json.loads(text)
        return cls([_param_from_dict(p) for p in data["params"]], name=data["name"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return (f"SearchSpace({self.name!r}, {len(self.categorical)} choices, "
                f"{len(self.numeric)} numeric)")
