from __future__ import annotations

import cv2
import numpy as np
import pytest

from clamp_track.data.transforms import (
    affine_matrix,
    box_to_center_scale,
    invert_affine,
    transform_points,
    warp_crop,
)


def _three_point_reference(center, scale, rot, size):
    """mmpose's construction: map the crop centre, a point half a width 'up' (rotated) and a
    third point at a right angle onto the output, with cv2.getAffineTransform."""
    src_w = scale[0] * 200.0
    r = np.deg2rad(rot)
    v = np.array([0.0, -0.5 * src_w])
    src_dir = np.array([v[0] * np.cos(r) - v[1] * np.sin(r), v[0] * np.sin(r) + v[1] * np.cos(r)])
    dst_dir = np.array([0.0, -0.5 * size[0]])
    src = np.array([center, center + src_dir, np.zeros(2)], np.float32)
    dst = np.array([[size[0] * 0.5, size[1] * 0.5], [size[0] * 0.5, size[1] * 0.5] + dst_dir,
                    np.zeros(2)], np.float32)
    for pts in (src, dst):
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-d[1], d[0]])
    return cv2.getAffineTransform(src, dst)


@pytest.mark.parametrize("rot", [0.0, 30.0, -75.0])
@pytest.mark.parametrize("size", [(256, 256), (192, 256)])
def test_matches_mmpose_three_point_construction(rot, size):
    center, scale = np.array([310.0, 140.0]), np.array([1.7, 2.2])
    ours = affine_matrix(center[None], scale[None], size, rot)[0]
    np.testing.assert_allclose(ours, _three_point_reference(center, scale, rot, size), atol=1e-3)


def test_box_to_center_scale_pads_to_the_aspect_ratio():
    center, scale = box_to_center_scale([[10, 20, 100, 50]], aspect_ratio=1.0)
    np.testing.assert_allclose(center, [[60, 45]])
    np.testing.assert_allclose(scale, [[100 / 200 * 1.25] * 2])
    _, scale = box_to_center_scale([[0, 0, 30, 90]], aspect_ratio=0.75)
    np.testing.assert_allclose(scale, [[67.5 / 200 * 1.25, 90 / 200 * 1.25]])


def test_points_and_pixels_follow_the_same_matrix():
    image = np.zeros((120, 160, 3), np.uint8)
    image[40:44, 100:104] = 255  # a bright 4x4 square with centre (101.5, 41.5)
    m = affine_matrix(np.array([[100.0, 50.0]]), np.array([[0.4, 0.4]]), (64, 64), 20.0)
    crop = warp_crop(image, m[0], (64, 64))
    ys, xs = np.nonzero(crop[..., 0] > 60)
    (x, y), = transform_points(np.array([[[101.5, 41.5]]]), m)[0]
    assert abs(xs.mean() - x) < 1.0 and abs(ys.mean() - y) < 1.0
    back = transform_points(transform_points(np.array([[[5.0, 7.0]]]), m), invert_affine(m))
    np.testing.assert_allclose(back, [[[5.0, 7.0]]], atol=1e-9)


def test_box_iou_pairs_broadcasts_and_gives_zero_without_area():
    from clamp_track.data.transforms import box_iou

    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 9]], np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [5, 5, 5, 9]], np.float32)
    assert np.allclose(box_iou(a, b), [50 / 150, 0.0, 0.0])  # paired; no area -> 0
    every = box_iou(a[:, None], b)
    assert every.shape == (3, 3) and np.allclose(every[0], [50 / 150, 0.0, 0.0])
    assert every[0, 0] == every[1, 0] and box_iou(a[0], a[0]) == 1.0  # (4,) with (4,): 0-d
    assert box_iou(a[0], a[0]).shape == ()
