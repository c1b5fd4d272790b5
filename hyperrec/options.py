"""Validation of numeric and boolean options at the API's boundary (the builder, AT2's engines
and acquisition, the baselines, live tuning), with messages that name the option."""

from __future__ import annotations

import math
import numbers
from typing import Any


def check_option(name: str, value: Any, kind: type, low: float = -math.inf,
                 high: float = math.inf) -> None:
    """Raise ``ValueError`` naming option ``name`` unless ``value`` is of ``kind``: ``int`` an
    integer, ``float`` a real number (neither a bool), both in ``[low, high]``; ``bool`` true,
    false or None (``low`` and ``high`` unused)."""
    if kind is bool:
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"option {name}={value!r}: expected true, false or none")
        return
    number = numbers.Integral if kind is int else numbers.Real
    if isinstance(value, bool) or not isinstance(value, number) or not low <= value <= high:
        expected = "an integer" if kind is int else "a number"
        raise ValueError(f"option {name}={value!r}: expected {expected} in [{low}, {high}]")
