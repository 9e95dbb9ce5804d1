"""Resume state as plain data: a JSON tree of numbers, strings, lists and NumPy arrays.

A run stores the state of its tracker in the result store after every chunk, so that an
interrupted run resumes exactly where it stopped. That state is an object graph (the
tracker, ByteTrack's tracklets, their Kalman filters). Pickle would restore it in one call,
but unpickling a file runs whatever code the file names, and a store is a data file users
copy and share. This module writes the graph as data instead and reads it back without
running code from the file:

* JSON scalars stay as they are; NumPy scalars and arrays are stored as dtype, shape and
  base64 bytes (numeric dtypes only: object arrays, which NumPy itself would unpickle, are
  refused);
* tuples, dicts with non-string keys and objects are tagged; an object is stored as its
  class name and its attributes (``__dict__``), and shared objects or arrays are stored once
  and referenced, so that in-place updates keep affecting every holder after a resume;
* reading creates objects only of classes in :data:`ALLOWED_MODULES` (this program's and
  the ``trackers`` package's), with ``object.__new__`` and their attributes set directly: no
  ``__init__``, ``__setstate__`` or ``__reduce__`` of anything runs.

Anything else in the data (an unknown tag, a class from another module, an object dtype)
raises :class:`StateError`.
"""

from __future__ import annotations

import base64
import importlib

import numpy as np

#: Modules whose classes a state may contain (exact names, or prefixes ending in ``.``).
ALLOWED_MODULES = ("clamp_track.pipelines.run", "clamp_track.pipelines.tracker",
                   "clamp_track.types", "trackers.")

_TAGS = ("$tuple", "$dict", "$nd", "$np", "$obj", "$ref", "$cls", "$float")


class StateError(ValueError):
    """A resume state holds something other than plain data of known classes."""


def _allowed(module: str) -> bool:
    return any(module == m or (m.endswith(".") and module.startswith(m))
               for m in ALLOWED_MODULES)


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def dump_state(obj) -> dict:
    """Encode ``obj`` as a JSON-serialisable tree (see the module docstring).

    Args:
        obj: Plain values, NumPy arrays, and objects of allowed classes holding them.

    Returns:
        ``{"version": 1, "root": tree}``.

    Raises:
        StateError: ``obj`` holds something that cannot be stored as data.
    """
    memo: dict[int, int] = {}
    keep: list = []  # keep encoded objects alive, so that ids stay unique while encoding

    def enc(value):
        if value is None or isinstance(value, (bool, int, str)) and type(value) in (
                bool, int, str):
            return value
        if type(value) is float:
            # JSON has no NaN/inf; exact floats round-trip through repr
            return value if np.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, np.generic):
            if value.dtype.kind not in "biuf":
                raise StateError(f"cannot store a NumPy scalar of dtype {value.dtype}")
            return {"$np": value.dtype.str, "b64": base64.b64encode(value.tobytes()).decode()}
        if isinstance(value, list):
            return [enc(v) for v in value]
        if isinstance(value, tuple) and type(value) is tuple:
            return {"$tuple": [enc(v) for v in value]}
        if isinstance(value, dict) and type(value) is dict:
            if all(type(k) is str and not k.startswith("$") for k in value):
                return {k: enc(v) for k, v in value.items()}
            return {"$dict": [[enc(k), enc(v)] for k, v in value.items()]}
        if isinstance(value, type):
            if not _allowed(value.__module__):
                raise StateError(f"cannot store class {_class_name(value)}")
            return {"$cls": _class_name(value)}
        if id(value) in memo:
            return {"$ref": memo[id(value)]}
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise StateError(f"cannot store an array of dtype {value.dtype}")
            memo[id(value)] = len(memo)
            keep.append(value)
            return {"$nd": value.dtype.str, "shape": list(value.shape), "id": memo[id(value)],
                    "b64": base64.b64encode(np.ascontiguousarray(value).tobytes()).decode()}
        cls = type(value)
        if not _allowed(cls.__module__) or not hasattr(value, "__dict__"):
            raise StateError(f"cannot store an object of class {_class_name(cls)}")
        memo[id(value)] = len(memo)
        keep.append(value)
        return {"$obj": _class_name(cls), "id": memo[id(value)],
                "state": {k: enc(v) for k, v in vars(value).items()}}

    return {"version": 1, "root": enc(obj)}


def _resolve(name: str) -> type:
    module, _, qualname = str(name).partition(":")
    if not _allowed(module) or not qualname:
        raise StateError(f"class {name!r} is not allowed in a resume state")
    try:
        target = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        raise StateError(f"class {name!r} does not exist in this version") from None
    if not isinstance(target, type):
        raise StateError(f"{name!r} is not a class")
    return target


def load_state(data) -> object:
    """Decode a tree written by :func:`dump_state`, creating only objects of allowed classes.

    Raises:
        StateError: The tree is malformed or names anything not allowed.
    """
    if not isinstance(data, dict) or data.get("version") != 1 or "root" not in data:
        raise StateError("not a clamp-track resume state (version 1)")
    memo: dict[int, object] = {}

    def dec(value):
        if value is None or type(value) in (bool, int, float, str):
            return value
        if isinstance(value, list):
            return [dec(v) for v in value]
        if not isinstance(value, dict):
            raise StateError(f"unexpected value of type {type(value).__name__}")
        tag = next((t for t in _TAGS if t in value), None)
        if tag is None:
            return {k: dec(v) for k, v in value.items()}
        if tag == "$float":
            if value["$float"] not in ("nan", "inf", "-inf"):
                raise StateError(f"bad float {value['$float']!r}")
            return float(value["$float"])
        if tag == "$tuple":
            return tuple(dec(v) for v in _list(value["$tuple"]))
        if tag == "$dict":
            return {_key(dec(k)): dec(v) for k, v in _list(value["$dict"])}
        if tag == "$cls":
            return _resolve(value["$cls"])
        if tag == "$ref":
            if value["$ref"] not in memo:
                raise StateError(f"reference to unknown object {value['$ref']!r}")
            return memo[value["$ref"]]
        if tag in ("$np", "$nd"):
            dtype = np.dtype(str(value[tag]))
            if dtype.kind not in "biuf":
                raise StateError(f"dtype {dtype} is not allowed in a resume state")
            raw = base64.b64decode(str(value["b64"]), validate=True)
            if tag == "$np":
                if len(raw) != dtype.itemsize:
                    raise StateError("NumPy scalar of the wrong size")
                return np.frombuffer(raw, dtype)[0]
            shape = tuple(int(s) for s in _list(value["shape"]))
            if len(raw) != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
                raise StateError("array data do not match their shape")
            array = np.frombuffer(raw, dtype).reshape(shape).copy()
            memo[value["id"]] = array
            return array
        cls = _resolve(value["$obj"])
        if cls.__new__ is not object.__new__:
            raise StateError(f"class {value['$obj']!r} cannot be restored as data")
        obj = object.__new__(cls)
        memo[value["id"]] = obj  # before the attributes: they may refer back to it
        state = value["state"]
        if not isinstance(state, dict):
            raise StateError("object state must be a mapping")
        vars(obj).update({str(k): dec(v) for k, v in state.items()})
        return obj

    try:
        return dec(data["root"])
    except StateError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"malformed resume state ({type(exc).__name__}: {exc})") from None


def _list(value) -> list:
    if not isinstance(value, list):
        raise StateError("expected a list")
    return value


def _key(key):
    if isinstance(key, (list, dict, np.ndarray)):
        raise StateError("unhashable key")
    return key
