"""A restricted unpickler for the published AT2 files.

``profiles.pkl`` was written with ``dill``: nested ``defaultdict``s whose default factories are
pickled lambdas, holding numpy arrays. Loading it with ``pickle`` or ``dill`` executes
reconstruction code from the file. :func:`safe_load` never does: it resolves only the globals in
an allow-list, and every one of them is inert.

* ``collections.defaultdict`` becomes a plain ``dict`` (the default factory is dropped);
* dill's function and code reconstruction (``_create_function``, ``_create_code``) and the
  ``__main__`` namespace they reference become an inert placeholder, never called;
* builtin container types (``dict``, ``list``, ``tuple``, ``set``) resolve, directly or
  through dill's ``_load_type``;
* dill's ``_import_module``/``_get_attr`` resolve only numpy's array reconstructor;
* numpy arrays are rebuilt from raw bytes; dtypes that could hold Python objects are refused.

Any other global is refused with :class:`UnsafePickleError` naming it, before anything runs.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside the allow-list."""


class _Inert:
    """Stands in for a reconstructed function, code object or module namespace."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "<inert pickled object>"

    def __reduce__(self):  # never let a stand-in be pickled back into something live
        raise TypeError("an inert placeholder cannot be pickled")


def _plain_dict(default_factory: Any = None, *args: Any) -> dict:
    """``defaultdict(factory)`` -> ``{}``: the (pickled) factory is never kept or called."""
    return dict(*args)


def _checked_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise UnsafePickleError(f"refused numpy dtype {dtype} (it can hold Python objects)")
    return dtype


def _array_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refused array subtype {subtype!r}")
    return np.ndarray.__new__(np.ndarray, shape, _checked_dtype(dtype))


_BUILTIN_TYPES = {"dict": dict, "list": list, "tuple": tuple, "set": set}


def _load_type(name: str) -> type:
    if name not in _BUILTIN_TYPES:
        raise UnsafePickleError(f"refused dill._dill._load_type({name!r})")
    return _BUILTIN_TYPES[name]


_NUMPY_MODULES = ("numpy.core._multiarray_umath", "numpy._core._multiarray_umath",
                  "numpy.core.multiarray", "numpy._core.multiarray")


class _ModuleRef:
    """What dill's ``_import_module`` returns here: a name, not a module."""

    def __init__(self, name: str) -> None:
        if name not in _NUMPY_MODULES:
            raise UnsafePickleError(f"refused dill._dill._import_module({name!r})")
        self.name = name


def _get_attr(module: Any, name: str) -> Any:
    if isinstance(module, _ModuleRef):
        return _resolve(module.name, name)
    raise UnsafePickleError(f"refused dill._dill._get_attr on {type(module).__name__}")


_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "defaultdict"): _plain_dict,
    ("collections", "OrderedDict"): dict,
    ("dill._dill", "_create_function"): _Inert,
    ("dill._dill", "_create_code"): _Inert,
    ("dill._dill", "_load_type"): _load_type,
    ("dill._dill", "_import_module"): _ModuleRef,
    ("dill._dill", "_get_attr"): _get_attr,
    ("__builtin__", "__main__"): _Inert,
    ("builtins", "__main__"): _Inert,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _checked_dtype,
    **{(module, "_reconstruct"): _array_reconstruct for module in _NUMPY_MODULES},
    **{("builtins", name): kind for name, kind in _BUILTIN_TYPES.items()},
}


def _resolve(module: str, name: str) -> Any:
    try:
        return _ALLOWED[(module, name)]
    except KeyError:
        raise UnsafePickleError(
            f"refused global {module}.{name}: not needed by the published AT2 files"
        ) from None


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _resolve(module, name)


def safe_loads(data: bytes) -> Any:
    """Unpickle ``data`` with the allow-list above (see module docstring)."""
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def safe_load(path: str | Path) -> Any:
    """Unpickle a file with the allow-list above (see module docstring)."""
    return safe_loads(Path(path).read_bytes())
