from __future__ import annotations

import math

import pytest
import torch

from clamp_track.models import create_model
from clamp_track.models.heatmaps import generate_targets
from clamp_track.models.losses import (
    DOWN_TARGET_SIGMA,
    crop_valid,
    feature_contrastive_loss,
    joints_mse_loss,
    official_feature_loss,
)


def _hand_infonce(v, t, scale):
    """Symmetric InfoNCE written out with plain Python floats."""
    def norm(x):
        n = math.sqrt(sum(a * a for a in x))
        return [a / n for a in x]

    v, t = [norm(x) for x in v], [norm(x) for x in t]
    k = len(v)
    logits = [[scale * sum(a * b for a, b in zip(v[i], t[j])) for j in range(k)] for i in range(k)]
    img = [-(logits[i][i] - math.log(sum(math.exp(x) for x in logits[i]))) for i in range(k)]
    txt = [-(logits[j][j] - math.log(sum(math.exp(logits[i][j]) for i in range(k))))
           for j in range(k)]
    return (sum(img) / k + sum(txt) / k) / 2


def test_feature_loss_matches_hand_computation_with_bilinear_sampling():
    # F on a 2x2 grid for a 64x64 crop: cell centres are at pixels 15.5 and 47.5.
    dense = torch.tensor([[[1.0, 0.0], [2.0, -1.0]],
                          [[0.0, 1.0], [1.0, 3.0]]])[None]  # (1, D=2, 2, 2)
    kp = torch.tensor([[[15.5, 15.5],    # exactly cell (0, 0): (1, 0)
                        [47.5, 47.5],    # exactly cell (1, 1): (-1, 3)
                        [31.5, 15.5],    # half-way between (0,0) and (0,1): (0.5, 0.5)
                        [47.5, 15.5]]])  # cell (0, 1) but invisible
    prompts = torch.tensor([[[1.0, 0.2], [-0.5, 1.0], [0.3, 0.3], [5.0, -5.0]]])
    valid = torch.tensor([[True, True, True, False]])
    logit_scale = torch.tensor(math.log(1 / 0.07))
    loss = feature_contrastive_loss(dense, prompts, kp, valid, (64, 64), logit_scale)
    expected = _hand_infonce([[1, 0], [-1, 3], [0.5, 0.5]],
                             [[1, 0.2], [-0.5, 1], [0.3, 0.3]], 1 / 0.07)
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    # the invisible keypoint is neither anchor nor negative: moving it changes nothing
    kp2, prompts2 = kp.clone(), prompts.clone()
    kp2[0, 3] = torch.tensor([20.0, 40.0])
    prompts2[0, 3] = torch.tensor([-3.0, 0.1])
    loss2 = feature_contrastive_loss(dense, prompts2, kp2, valid, (64, 64), logit_scale)
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6)


def test_feature_loss_without_valid_keypoints_is_zero_and_differentiable():
    dense = torch.randn(2, 4, 3, 3, requires_grad=True)
    prompts = torch.randn(2, 5, 4)
    kp = torch.rand(2, 5, 2) * 90
    loss = feature_contrastive_loss(dense, prompts, kp, torch.zeros(2, 5, dtype=torch.bool),
                                    (96, 96), torch.tensor(2.0))
    assert loss.item() == 0.0
    loss.backward()
    assert dense.grad is not None


def test_crop_valid_excludes_outside_and_unlabelled():
    kp = torch.tensor([[[10.0, 10.0], [-3.0, 5.0], [100.0, 300.0], [255.0, 255.0]]])
    w = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert crop_valid(kp, w, (256, 256)).tolist() == [[True, False, False, False]]


def test_joints_mse_weights_each_keypoint():
    pred, target = torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    pred[0, 0] = 1.0
    pred[0, 1] = 2.0
    assert joints_mse_loss(pred, target, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.5)
    assert joints_mse_loss(pred, target, torch.tensor([[1.0, 1.0]])).item() == pytest.approx(2.5)


def test_total_loss_weights_and_ablations():
    model = create_model("clamp_tiny_rn50").train()
    images = torch.randn(2, 3, 256, 256)
    kp = torch.rand(2, 17, 2) * 255
    targets, weights = torch.rand(2, 17, 64, 64), torch.ones(2, 17)
    out = model(images)
    losses = model.loss(out, targets, weights, kp)
    assert set(losses) == {"pose", "spatial", "feature", "total"}
    total = losses["pose"] + losses["spatial"] + losses["feature"]
    assert losses["total"].item() == pytest.approx(total.item())
    unweighted = joints_mse_loss(out["spatial_heatmaps"], targets, weights)
    assert losses["spatial"].item() == pytest.approx(0.4 * unweighted.item(), rel=1e-6)


def _official_cells(kp, vis, grid):
    """(col, row) of the down-target cell equal to 1 (-1 where none) and the weights."""
    down, weight = generate_targets(kp, vis, (256, 256), grid, DOWN_TARGET_SIGMA)
    hit = (down == 1).flatten(2)
    assert (hit.sum(-1) <= 1).all()
    cell = torch.where(hit.any(-1), hit.float().argmax(-1), -1)
    col = torch.where(cell >= 0, cell % grid[1], -1)
    row = torch.where(cell >= 0, cell // grid[1], -1)
    return col, row, weight


def test_official_cells_border_quirks():
    # 256 px crop, 8x8 grid (stride 32): cell int(x/32 + 0.5), shifted +1 for mu in {0, 1}
    kp = torch.tensor([[[100.0, 100.0],   # mu 3 -> cell 3 (the keypoint lies in cell 3: 96..128)
                        [80.0, 150.0],    # mu (3, 5) -> cell (3, 5); it lies in cell (2, 4)
                        [1.2, 3.0],       # mu 0 -> cell 1
                        [30.0, 46.0],     # mu 1 -> cell 2
                        [254.6, 20.0],    # mu 8 == W: weight 1, no cell
                        [-20.0, 20.0],    # x: mu int(-0.125) = 0 -> cell 1
                        [50.0, 300.0],    # mu 9: weight 1, no cell
                        [50.0, 400.0],    # mu 13: patch off the grid, weight 0
                        [50.0, 50.0]]])   # invisible
    vis = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 0]])
    col, row, weight = _official_cells(kp, vis, (8, 8))
    assert col.tolist() == [[3, 3, 1, 2, -1, 1, -1, -1, -1]]
    assert row.tolist() == [[3, 5, 1, 2, -1, 2, -1, -1, -1]]  # y 20: mu 1 -> 2
    assert weight.tolist() == [[1, 1, 1, 1, 1, 1, 1, 0, 0]]


def test_official_feature_loss_matches_hand_computation():
    # 64x64 crop, 2x2 grid (stride 32)
    dense = torch.tensor([[[1.0, 0.0], [2.0, -1.0]],
                          [[0.0, 1.0], [1.0, 3.0]]])[None]  # (1, D=2, 2, 2)
    kp = torch.tensor([[[10.0, 10.0],    # mu 0 -> cell 1: (-1, 3)
                        [40.0, 10.0],    # mu (1, 0) -> cell (col 2 off-grid): zero vector
                        [20.0, 20.0]]])  # invisible: zero vector, weight 0
    vis = torch.tensor([[1, 1, 0]])
    prompts = torch.tensor([[[1.0, 0.2], [-0.5, 1.0], [0.3, 0.3]]])
    scale = 1 / 0.07
    loss = official_feature_loss(dense, prompts, kp, vis, (64, 64), torch.tensor(math.log(scale)))

    def norm(x):
        n = math.sqrt(sum(a * a for a in x))
        return [a / n for a in x] if n else x

    v = [norm([-1.0, 3.0]), [0.0, 0.0], [0.0, 0.0]]
    t = [norm(x) for x in prompts[0].tolist()]
    logits = [[scale * sum(a * b for a, b in zip(v[i], t[j])) for j in range(3)] for i in range(3)]
    # text j classifies among visual i (softmax over the column) and visual j among texts
    ce_v = [-(logits[j][j] - math.log(sum(math.exp(logits[i][j]) for i in range(3))))
            for j in range(3)]
    ce_t = [-(logits[j][j] - math.log(sum(math.exp(logits[j][i]) for i in range(3))))
            for j in range(3)]
    w = [1, 1, 0]
    expected = (sum(c * x for c, x in zip(ce_v, w)) / 3
                + sum(c * x for c, x in zip(ce_t, w)) / 3) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_feature_loss_mode_is_official_by_default_and_bilinear_on_request():
    from dataclasses import replace

    model = create_model("clamp_tiny_rn50").train()
    assert model.config.feature_loss == "official"
    torch.manual_seed(0)
    out = model(torch.randn(2, 3, 256, 256))
    kp = torch.rand(2, 17, 2) * 255
    vis = torch.ones(2, 17)
    vis[0, :5] = 0
    targets, weights = torch.rand(2, 17, 64, 64), vis.clone()
    official = model.loss(out, targets, weights, kp, vis)["feature"]
    expected = official_feature_loss(out["dense_features"], out["prompt_embeddings"], kp, vis,
                                     (256, 256), model.logit_scale)
    assert official.item() == pytest.approx(0.0005 * expected.item(), rel=1e-6)
    model.config = replace(model.config, feature_loss="bilinear")
    bilinear = model.loss(out, targets, weights, kp, vis)["feature"]
    valid = crop_valid(kp, weights, (256, 256))
    expected = feature_contrastive_loss(out["dense_features"], out["prompt_embeddings"], kp,
                                        valid, (256, 256), model.logit_scale)
    assert bilinear.item() == pytest.approx(0.0005 * expected.item(), rel=1e-6)
    assert bilinear.item() != pytest.approx(official.item(), rel=1e-3)
    with pytest.raises(ValueError, match="feature_loss"):
        replace(model.config, feature_loss="nearest")
