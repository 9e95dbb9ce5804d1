from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from clamp_track.data.augment import AugmentConfig
from clamp_track.data.coco import load_coco
from clamp_track.data.corrections import (
    FinetuneDataset,
    PhotometricConfig,
    imbalance_warnings,
    jitter_colours,
    map_records,
    repeats_for,
    split_images,
    to_instances,
)
from clamp_track.errors import InputError
from clamp_track.io.dlc_labels import read_dlc_labels
from clamp_track.io.labels import Label, VideoFrame
from clamp_track.skeleton import AP10K, from_names

OPENFIELD = "deeplabcut-examples/openfield-Pranav-2018-10-30/labeled-data/m4s1"


@pytest.fixture(scope="module")
def openfield(shared_data):
    return read_dlc_labels(shared_data / OPENFIELD)


def test_instances_have_keypoint_boxes_and_unique_ids(openfield):
    items = openfield.items[:10]
    missing = Label(items[0].image, "m4s1", "x.png",
                    np.array([[10.0, 20.0, 2], [np.nan, np.nan, 0], [30, 40, 2], [0, 0, 0]]))
    records = to_instances(items + [missing], openfield.keypoints)
    assert len(records) == 11
    assert len({r.image_id for r in records}) == 11
    assert len({r.instance_id for r in records}) == 11
    rec = records[0]
    kps = items[0].keypoints
    lo = kps[:, :2].min(axis=0) - 20  # the open-field mouse is < 200 px: 20 px margin
    np.testing.assert_allclose(rec.bbox[:2], np.maximum(lo, 0), rtol=1e-6)
    np.testing.assert_array_equal(records[-1].keypoints[1], [0, 0, 0])
    assert rec.keypoints.dtype == np.float32 and rec.species == "m4s1"


def test_split_holds_out_whole_images_reproducibly(openfield):
    split = split_images(openfield, 0.2, seed=3)
    assert len(split.val) == round(0.2 * 116) and len(split.train) == 116 - len(split.val)
    assert not {i.image_key for i in split.train} & {i.image_key for i in split.val}
    again = split_images(openfield, 0.2, seed=3)
    assert [i.image_name for i in again.val] == [i.image_name for i in split.val]
    other = split_images(openfield, 0.2, seed=4)
    assert [i.image_name for i in other.val] != [i.image_name for i in split.val]
    tiny = openfield.with_items(openfield.items[:4])
    assert split_images(tiny, 0.2, min_images=5).val == []


def test_dataset_mixes_fresh_replay_samples_every_epoch(openfield, shared_data):
    root = shared_data / "mmpose-tests" / "ap10k"
    base = load_coco(root / "test_ap10k.json", root)
    target = from_names(["nose", "left_eye", "tailbase"], name="mixed")
    replay, shared = map_records(base.records, AP10K, target)
    assert shared == ["nose", "left eye"] and replay
    assert all(r.keypoints[2, 2] == 0 for r in replay)
    own = to_instances(openfield.items[:3], openfield.keypoints)
    with pytest.raises(InputError, match="share no name"):
        map_records(base.records, AP10K, openfield.keypoints)
    ds = FinetuneDataset(own, openfield.keypoints, (64, 64), AugmentConfig(),
                         photometric=PhotometricConfig(), replay=to_instances(
                             openfield.items[3:8], openfield.keypoints),
                         replay_per_epoch=4, seed=1)
    assert len(ds) == 7
    a, b = ds[(0, 5)], ds[(0, 5)]
    np.testing.assert_array_equal(a["image"], b["image"])  # seeded
    assert a["image"].shape == (3, 64, 64) and a["index"] == 5
    picks = {ds[(e, 6)]["keypoints"].tobytes() for e in range(6)}
    assert len(picks) > 1  # other replay draws (and augmentations) in other epochs


def test_colour_jitter_is_seeded_and_keeps_the_geometry():
    crop = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    cfg = PhotometricConfig(prob=1.0, grey_prob=0.0, blur_prob=0.0)
    out = jitter_colours(crop, np.random.default_rng(5), cfg)
    np.testing.assert_array_equal(out, jitter_colours(crop, np.random.default_rng(5), cfg))
    assert out.shape == crop.shape and out.dtype == np.uint8 and not np.array_equal(out, crop)
    grey = jitter_colours(crop, np.random.default_rng(5), PhotometricConfig(prob=1.0,
                                                                            grey_prob=1.0))
    assert np.abs(grey.astype(int) - grey[:1].astype(int)).max() <= 1


def test_tiny_sets_are_repeated_to_fill_a_validation_period():
    assert repeats_for(5, 8, 30, 0.0) == 48  # 240 samples = 30 steps of 8
    assert repeats_for(5, 8, 30, 1.0) == 24  # half of each epoch is replay
    assert repeats_for(1000, 8, 30, 0.0) == 1


def test_large_sets_are_seen_in_slices_each_record_once_per_cycle(openfield):
    kp = openfield.keypoints
    records = to_instances(openfield.items, kp)  # 116 animals
    data = FinetuneDataset(records, kp, (64, 64), labels_per_epoch=40, seed=3)
    assert len(data) == 40
    drawn = [data.record_index(e, i) for e in range(6) for i in range(40)]  # 240 = 2 cycles
    assert sorted(drawn[:116]) == list(range(116)) == sorted(drawn[116:232])
    assert drawn[:40] != list(range(40))  # shuffled, reproducibly
    assert drawn == [FinetuneDataset(records, kp, (64, 64), labels_per_epoch=40, seed=3)
                     .record_index(e, i) for e in range(6) for i in range(40)]
    from clamp_track.data.dataset import TopDownDataset

    sample = data[(1, 5)]  # that record's crop, with the epoch's augmentation draw
    expected = TopDownDataset(records, kp, (64, 64), seed=3)[(1, data.record_index(1, 5))]
    assert sample["index"] == 5
    np.testing.assert_array_equal(sample["image"], expected["image"])
    np.testing.assert_array_equal(sample["keypoints"], expected["keypoints"])
    whole = FinetuneDataset(records, kp, (64, 64), seed=3)
    assert len(whole) == 116 and whole.record_index(2, 7) == 7


def test_lopsided_labels_are_pointed_out(openfield):
    kp = openfield.keypoints

    def label(frame, origin, labelled=(1, 1, 1, 0)):
        kps = np.array([[10.0 + k, 20.0, 2.0 * v] for k, v in enumerate(labelled)])
        return Label(VideoFrame("v.mp4", frame), "v", f"img{frame}.png", kps, frame=frame,
                     origin=origin)

    items = [label(f, "a.sqlite") for f in range(12)] + [label(500, "b.sqlite", (1, 0, 0, 0))]
    text = imbalance_warnings(items, kp)
    assert text[0] == "no labels for tail base: fine-tuning cannot improve them"
    assert any("13 labelled frames come from 2 short stretch(es)" in t for t in text)
    assert any(t.startswith("92% of the labels come from a.sqlite") for t in text)
    varied = [label(f * 100, "a.sqlite", (1, 1, 1, 1)) for f in range(12)]
    assert imbalance_warnings(varied, kp) == []
    files = [replace(i, image="x.png") for i in items[:12]]  # label files: names, not frames
    assert not any("stretch" in t for t in imbalance_warnings(files, kp))
