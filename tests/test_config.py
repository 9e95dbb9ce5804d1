from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from clamp_track.config import dump_yaml, from_dict, load_yaml, merge, parse_overrides
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
