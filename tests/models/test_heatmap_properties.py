"""Property-based checks of the heatmap round trip and the crop geometry (hypothesis)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clamp_track.data.transforms import affine_matrix, invert_affine, transform_points
from clamp_track.models import decode_heatmaps, generate_targets

coords = st.floats(min_value=8.0, max_value=247.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(x=coords, y=coords, cx=st.floats(50, 900), cy=st.floats(50, 600),
       s=st.floats(0.2, 4.0))
def test_targets_decode_back_to_the_keypoint(x, y, cx, cy, s):
    """A keypoint -> its Gaussian target -> decode lands within half a heatmap cell (the
    target's peak is the rounded cell; the quarter shift moves toward the true position)."""
    kp = torch.tensor([[[x, y]]])
    target, weight = generate_targets(kp, torch.ones(1, 1), (256, 256), (64, 64))
    assert weight.item() == 1.0
    center, scale = torch.tensor([[cx, cy]]), torch.tensor([[s, s]])
    decoded, conf = decode_heatmaps(target, center, scale)
    # crop pixel p maps to the image as p * (200 s / 256) + c - 100 s
    expected = kp[0, 0] * (200 * s / 256) + torch.tensor([cx, cy]) - 100 * s
    cell = 4 * 200 * s / 256
    assert torch.all((decoded[0, 0] - expected).abs() <= 0.5 * cell + 1e-3)
    assert conf.item() == 1.0


@settings(max_examples=60, deadline=None)
@given(cx=st.floats(-100, 1000), cy=st.floats(-100, 1000), sx=st.floats(0.05, 5),
       rot=st.floats(-180, 180), px=st.floats(-500, 1500), py=st.floats(-500, 1500))
def test_affine_maps_invert_and_the_centre_goes_to_the_middle(cx, cy, sx, rot, px, py):
    m = affine_matrix(np.array([[cx, cy]]), np.array([[sx, sx]]), (192, 256), rot)
    middle = transform_points(np.array([[[cx, cy]]]), m)
    np.testing.assert_allclose(middle, [[[96.0, 128.0]]], atol=1e-6)
    back = transform_points(transform_points(np.array([[[px, py]]]), m), invert_affine(m))
    np.testing.assert_allclose(back, [[[px, py]]], atol=1e-6 * (1 + abs(px) + abs(py)))
