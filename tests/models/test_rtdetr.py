"""The RT-DETRv2 building blocks: deformable sampling, anchors, position code, inference folding.

(The layouts, the checkpoint format and the detector around them are tested in
``tests/pipelines/test_megadetector.py``.)
"""

from __future__ import annotations

import copy

import pytest
import torch

from clamp_track.models import rtdetr


def _identity(linear: torch.nn.Linear) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.eye(linear.weight.shape[0]))
        linear.bias.zero_()


def test_deformable_attention_samples_at_the_box_centre_in_pixel_centre_convention():
    """Zero offsets, equal weights: the output is the mean over levels of the value maps read
    bilinearly at the box centre, where normalised ``u`` is pixel ``u * w - 0.5``
    (``grid_sample`` with ``align_corners=False``, as RT-DETRv2)."""
    dim, heads, shapes = 8, 2, [(6, 10), (3, 5)]
    attn = rtdetr.MSDeformableAttention(dim, heads, levels=2, points=4)
    for linear in (attn.value_proj, attn.output_proj):
        _identity(linear)
    with torch.no_grad():
        for linear in (attn.sampling_offsets, attn.attention_weights):
            linear.weight.zero_()
            linear.bias.zero_()
    maps = []
    for h, w in shapes:  # channel 0..3: x pixel index, 4..7: y pixel index
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                                torch.arange(w, dtype=torch.float32), indexing="ij")
        maps.append(torch.cat([xs.expand(4, h, w), ys.expand(4, h, w)]).flatten(1).T)
    value = torch.cat(maps)[None]  # (1, L, dim)
    cx, cy = 0.43, 0.61
    boxes = torch.tensor([[[cx, cy, 0.2, 0.3]]])
    out = attn(torch.randn(1, 1, dim), boxes, value, shapes)[0, 0]
    expected_x = sum(cx * w - 0.5 for _, w in shapes) / 2
    expected_y = sum(cy * h - 0.5 for h, _ in shapes) / 2
    torch.testing.assert_close(out[:4], torch.full((4,), expected_x))
    torch.testing.assert_close(out[4:], torch.full((4,), expected_y))
    # an offset of (1, 0) moves the points by half the box width over the number of points
    with torch.no_grad():
        attn.sampling_offsets.bias.copy_(torch.tensor([1.0, 0.0]).repeat(heads * 8))
    out = attn(torch.randn(1, 1, dim), boxes, value, shapes)[0, 0]
    shift = 1 * 0.25 * 0.2 * 0.5  # offset x num_points_scale x box width x 0.5
    expected_x = sum((cx + shift) * w - 0.5 for _, w in shapes) / 2
    torch.testing.assert_close(out[:4], torch.full((4,), expected_x))


def test_anchors_are_cell_centres_and_level_sizes_as_logits_with_edges_invalid():
    anchors, valid = rtdetr.make_anchors([(80, 80), (40, 40), (20, 20)])
    assert anchors.shape == (1, 8400, 4) and valid.shape == (1, 8400, 1)
    boxes = anchors.sigmoid()
    # the first cell of each level: centre half a cell in, size 0.05 x 2^level
    for start, cells, size in ((0, 80, 0.05), (6400, 40, 0.1), (8000, 20, 0.2)):
        centre = 0.5 / cells
        if centre > 0.01:
            torch.testing.assert_close(boxes[0, start], torch.tensor([centre, centre, size, size]))
    # at stride 8 the outermost ring (centre 1/160 < 0.01 from an edge) is invalid, +inf
    assert not valid[0, 0] and torch.isinf(anchors[0, 0]).all()
    assert valid[0, 81] and valid[0, 6400:].all()
    assert int((~valid[0, :6400, 0]).sum()) == 80 * 80 - 78 * 78


def test_the_position_code_is_sin_cos_of_the_token_coordinates():
    pos = rtdetr.sincos_position(4, 4, 16)
    assert pos.shape == (1, 16, 16)
    omega = 1.0 / 10000 ** (torch.arange(4) / 4)
    k = 6  # token 6 of a 4 x 4 map: first code 6 // 4 = 1, second 6 % 4 = 2
    expected = torch.cat([(1 * omega).sin(), (1 * omega).cos(), (2 * omega).sin(),
                          (2 * omega).cos()])
    torch.testing.assert_close(pos[0, k], expected)


@pytest.mark.parametrize("layout", ["r18vd"])
def test_folding_for_inference_keeps_the_feature_maps(layout):
    torch.manual_seed(0)
    model = rtdetr.build_rtdetr(layout)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    fused = rtdetr.fuse_for_inference(copy.deepcopy(model))
    x = torch.rand(1, 3, 128, 160)
    with torch.inference_mode():
        for a, b in zip(model.encoder(model.backbone(x)), fused.encoder(fused.backbone(x))):
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    blocks = [m for m in fused.modules() if isinstance(m, rtdetr.RepVggBlock)]
    assert len(blocks) == 12 and all(hasattr(b, "conv") and not hasattr(b, "conv1")
                                     for b in blocks)
    with pytest.raises(RuntimeError, match="fold the batch norms"):
        rtdetr.RepVggBlock(4).merge()
