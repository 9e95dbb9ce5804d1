from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from clamp_track.data.coco import file_order_results, load_coco, read_json
from clamp_track.errors import InputError
from clamp_track.skeleton import ANIMALPOSE, AP10K

SETS = {  # folder: (annotation file, keypoints)
    "ap10k": ("test_ap10k.json", 17),
    "animalpose": ("test_animalpose.json", 20),
    "horse10": ("test_horse10.json", 22),
    "zebra": ("test_zebra.json", 9),
    "atrw": ("test_atrw.json", 15),
    "macaque": ("test_macaque.json", 17),
    "ak": ("test_animalkingdom.json", 23),
    "fly": ("test_fly.json", 32),
    "locust": ("test_locust.json", 35),
}


@pytest.fixture()
def ap10k_dir(shared_data):
    return shared_data / "mmpose-tests" / "ap10k"


@pytest.fixture()
def ap10k_copy(ap10k_dir, tmp_path):
    """A writable copy of the AP-10K sample (annotation file + both images)."""
    for f in ap10k_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def _rewrite(folder, edit):
    path = folder / "test_ap10k.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def test_ap10k_sample_reads_species_families_boxes_and_keypoints(ap10k_dir):
    data = load_coco(ap10k_dir / "test_ap10k.json", ap10k_dir)
    assert data.keypoints is AP10K and data.columns is None
    by_species = {r.species: r for r in data.records}
    assert sorted(by_species) == ["antelope", "jaguar"]
    assert by_species["antelope"].family == "Bovidae" and by_species["jaguar"].family == "Felidae"
    jaguar = by_species["jaguar"]
    assert jaguar.image_id == 37516 and jaguar.instance_id == 9284 and jaguar.category_id == 26
    # mmpose's box sanitising: x2 = min(W - 1, x1 + w - 1)
    np.testing.assert_allclose(jaguar.bbox, [66, 192, 1091, 511])
    assert jaguar.keypoints.shape == (17, 3) and jaguar.num_labelled == 16
    np.testing.assert_allclose(jaguar.keypoints[0], [134, 415, 2])
    assert jaguar.keypoints[1, 2] == 0  # right eye unlabelled
    assert jaguar.image.endswith("000000037516.jpg")
    assert len(data.categories) == 54 and len(data.families) == 23
    assert len(data.ground_truth["annotations"]) == 2


@pytest.mark.parametrize("folder", sorted(SETS))
def test_every_shared_coco_set_loads_with_its_own_keypoint_set(shared_data, folder):
    name, k = SETS[folder]
    root = shared_data / "mmpose-tests" / folder
    data = load_coco(root / name, root)
    assert data.keypoints.num_keypoints == k
    assert data.records and all(r.keypoints.shape == (k, 3) for r in data.records)
    names = json.loads((root / name).read_text())["categories"][0]["keypoints"]
    assert data.keypoints.matches(names)


def test_animalpose_is_recognised(shared_data):
    root = shared_data / "mmpose-tests" / "animalpose"
    assert load_coco(root / "test_animalpose.json", root).keypoints is ANIMALPOSE


def test_a_given_set_is_matched_by_name_and_reordered(ap10k_copy):
    reference = load_coco(ap10k_copy / "test_ap10k.json", ap10k_copy)
    perm = np.random.default_rng(0).permutation(17)

    def shuffle(data):
        for c in data["categories"]:
            c["keypoints"] = [c["keypoints"][i] for i in perm]
        for a in data["annotations"]:
            a["keypoints"] = np.reshape(a["keypoints"], (17, 3))[perm].ravel().tolist()

    path = _rewrite(ap10k_copy, shuffle)
    data = load_coco(path, ap10k_copy, "ap10k")
    assert data.keypoints is AP10K and data.columns is not None
    for a, b in zip(data.records, reference.records):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
    for a, b in zip(data.ground_truth["annotations"], reference.ground_truth["annotations"]):
        assert a["keypoints"] == b["keypoints"]
    # results in the set's order go back to the file's column order
    results = [{"image_id": 1, "keypoints": reference.records[0].keypoints.ravel().tolist()}]
    back = file_order_results(results, data.columns)
    raw = json.loads(path.read_text())["annotations"]
    file_kps = next(a for a in raw if a["id"] == reference.records[0].instance_id)["keypoints"]
    assert back[0]["keypoints"] == [float(v) for v in file_kps]


def test_a_set_that_does_not_fit_the_file_is_refused(shared_data):
    root = shared_data / "mmpose-tests" / "animalpose"
    with pytest.raises(InputError, match="test_animalpose.json: the file's keypoints .* do not "
                       "match keypoint set 'ap10k'"):
        load_coco(root / "test_animalpose.json", root, "ap10k")


def test_malformed_json_names_file_and_position(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [], "annotations": [\n  {"id": 1,}\n]}')
    with pytest.raises(InputError, match=r"broken.json: malformed JSON at line 2, column 12"):
        read_json(bad)
    with pytest.raises(InputError, match="nope.json: annotation file not found"):
        load_coco(tmp_path / "nope.json", tmp_path)
    other = tmp_path / "other.json"
    other.write_text('{"images": []}')
    with pytest.raises(InputError, match="other.json: not a COCO keypoint file"):
        load_coco(other, tmp_path)


def test_missing_image_names_the_record_and_the_file(ap10k_copy):
    (ap10k_copy / "000000000004.jpg").unlink()
    with pytest.raises(InputError) as err:
        load_coco(ap10k_copy / "test_ap10k.json", ap10k_copy)
    msg = str(err.value)
    assert "test_ap10k.json: annotation 6 (image 4): image file" in msg
    assert "000000000004.jpg not found" in msg and "--skip-bad" in msg
    assert "\n" not in msg


def test_keypoint_count_mismatch_names_the_record(ap10k_copy):
    path = _rewrite(ap10k_copy, lambda d: d["annotations"][1].update(
        keypoints=d["annotations"][1]["keypoints"][:-3]))
    with pytest.raises(InputError, match=r"annotation 6 \(image 4\): 48 keypoint values, but "
                       r"keypoint set 'ap10k' needs 17 keypoints x 3 = 51"):
        load_coco(path, ap10k_copy)


def test_skip_bad_skips_counts_and_drops_them_from_the_ground_truth(ap10k_copy, caplog):
    def damage(data):
        data["annotations"][1]["keypoints"] = [1, 2, 2]
        data["annotations"][0].pop("bbox")

    path = _rewrite(ap10k_copy, damage)
    with caplog.at_level(logging.WARNING):
        data = load_coco(path, ap10k_copy, skip_bad=True)
    assert data.records == [] and len(data.skipped) == 2
    assert "skipped 2 bad record(s)" in caplog.text
    assert data.ground_truth["annotations"] == []


def test_crowd_unlabelled_and_empty_boxes_are_left_out_silently(ap10k_copy):
    def edit(data):
        first, second = data["annotations"]
        data["annotations"].append({**first, "id": 100, "iscrowd": 1})
        data["annotations"].append({**first, "id": 101, "keypoints": [0] * 51,
                                    "num_keypoints": 0})
        data["annotations"].append({**second, "id": 102, "bbox": [5000, 10, 20, 20]})

    path = _rewrite(ap10k_copy, edit)
    data = load_coco(path, ap10k_copy)
    assert sorted(r.instance_id for r in data.records) == [6, 9284]
    assert len(data.ground_truth["annotations"]) == 5  # kept for COCO evaluation


def test_subset_and_families_restrict_records_and_ground_truth(ap10k_dir):
    data = load_coco(ap10k_dir / "test_ap10k.json", ap10k_dir)
    felids = data.select_families(["felidae"])
    assert [r.species for r in felids.records] == ["jaguar"]
    assert [a["category_id"] for a in felids.ground_truth["annotations"]] == [26]
    assert [im["id"] for im in felids.ground_truth["images"]] == [37516]
    one = data.subset([1])
    assert [r.instance_id for r in one.records] == [data.records[1].instance_id]
    assert len(one.ground_truth["annotations"]) == 1
    with pytest.raises(InputError, match="unknown families \\['Aves'\\]"):
        data.select_families(["Aves"])
