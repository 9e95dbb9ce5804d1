from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from clamp_track.data.coco import load_coco
from clamp_track.engine.regimes import (
    RegimeConfig,
    apply_regime,
    family_indices,
    fewshot_indices,
    sample_list,
)
from clamp_track.errors import InputError

BOVIDAE = {"antelope", "argali sheep", "bison", "buffalo", "cow", "sheep"}
CANIDAE = {"arctic fox", "dog", "fox", "wolf"}
FELIDAE = {"bobcat", "cat", "cheetah", "jaguar", "king cheetah", "leopard", "lion", "panther",
           "snow leopard", "tiger"}


def _many_species_file(shared_data, tmp_path, seed=0, drop_species=(), shuffle=False):
    """The real AP-10K category list (54 species, 23 families) with 3-45 synthetic instances
    of every species; all images point at the two real sample images."""
    root = shared_data / "mmpose-tests" / "ap10k"
    real = json.loads((root / "test_ap10k.json").read_text())
    rng = np.random.default_rng(seed)
    images = [{"id": i, "file_name": real["images"][i % 2]["file_name"], "width": 1024,
               "height": 683} for i in range(1, 201)]
    annotations, uid = [], 1
    for cat in real["categories"]:
        for _ in range(int(rng.integers(3, 46))):
            x, y = rng.uniform(0, 500, 2)
            w, h = rng.uniform(50, 400, 2)
            kps = np.stack([x + rng.uniform(0, w, 17), y + rng.uniform(0, h, 17),
                            np.full(17, 2)], axis=1)
            image_id = int(rng.integers(1, 201))
            if cat["id"] not in drop_species:
                annotations.append({
                    "id": uid, "image_id": image_id, "category_id": cat["id"],
                    "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0, "num_keypoints": 17,
                    "keypoints": kps.ravel().round(1).tolist()})
            uid += 1
    if shuffle:
        annotations = [annotations[i] for i in rng.permutation(len(annotations))]
    path = tmp_path / f"many_{seed}_{len(drop_species)}_{shuffle}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": real["categories"]}))
    return load_coco(path, root)


def test_fewshot_takes_n_per_species_reproducibly(shared_data, tmp_path):
    data = _many_species_file(shared_data, tmp_path)
    assert len({r.category_id for r in data.records}) == 54
    available = Counter(r.species for r in data.records)
    chosen = fewshot_indices(data.records, 20, seed=0)
    counts = Counter(data.records[i].species for i in chosen)
    assert counts == {s: min(n, 20) for s, n in available.items()}
    assert any(n < 20 for n in available.values()) and any(n > 20 for n in available.values())
    assert chosen == fewshot_indices(data.records, 20, seed=0)
    ids = {data.records[i].instance_id for i in chosen}
    other = {data.records[i].instance_id for i in fewshot_indices(data.records, 20, seed=1)}
    assert ids != other
    # independent of the file order and of the other species
    shuffled = _many_species_file(shared_data, tmp_path, shuffle=True)
    assert {shuffled.records[i].instance_id
            for i in fewshot_indices(shuffled.records, 20, 0)} == ids
    fewer = _many_species_file(shared_data, tmp_path, drop_species=(1, 2, 3))
    kept = {fewer.records[i].instance_id for i in fewshot_indices(fewer.records, 20, 0)}
    category = {r.instance_id: r.category_id for r in data.records}
    assert kept == {i for i in ids if category[i] > 3}


@pytest.mark.parametrize("train_family, test_family, train_species, test_species", [
    ("Bovidae", "Canidae", BOVIDAE, CANIDAE),
    ("Canidae", "Felidae", CANIDAE, FELIDAE),
])
def test_zeroshot_splits_by_family(shared_data, tmp_path, train_family, test_family,
                                   train_species, test_species):
    data = _many_species_file(shared_data, tmp_path)
    cfg = RegimeConfig(kind="zeroshot", train_families=(train_family,),
                       test_families=(test_family,))
    train, val = apply_regime(data, data, cfg)
    assert {r.species for r in train.records} == train_species
    assert {r.species for r in val.records} == test_species
    assert len(val.records) == len(family_indices(data.records, [test_family]))
    test_ids = {i for i, c in data.categories.items() if c["name"] in test_species}
    assert {a["category_id"] for a in val.ground_truth["annotations"]} == test_ids
    samples = json.loads(json.dumps(sample_list(train, val, cfg)))
    assert samples["train_families"] == [train_family]
    assert set(samples["val"]["per_species"]) == test_species
    assert samples["train"]["instance_ids"] == [r.instance_id for r in train.records]


def test_regime_config_checks(shared_data, tmp_path):
    with pytest.raises(ValueError, match="must not overlap"):
        RegimeConfig(kind="zeroshot", train_families=("Canidae",), test_families=("canidae",))
    with pytest.raises(ValueError, match="needs train_families"):
        RegimeConfig(kind="zeroshot")
    with pytest.raises(ValueError, match="shots"):
        RegimeConfig(kind="fewshot", shots=0)
    data = _many_species_file(shared_data, tmp_path)
    with pytest.raises(InputError, match=r"unknown families \['Birds'\]"):
        apply_regime(data, None, RegimeConfig(kind="zeroshot", train_families=("Birds",),
                                              test_families=("Canidae",)))
    train, val = apply_regime(data, None, RegimeConfig(kind="fewshot", shots=2, seed=3))
    assert val is None and len(train.records) == 108
    assert sample_list(train, None, RegimeConfig(kind="fewshot", shots=2, seed=3))["shots"] == 2
