"""Training regimes of the paper: supervised, few-shot and zero-shot (``clamp-model-spec.md`` §2).

* ``supervised``: the whole training split.
* ``fewshot``: ``shots`` instances per species (category), sampled from the training split; a
  species with fewer instances contributes all of them. Each species draws from its own
  generator seeded by ``(seed, category_id)`` over its instances sorted by id, so a species'
  sample does not depend on the file order or on which other species are present.
* ``zeroshot``: train on the instances of some families (super-categories), evaluate on those of
  other families, e.g. Bovidae -> Canidae and Canidae -> Felidae.

The resulting sample lists are written next to the run (``samples.json``) with the seed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from clamp_track.data.coco import CocoData
from clamp_track.data.records import Instance
from clamp_track.errors import InputError


@dataclass(frozen=True)
class RegimeConfig:
    """Which instances to train and evaluate on.

    Attributes:
        kind: ``"supervised"``, ``"fewshot"`` or ``"zeroshot"``.
        shots: Instances per species for ``fewshot``.
        train_families: Families (super-categories) to train on for ``zeroshot``.
        test_families: Families to evaluate on for ``zeroshot``.
        seed: Seed of the few-shot sampling.
    """

    kind: Literal["supervised", "fewshot", "zeroshot"] = "supervised"
    shots: int = 20
    train_families: tuple[str, ...] = ()
    test_families: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self):
        if self.kind == "fewshot" and self.shots < 1:
            raise ValueError(f"fewshot needs shots >= 1, got {self.shots}")
        if self.kind == "zeroshot":
            if not self.train_families or not self.test_families:
                raise ValueError("zeroshot needs train_families and test_families")
            common = {f.lower() for f in self.train_families} & {
                f.lower() for f in self.test_families}
            if common:
                raise ValueError(f"zeroshot families must not overlap: {sorted(common)}")


def fewshot_indices(records: Sequence[Instance], shots: int, seed: int) -> list[int]:
    """Indices of ``shots`` instances per species (all of a species with fewer), sorted.

    Args:
        records: Training instances.
        shots: Instances per species.
        seed: Sampling seed.

    Returns:
        Indices into ``records``, ascending.
    """
    by_species: dict[int, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        by_species[rec.category_id].append(i)
    chosen: list[int] = []
    for category, idx in by_species.items():
        idx = sorted(idx, key=lambda i: (records[i].instance_id, i))
        if len(idx) > shots:
            rng = np.random.default_rng((seed, category))
            idx = [idx[j] for j in rng.choice(len(idx), size=shots, replace=False)]
        chosen.extend(idx)
    return sorted(chosen)


def family_indices(records: Sequence[Instance], families: Sequence[str]) -> list[int]:
    """Indices of the instances whose family is one of ``families`` (case-insensitive)."""
    wanted = {f.lower() for f in families}
    return [i for i, rec in enumerate(records) if rec.family.lower() in wanted]


def apply_regime(train: CocoData, val: CocoData | None,
                 cfg: RegimeConfig) -> tuple[CocoData, CocoData | None]:
    """Restrict the training (and validation) data to a regime.

    Args:
        train: The training split.
        val: The validation split, or None.
        cfg: The regime.

    Returns:
        ``(train, val)`` restricted; the validation split is only restricted by ``zeroshot``.

    Raises:
        InputError: For families a file does not have, or an empty result.
    """
    if cfg.kind == "fewshot":
        train = train.subset(fewshot_indices(train.records, cfg.shots, cfg.seed))
    elif cfg.kind == "zeroshot":
        train = train.select_families(cfg.train_families)
        if val is not None:
            val = val.select_families(cfg.test_families)
    if not train.records:
        raise InputError(f"{train.path}: no training instances left for the {cfg.kind} regime")
    return train, val


def sample_list(train: CocoData, val: CocoData | None, cfg: RegimeConfig) -> dict:
    """The exact samples of a run, as plain data for ``samples.json``."""

    def describe(data: CocoData) -> dict:
        species = Counter(r.species for r in data.records)
        return {
            "annotations": str(data.path),
            "instances": len(data.records),
            "per_species": dict(sorted(species.items())),
            "instance_ids": [int(r.instance_id) for r in data.records],
        }

    out = {"regime": cfg.kind, "seed": cfg.seed, "train": describe(train)}
    if cfg.kind == "fewshot":
        out["shots"] = cfg.shots
    if cfg.kind == "zeroshot":
        out["train_families"] = list(cfg.train_families)
        out["test_families"] = list(cfg.test_families)
    if val is not None:
        out["val"] = describe(val)
    return out
