from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from clamp_track.config import (
    atomic_write_text,
    dump_yaml,
    from_dict,
    load_yaml,
    merge,
    parse_overrides,
    remove_stale_temps,
    temp_beside,
)
from clamp_track.errors import InputError


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    steps: tuple[int, ...] = (170, 200)


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    device: str | None = None


def test_strict_loading_rejects_unknown_keys_with_the_source():
    with pytest.raises(InputError, match=r"my\.yaml: inner: unknown key\(s\) \['lrr'\]"):
        from_dict(Outer, {"name": "a", "inner": {"lrr": 1}}, source="my.yaml")


def test_types_are_coerced_and_checked():
    cfg = from_dict(Outer, {"name": "a", "inner": {"lr": 1, "steps": [1, 2]}})
    assert cfg.inner == Inner(lr=1.0, steps=(1, 2))
    with pytest.raises(InputError, match="expected str"):
        from_dict(Outer, {"name": 3})
    with pytest.raises(InputError, match="missing"):
        from_dict(Outer, {})


def test_yaml_round_trip_and_overrides(tmp_path):
    cfg = from_dict(Outer, merge({"name": "a"}, parse_overrides(["inner.lr=5e-4", "device=cpu"])))
    assert cfg.inner.lr == 5e-4 and cfg.device == "cpu"
    dump_yaml(cfg, tmp_path / "c.yaml")
    assert from_dict(Outer, load_yaml(tmp_path / "c.yaml")) == cfg
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="invalid YAML at line"):
        load_yaml(tmp_path / "bad.yaml")


@pytest.fixture
def umask():
    """Set the process umask for a test, restoring it afterwards."""
    import os

    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask, mode):
    # mkstemp makes 0600 files; a rename would carry that onto the output
    from clamp_track.config import current_umask

    umask(mask)
    assert current_umask() == mask
    atomic_write_text(tmp_path / "a.yaml", "x: 1\n")
    assert (tmp_path / "a.yaml").stat().st_mode & 0o777 == mode
    assert (tmp_path / "a.yaml").read_text() == "x: 1\n"


def test_leftovers_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = tmp_path / f".out.csv.{done.stdout.strip()}.k2j4.tmp.csv"  # its writer has exited
    live = tmp_path / f".out.csv.{os.getppid()}.x8a1.tmp.csv"  # a running process's
    other = tmp_path / ".out.csv.notes"  # not a temporary file of ours
    for path in (dead, live, other):
        path.write_text("partial")
    tmp = temp_beside(tmp_path / "out.csv", suffix=".tmp.csv")
    assert not dead.exists() and live.exists() and other.exists() and tmp.exists()
    assert tmp.name.startswith(f".out.csv.{os.getpid()}.") and tmp.name.endswith(".tmp.csv")
    assert remove_stale_temps(tmp_path / "out.csv") == []
