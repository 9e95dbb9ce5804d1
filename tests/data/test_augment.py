from __future__ import annotations

import functools

import numpy as np
import pytest

from clamp_track.data.augment import (
    AugmentConfig,
    CropGeometry,
    half_body,
    mirror_matrix,
    random_geometry,
)
from clamp_track.data.dataset import TopDownDataset
from clamp_track.data.records import Instance
from clamp_track.data.transforms import affine_matrix, box_to_center_scale, transform_points
from clamp_track.skeleton import AP10K, from_names


def _colour(j: int) -> np.ndarray:
    return np.array([40 + 12 * j, 255 - 12 * j, (97 * j) % 256], np.uint8)


def _dotted_instance():
    """An image with a 9x9 square of a unique colour at each of the 17 AP-10K keypoints."""
    rng = np.random.default_rng(3)
    image = np.zeros((320, 420, 3), np.uint8)
    points = np.stack([rng.uniform(130, 290, 17), rng.uniform(90, 230, 17)], axis=1)
    # keep the squares apart so each keypoint's colour is unambiguous
    for j in range(17):
        while np.any(np.abs(points[:j] - points[j]).max(axis=1) < 12):
            points[j] = [rng.uniform(130, 290), rng.uniform(90, 230)]
    for j, (x, y) in enumerate(np.round(points).astype(int)):
        image[y - 4:y + 5, x - 4:x + 5] = _colour(j)
    keypoints = np.concatenate([points, np.full((17, 1), 2.0)], axis=1)
    source = functools.partial(np.copy, image)
    return Instance(source, [120, 80, 180, 160], keypoints, image_id=1, instance_id=1)


def test_crops_and_keypoints_stay_aligned_under_every_augmentation():
    """After any flip/rotation/scale/shift/half-body, the pixel under crop keypoint j has the
    colour of the keypoint that channel j now names (its flip twin when flipped)."""
    cfg = AugmentConfig(flip_prob=0.5, half_body_prob=0.5, rotation_prob=1.0, shift_prob=1.0)
    dataset = TopDownDataset([_dotted_instance()], AP10K, augment=cfg, seed=5)
    perm = AP10K.flip_permutation()
    colours = np.stack([_colour(j) for j in range(17)]).astype(int)
    flips, checked = set(), 0
    for epoch in range(12):
        sample = dataset[(epoch, 0)]
        flips.add(bool(sample["flipped"]))
        crop = sample["image"].transpose(1, 2, 0).astype(int)  # (H, W, 3) RGB
        for j, (x, y) in enumerate(sample["keypoints"]):
            xi, yi = int(round(x)), int(round(y))
            if not (2 <= xi < 254 and 2 <= yi < 254):
                continue
            source = perm[j] if sample["flipped"] else j
            nearest = int(np.argmin(np.abs(colours - crop[yi, xi]).sum(axis=1)))
            assert nearest == source, (epoch, j)
            checked += 1
    assert flips == {True, False} and checked > 100


def test_draws_depend_only_on_seed_epoch_and_index():
    dataset = TopDownDataset([_dotted_instance()] * 3, AP10K, augment=AugmentConfig(), seed=1)
    a, b = dataset[(4, 2)], dataset[(4, 2)]
    np.testing.assert_array_equal(a["image"], b["image"])
    c = dataset[(5, 2)]
    assert not np.array_equal(a["keypoints"], c["keypoints"])
    other = TopDownDataset([_dotted_instance()] * 3, AP10K, augment=AugmentConfig(), seed=2)
    assert not np.array_equal(a["keypoints"], other[(4, 2)]["keypoints"])


def test_without_augmentation_the_crop_is_the_padded_box():
    inst = _dotted_instance()
    sample = TopDownDataset([inst], AP10K)[0]
    center, scale = box_to_center_scale(inst.bbox[None])
    np.testing.assert_allclose(sample["center"], center[0])
    np.testing.assert_allclose(sample["scale"], [180 / 200 * 1.25] * 2)
    m = affine_matrix(center, scale, (256, 256))
    expected = transform_points(inst.keypoints[None, :, :2], m)[0]
    np.testing.assert_allclose(sample["keypoints"], expected, rtol=1e-5)
    assert sample["rotation"] == 0 and not sample["flipped"]


def test_random_geometry_ranges():
    inst = _dotted_instance()
    center, scale = box_to_center_scale(inst.bbox[None])
    cfg = AugmentConfig(half_body_prob=0.0)
    rng = np.random.default_rng(0)
    draws = [random_geometry(rng, center[0], scale[0], inst.bbox, inst.keypoints, AP10K, cfg, 1.0)
             for _ in range(2000)]
    rot = np.array([g.rotation for g in draws])
    ratio = np.array([g.scale[0] / scale[0, 0] for g in draws])
    shift = np.array([np.abs(g.center - center[0]) / inst.bbox[2:] for g in draws])
    assert np.abs(rot).max() <= 80 and 0.3 < (rot == 0).mean() < 0.5  # p(rotate) = 0.6
    assert ratio.min() >= 0.5 - 1e-9 and ratio.max() <= 1.5 + 1e-9
    assert shift.max() <= 0.2 + 1e-6 and 0.6 < (shift.sum(axis=1) == 0).mean() < 0.8
    assert 0.45 < np.mean([g.flip for g in draws]) < 0.55


def test_half_body_crops_the_chosen_half():
    points = np.array([[10.0 * i, 5.0 * i] for i in range(17)])
    labelled = np.ones(17, bool)
    upper = list(AP10K.upper_body)
    seen = set()
    for seed in range(20):
        center, scale = half_body(np.random.default_rng(seed), points, labelled, AP10K, 1.0)
        half = upper if np.allclose(center, points[upper].mean(0)) else list(AP10K.lower_body)
        np.testing.assert_allclose(center, points[half].mean(0))
        w, h = points[half].max(0) - points[half].min(0)
        np.testing.assert_allclose(scale, [max(w, h) / 200 * 1.5] * 2)
        seen.add(len(half))
    assert seen == {9, 8}
    assert half_body(np.random.default_rng(0), points, np.eye(17, dtype=bool)[0], AP10K,
                     1.0) is None


def test_sets_without_an_upper_body_never_get_half_body_crops():
    inst = _dotted_instance()
    custom = from_names([f"point{i}" for i in range(17)])
    center, scale = box_to_center_scale(inst.bbox[None])
    cfg = AugmentConfig(half_body_prob=1.0, scale=0.0, shift_prob=0.0, rotation_prob=0.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        geo = random_geometry(rng, center[0], scale[0], inst.bbox, inst.keypoints, custom, cfg,
                              1.0)
        np.testing.assert_allclose(geo.center, center[0])
        np.testing.assert_allclose(geo.scale, scale[0])


def test_mirror_matrix_is_the_pixel_mirror():
    m = affine_matrix(np.array([[50.0, 40.0]]), np.array([[0.5, 0.5]]), (64, 64))[0]
    pts = np.array([[[30.0, 20.0], [70.0, 55.0]]])
    plain = transform_points(pts, m[None])[0]
    mirrored = transform_points(pts, mirror_matrix(m, 64)[None])[0]
    np.testing.assert_allclose(mirrored[:, 0], 63 - plain[:, 0])
    np.testing.assert_allclose(mirrored[:, 1], plain[:, 1])


def test_config_validation():
    with pytest.raises(ValueError, match="flip_prob"):
        AugmentConfig(flip_prob=1.5)
    assert CropGeometry(np.zeros(2), np.ones(2)).rotation == 0.0


def _jitter(dataset, epoch, index):
    """The centre offset a sample got, in box fractions (flip/half-body/scale/rotation off)."""
    inst = dataset.records[index]
    center, _ = box_to_center_scale(inst.bbox[None])
    return (dataset[(epoch, index)]["center"] - center[0]) / inst.bbox[2:]


def test_centre_jitter_is_drawn_once_per_instance_as_the_official_dataset():
    cfg = AugmentConfig(flip_prob=0.0, half_body_prob=0.0, scale=0.0, rotation_prob=0.0)
    dataset = TopDownDataset([_dotted_instance()] * 60, AP10K, augment=cfg, seed=3)
    first = np.stack([_jitter(dataset, 0, i) for i in range(60)])
    for epoch in (1, 7):
        np.testing.assert_allclose(np.stack([_jitter(dataset, epoch, i) for i in range(60)]),
                                   first, atol=1e-5)
    shifted = np.abs(first).sum(axis=1) > 1e-6
    assert 5 <= shifted.sum() <= 35 and np.abs(first).max() <= 0.2 + 1e-5  # p 0.3, +-0.2
    # the other draws still change per epoch, on their own stream
    full = TopDownDataset([_dotted_instance()], AP10K, augment=AugmentConfig(), seed=3)
    assert not np.array_equal(full[(0, 0)]["keypoints"], full[(1, 0)]["keypoints"])
    # shift_redraw: a new draw every epoch
    redraw = TopDownDataset([_dotted_instance()] * 60, AP10K,
                            augment=AugmentConfig(**{**cfg.__dict__, "shift_redraw": True}),
                            seed=3)
    again = np.stack([_jitter(redraw, 1, i) for i in range(60)])
    assert not np.allclose(again, np.stack([_jitter(redraw, 0, i) for i in range(60)]))


def test_half_body_on_flipped_samples_uses_the_flipped_channels_upper_list():
    # AP-10K's upper list has the left front paw (7) but not the right one (10); the official
    # pipeline flips first, so on a flipped sample the image's right front paw is upper
    points = np.array([[10.0 * i, 5.0 * i] for i in range(17)])
    labelled = np.ones(17, bool)
    perm = AP10K.flip_permutation()
    flipped_upper = sorted(perm[c] for c in AP10K.upper_body)
    assert 10 in flipped_upper and 7 not in flipped_upper
    seen = set()
    for seed in range(20):
        center, _ = half_body(np.random.default_rng(seed), points, labelled, AP10K, 1.0,
                              flipped=True)
        if np.allclose(center, points[flipped_upper].mean(0)):
            seen.add("upper")
        else:
            lower = [j for j in range(17) if j not in flipped_upper]
            np.testing.assert_allclose(center, points[lower].mean(0))
            seen.add("lower")
    assert seen == {"upper", "lower"}
