"""Strict configuration: frozen dataclasses loaded from YAML with unknown keys rejected.

Each stage defines a frozen dataclass of its settings. :func:`from_dict` builds one from plain
data (YAML, CLI overrides) and refuses keys the dataclass does not have, so a typo in a config
file is an error naming the key and the file instead of a silently ignored setting.
:func:`dump_yaml` writes the resolved config next to every output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from clamp_track.errors import InputError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict | None, *, source: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclass fields.

    Args:
        cls: A (frozen) dataclass type.
        data: Mapping of field names to values; ``None`` means all defaults.
        source: Where the data came from, used in error messages (a file path, "--set").

    Returns:
        An instance of ``cls``.

    Raises:
        InputError: On unknown keys, missing required keys or values of the wrong kind.
    """
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(
            f"{source}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints.get(name, Any), value, f"{source}: {name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # missing required fields
        raise InputError(f"{source}: {exc}") from None
    except ValueError as exc:  # __post_init__ validation
        raise InputError(f"{source}: {exc}") from None


def _coerce(hint, value, where: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        return None
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise InputError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(hint, value, source=where)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except InputError:
                continue
        raise InputError(f"{where}: {value!r} does not fit {hint}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if args and len(args) != len(value):
            raise InputError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, where) for a, v in zip(args or [Any] * len(value), value))
    if origin is typing.Literal:
        if value not in args:
            raise InputError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "5e-4" as a string
        try:
            return float(value)
        except ValueError:
            raise InputError(f"{where}: expected a number, got {value!r}") from None
    if hint in (int, str, bool, float) and not isinstance(value, hint):
        if hint is int and isinstance(value, float) and value.is_integer():
            return int(value)
        raise InputError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def check_fractions(obj, *names: str) -> None:
    """Raise ValueError unless every named field of ``obj`` lies in [0, 1] (probabilities)."""
    for name in names:
        if not 0.0 <= getattr(obj, name) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {getattr(obj, name)}")


def to_dict(obj) -> dict:
    """Plain-data form of a config dataclass (tuples become lists, for YAML)."""

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(obj)


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping, with a one-line error for a missing or malformed file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}: invalid YAML{where}; fix the syntax") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of settings at the top level")
    return data


def parse_overrides(items) -> dict:
    """Turn ``["train.lr=1e-4", "model=clamp_vitb16"]`` into a nested dict (values as YAML)."""
    import yaml

    out: dict = {}
    for item in items or ():
        if "=" not in item:
            raise InputError(f"override {item!r} must look like key=value (e.g. train.lr=1e-4)")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def merge(base: dict, override: dict) -> dict:
    """Recursively merge ``override`` into a copy of ``base``."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def current_umask() -> int:
    """The process's file-creation mask (e.g. ``0o022``), read without changing it.

    Linux reports it in ``/proc/self/status``; elsewhere it is read by setting and restoring it.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_beside(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A new empty hidden file beside ``path``, to write ``path`` atomically (then ``os.replace``).

    Named ``.<name>.<pid>.<random><suffix>`` and created with the user's umask (as ``path``
    itself would be; ``mkstemp`` would make it private). Temporary files of ``path`` that a
    process left behind when it was killed while writing (its process is gone) are removed
    first, so a later write never leaves them lying around.

    Raises:
        OSError: The folder is not writable.
    """
    path = Path(path)
    remove_stale_temps(path, suffix)
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def remove_stale_temps(path: str | os.PathLike, suffix: str = ".tmp") -> list[Path]:
    """Remove the temporary files of ``path`` (see :func:`temp_beside`) whose writer is gone.

    A file whose process id is alive on this machine is another writer's, and kept; one without
    a process id comes from an older clamp-track and is removed.

    Returns:
        The files removed.
    """
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    try:
        names = [e.name for e in os.scandir(path.parent)]
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(suffix)
                and len(name) > len(prefix) + len(suffix)):
            continue
        pid = name[len(prefix):len(name) - len(suffix)].split(".", 1)[0]
        if pid.isdigit() and _process_alive(int(pid)):
            continue
        try:
            (path.parent / name).unlink()
            removed.append(path.parent / name)
        except OSError:
            pass
    return removed


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # pragma: no cover - os.kill(pid, 0) would end the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, someone else's
    return True


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename (never a partial file)."""
    path = Path(path)
    tmp = temp_beside(path)
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dump_yaml(obj, path: str | os.PathLike) -> None:
    """Write a config dataclass (or mapping) as YAML, atomically."""
    import yaml

    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
