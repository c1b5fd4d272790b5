import math

import numpy as np
import pytest

from hyperrec.options import check_option


def test_check_option_accepts_numbers_of_the_kind_in_range():
    check_option("steps", 3, int, 0)
    check_option("steps", np.int64(3), int, 0, 3)
    check_option("lr", 0.5, float, 0, 1)
    check_option("lr", 1, float, 0)  # an integer is a real number
    check_option("seed", -7, int)
    check_option("flag", None, bool)
    check_option("flag", False, bool)


@pytest.mark.parametrize("value, kind, low, high, expected", [
    (2.5, int, 0, math.inf, "expected an integer in [0, inf]"),
    (True, int, 0, math.inf, "expected an integer"),
    ("3", float, 0, math.inf, "expected a number"),
    (-0.1, float, 0, 1, "expected a number in [0, 1]"),
    (11, int, 0, 10, "expected an integer in [0, 10]"),
    (1, bool, 0, 0, "expected true, false or none"),
])
def test_check_option_names_the_option_and_what_it_expects(value, kind, low, high, expected):
    with pytest.raises(ValueError, match=rf"option x={value!r}: {expected}".replace("[", r"\[")
                       .replace("]", r"\]")):
        check_option("x", value, kind, low, high)


def test_engines_check_their_name_and_options():
    from at2.tuner import check_engine

    check_engine("exact", {"fit_steps": 3, "lr": 0.1})
    check_engine("variational", {"mixed_precision": None, "momentum": 0.9})
    for engine, options, message in (
            ("exact", 5, "exact engine options: expected a mapping"),
            ("variational", {"steps": 1}, r"unknown option\(s\) \['steps'\] for the variational"),
            ("variational", {"momentum": 1.5}, r"option momentum=1.5: expected a number in \[0"),
            ("sparse", {}, "unknown engine 'sparse'")):
        with pytest.raises(ValueError, match=message):
            check_engine(engine, options)
