import collections
import os
import pickle

import numpy as np
import pytest

from hyperrec.safe_pickle import UnsafePickleError, safe_loads


class Shell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_os_system_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafePickleError, match=r"refused global posix\.system"):
        safe_loads(pickle.dumps({"x": Shell(f"touch {marker}")}))
    assert not marker.exists()


@pytest.mark.parametrize("obj, refused", [
    (eval, "builtins.eval"),
    (np.array([None, 1], dtype=object), "dtype object"),
    (collections.Counter("ab"), "collections.Counter"),
])
def test_other_globals_and_object_arrays_are_refused(obj, refused):
    with pytest.raises(UnsafePickleError, match=refused):
        safe_loads(pickle.dumps(obj))


def test_defaultdicts_of_arrays_load_as_plain_dicts():
    data = collections.defaultdict(lambda: collections.defaultdict(dict))
    data[0]["task"][3] = np.linspace(0, 1, 5)
    data[0]["task"][4] = np.arange(3, dtype=np.float32)
    # plain pickle cannot store the lambda factory; the published files used dill for that
    data.default_factory = None
    loaded = safe_loads(pickle.dumps(data))
    assert type(loaded) is dict and type(loaded[0]) is dict
    np.testing.assert_array_equal(loaded[0]["task"][3], np.linspace(0, 1, 5))
    assert loaded[0]["task"][4].dtype == np.float32
