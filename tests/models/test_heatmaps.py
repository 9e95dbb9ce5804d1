from __future__ import annotations

import torch

from clamp_track.models import decode_heatmaps, flip_back, generate_targets
from clamp_track.skeleton import AP10K


def test_targets_peak_where_the_keypoint_is_and_drop_outside():
    kp = torch.tensor([[[100.0, 60.0], [-40.0, 10.0], [3.0, 250.0]]])
    vis = torch.tensor([[1.0, 1.0, 0.0]])
    targets, weights = generate_targets(kp, vis, (256, 256), (64, 64))
    assert weights.tolist() == [[1.0, 0.0, 0.0]]  # far outside -> 0; unlabelled -> 0
    flat = targets[0, 0].flatten().argmax().item()
    assert (flat % 64, flat // 64) == (25, 15)
    assert targets[0, 0].max() == 1.0 and targets[0, 1:].abs().sum() == 0


def test_decode_maps_cells_back_to_the_image_with_center_and_scale():
    heatmaps = torch.zeros(1, 1, 64, 48)
    heatmaps[0, 0, 10, 20] = 1.0  # no neighbours above zero: no quarter shift
    center, scale = torch.tensor([[300.0, 200.0]]), torch.tensor([[1.2, 1.6]])
    kp, conf = decode_heatmaps(heatmaps, center, scale)
    # x = 20 * 240 / 48 + 300 - 120, y = 10 * 320 / 64 + 200 - 160
    assert kp.tolist() == [[[280.0, 90.0]]] and conf.tolist() == [[1.0]]


def test_flip_back_without_shift_is_an_involution():
    h = torch.randn(2, 17, 8, 6)
    assert torch.equal(flip_back(flip_back(h, AP10K.flip_pairs, shift=False), AP10K.flip_pairs,
                                 shift=False), h)


def test_flip_test_of_a_mirrored_prediction_agrees_with_the_plain_one():
    """A perfectly flip-equivariant model: the flip branch sees mirrored, side-swapped
    keypoints; after flip_back + shift the averaged heatmaps decode to the same places."""
    gen = torch.Generator().manual_seed(0)
    kp = torch.rand(4, 17, 2, generator=gen) * 200 + 28
    vis = torch.ones(4, 17)
    heat, _ = generate_targets(kp, vis, (256, 256), (64, 64))
    mirrored = kp.clone()
    mirrored[..., 0] = 255 - kp[..., 0]  # mmpose's horizontal flip of a 256-px crop
    mirrored = mirrored[:, AP10K.flip_permutation()]
    flip_heat, _ = generate_targets(mirrored, vis, (256, 256), (64, 64))
    center, scale = torch.full((4, 2), 128.0), torch.full((4, 2), 256 / 200)
    plain, _ = decode_heatmaps(heat, center, scale)
    averaged, conf = decode_heatmaps(heat, center, scale, flip_heat, AP10K.flip_pairs)
    assert (averaged - plain).abs().max() <= 4.0  # at most one heatmap cell apart
    assert (averaged - kp).abs().max() <= 4.0
    assert conf.min() > 0.5  # both branches agree: the peaks overlap
    # swapping the wrong channels (no flip pairs) puts left/right keypoints far apart
    wrong, _ = decode_heatmaps(heat, center, scale, flip_heat, flip_pairs=[])
    assert (wrong - kp).abs().max() > 20


def test_flip_average_equals_averaging_with_flip_back_bit_for_bit():
    from clamp_track.models.heatmaps import flip_average

    torch.manual_seed(0)
    h, f = torch.randn(3, 17, 64, 48), torch.randn(3, 17, 64, 48)
    expected = (h + flip_back(f, AP10K.flip_pairs)) * 0.5
    assert torch.equal(flip_average(h, f, AP10K.flip_pairs), expected)
    # non-contiguous inputs (a batch expanded from one map) give the same as contiguous ones
    one = torch.randn(1, 17, 64, 48)
    wide = flip_average(one.expand(4, -1, -1, -1), f[:1].expand(4, -1, -1, -1), AP10K.flip_pairs)
    assert torch.equal(wide[2], ((one + flip_back(f[:1], AP10K.flip_pairs)) * 0.5)[0])


def test_argmax_on_the_cpu_is_torch_max_with_ties_negatives_and_views():
    from clamp_track.models.heatmaps import get_max_preds

    torch.manual_seed(0)
    h = torch.randn(5, 17, 64, 48)
    h[0, 0] = 0.5  # all tied: the first cell wins
    h[1, 1, 3, 4] = h[1, 1, 7, 2] = 9.0  # a tie between two cells: the first in row order
    h[2, 2] = -torch.rand(64, 48) - 0.1  # all below zero: coordinates -1
    for maps in (h, h.expand(2, -1, -1, -1, -1)[1], h[:, :, :, :40], h.double()):
        coords, maxvals = get_max_preds(maps)
        flat = maps.reshape(*maps.shape[:2], -1)
        values, index = flat.max(dim=-1)
        w = maps.shape[-1]
        expected = torch.stack([index % w, index // w], dim=-1).float()
        expected[values <= 0] = -1.0
        assert torch.equal(maxvals, values) and torch.equal(coords, expected)
    assert get_max_preds(h)[0][1, 1].tolist() == [4.0, 3.0]
    assert get_max_preds(h)[0][2, 2].tolist() == [-1.0, -1.0]
    # a training batch that needs gradients is read without them
    grad = h.clone().requires_grad_(True)
    assert torch.equal(get_max_preds(grad)[0], get_max_preds(h)[0])
