"""Our CLAMP reproduces the official code's tensors (``../shared/golden``) to 1e-4.

Each tiny variant is loaded from its official-format checkpoint through our converter; the
reference numbers come from the official code run on the same checkpoint (see the golden
README), ``feature_loss`` included (``feature_loss="official"``, the presets' mode).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from clamp_track.models import create_model, decode_heatmaps, flip_back, generate_targets
from clamp_track.models.clip_weights import read_clip_state_dict
from clamp_track.models.losses import DOWN_TARGET_SIGMA, official_feature_loss
from clamp_track.skeleton import AP10K

VARIANTS = [("rn50", "clamp_tiny_rn50"), ("vit", "clamp_tiny_vitb16")]
TOL = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(scope="module", params=VARIANTS, ids=[v for v, _ in VARIANTS])
def case(request, golden_dir):
    prefix, name = request.param
    golden = torch.load(golden_dir / f"{prefix}_tiny_golden.pt", weights_only=True)
    model = create_model(name, weights=golden_dir / f"{prefix}_tiny_ref_checkpoint.pth")
    return prefix, name, golden, model


def test_tokens_and_text_side(case):
    _, _, g, model = case
    assert torch.equal(model.token_ids, g["text/token_ids"])
    with torch.no_grad():
        t, t_prompt = model.encode_text()
    assert_close(t[None], g["eval/text_encoder_out"], **TOL)
    assert_close(t_prompt[None].expand_as(g["eval/prompt_encoder_out"]),
                 g["eval/prompt_encoder_out"], **TOL)


def test_backbone_outputs(case):
    _, _, g, model = case
    with torch.no_grad():
        out = model.backbone(g["input/img"])
    for i in range(4):
        assert_close(out.features[i], g[f"eval/backbone_out{i}"], **TOL)
    assert_close(out.global_embedding, g["eval/global_embedding"], **TOL)
    assert_close(out.dense, g["eval/F"], **TOL)


def test_eval_forward(case):
    _, _, g, model = case
    with torch.no_grad():
        out = model(g["input/img"])
        flipped = model(g["input/img"].flip(3))
        spatial = model.upconv_head(out["score_map"])
    assert_close(out["dense_features"], g["eval/F"], **TOL)
    assert_close(out["prompt_embeddings"], g["eval/P"], **TOL)
    assert_close(out["score_map"], g["eval/S"], **TOL)
    assert_close(out["heatmaps"], g["eval/heatmap"], **TOL)
    assert_close(spatial, g["eval/upconv_S"], **TOL)
    assert_close(flipped["heatmaps"], g["eval/flipimg_heatmap_raw"], **TOL)
    assert_close(flipped["score_map"], g["eval/flipimg_S"], **TOL)
    assert_close(model.gamma.detach(), g["eval/gamma"], **TOL)
    assert_close(model.logit_scale.detach(), g["eval/logit_scale"], **TOL)


def test_decode_with_and_without_flip(case):
    _, _, g, model = case
    center, scale = g["input/center"], g["input/scale"]
    with torch.no_grad():
        heatmaps = model(g["input/img"])["heatmaps"]
        flipped = model(g["input/img"].flip(3))["heatmaps"]
    kp, conf = decode_heatmaps(heatmaps, center, scale)
    assert_close(kp, g["decode/noflip/preds"], **TOL)
    assert_close(conf, g["decode/noflip/maxvals"][..., 0], **TOL)
    assert_close(flip_back(flipped, AP10K.flip_pairs), g["decode/flip/flipped_branch_heatmap"],
                 **TOL)
    kp, conf = decode_heatmaps(heatmaps, center, scale, flipped, AP10K.flip_pairs)
    assert_close(kp, g["decode/flip/preds"], **TOL)
    assert_close(conf, g["decode/flip/maxvals"][..., 0], **TOL)


def test_runtime_positional_embedding_resize(case):
    _, _, g, model = case
    with torch.no_grad():
        out = model(g["input/img"][:, :, 32:224, :])  # 192 x 256
    for key, ours in [("global_embedding", "global_embedding"), ("F", "dense_features"),
                      ("P", "prompt_embeddings"), ("S", "score_map"), ("heatmap", "heatmaps")]:
        assert_close(out[ours], g[f"eval_h192w256/{key}"], **TOL)


def test_decode_only_synthetic(golden_dir):
    for prefix, _ in VARIANTS:
        g = torch.load(golden_dir / f"{prefix}_tiny_golden.pt", weights_only=True)
        center, scale = g["input/center"], g["input/scale"]
        heatmaps = g["decode_synth/heatmap"]
        kp, conf = decode_heatmaps(heatmaps, center, scale)
        assert_close(kp, g["decode_synth/noflip/preds"], **TOL)  # includes the maxval<=0 branch
        assert_close(conf, g["decode_synth/noflip/maxvals"][..., 0], **TOL)
        flipped = g["decode_synth/flipimg_heatmap_raw"]
        assert_close(flip_back(flipped, AP10K.flip_pairs), g["decode_synth/flipped_branch_heatmap"])
        kp, conf = decode_heatmaps(heatmaps, center, scale, flipped, AP10K.flip_pairs)
        assert_close(kp, g["decode_synth/flip/preds"], **TOL)
        assert_close(conf, g["decode_synth/flip/maxvals"][..., 0], **TOL)


def test_targets_are_exact(golden_dir):
    for prefix, _ in VARIANTS:
        g = torch.load(golden_dir / f"{prefix}_tiny_golden.pt", weights_only=True)
        joints, vis = g["input/joints_3d"][..., :2], g["input/joints_3d_visible"][..., 0]
        targets, weights = generate_targets(joints, vis, (256, 256), (64, 64), sigma=2)
        assert torch.equal(targets, g["target/heatmap"])
        assert torch.equal(weights, g["target/heatmap_weight"][..., 0])


def _train_copy(model):
    import copy

    model = copy.deepcopy(model).train()
    for m in model.modules():  # the goldens were computed with dropout and drop path off
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    if hasattr(model.backbone, "drop_path_rates"):
        model.backbone.drop_path_rates = [0.0] * len(model.backbone.drop_path_rates)
    return model


def test_train_losses_and_batchnorm(case):
    _, _, g, model = case
    model = _train_copy(model)
    out = model(g["input/img"])
    weights = g["target/heatmap_weight"][..., 0]
    losses = model.loss(out, g["target/heatmap"], weights, g["input/joints_3d"][..., :2],
                        g["input/joints_3d_visible"][..., 0])
    assert_close(out["heatmaps"], g["train/heatmap"], **TOL)
    assert_close(out["spatial_heatmaps"], g["train/upconv_S"], **TOL)
    assert_close(losses["pose"], g["train/loss/mse_loss"], **TOL)
    assert_close(losses["spatial"], g["train/loss/spatial_loss"], **TOL)
    assert model.config.feature_loss == "official"
    assert_close(losses["feature"], g["train/loss/feature_loss"], atol=1e-8, rtol=1e-4)
    assert_close(losses["total"], g["train/loss/total"], atol=1e-7, rtol=1e-4)
    assert model.config.spatial_weight == pytest.approx(g["train/loss_weight/spatial_loss"].item())
    assert model.config.feature_weight == pytest.approx(g["train/loss_weight/feature_loss"].item())
    losses["total"].backward()
    # only L_pose reaches the keypoint head's last layer, so its gradient must match exactly
    assert_close(model.keypoint_head.final_layer.weight.grad,
                 g["train/grad/keypoint_head.final_layer.weight"], atol=1e-7, rtol=1e-4)
    # the gradient of the whole total, L_feature included (logit_scale gets it from L_feature
    # alone; contexts and gamma from all three terms)
    for name in ("contexts", "gamma", "logit_scale"):
        ref = g[f"train/grad/{name}"]
        assert_close(getattr(model, name).grad, ref, atol=1e-4 * float(ref.abs().max()),
                     rtol=1e-4)
    modules = dict(model.named_modules())
    for key in [k for k in g if k.startswith("train/bn_after/")]:
        name, stat = key[len("train/bn_after/"):].rsplit(".", 1)
        assert_close(getattr(modules[name], stat), g[key], **TOL)


def test_clip_loading_path(golden_dir):
    """Building from the fake OpenAI-layout CLIP files gives the golden ``clipload`` tensors."""
    for prefix, name in VARIANTS:
        g = torch.load(golden_dir / f"{prefix}_tiny_golden.pt", weights_only=True)
        clip_file = golden_dir / f"{prefix}_tiny_fake_clip.pt"
        state = create_model(name, clip_weights=clip_file).state_dict()
        text = state["text_encoder.token_embedding.weight"][[0, 49406, 49407]]
        assert_close(text, g["clipload/text_token_embedding_row0_49406_49407"], atol=0, rtol=0)
        assert_close(state["text_encoder.positional_embedding"],
                     g["clipload/text_positional_embedding"], atol=0, rtol=0)
        pos_key = ("clipload/attnpool_positional_embedding" if prefix == "rn50"
                   else "clipload/vit_positional_embedding")
        ours = ("backbone.attnpool.positional_embedding" if prefix == "rn50"
                else "backbone.positional_embedding")
        assert_close(state[ours], g[pos_key], atol=1e-6, rtol=1e-6)
        # every other CLIP tensor is copied unchanged
        clip = read_clip_state_dict(clip_file)
        for key, value in clip.items():
            target = ("backbone." + key[7:]) if key.startswith("visual.") else "text_encoder." + key
            if target in state and "positional_embedding" not in key:
                assert torch.equal(state[target], value), key


def test_official_down_targets_are_exact(golden_dir):
    """The official ``downtarget`` (F grid, sigma 2/4) that L_feature reads, with its border
    quirks (cell mu + 1 for mu 0/1, weight 1 with no cell past the border, kp at y = 300)."""
    for prefix, _ in VARIANTS:
        g = torch.load(golden_dir / f"{prefix}_tiny_golden.pt", weights_only=True)
        joints, vis = g["input/joints_3d"][..., :2], g["input/joints_3d_visible"][..., 0]
        grid = tuple(g["target/down"].shape[-2:])
        down, weight = generate_targets(joints, vis, (256, 256), grid, DOWN_TARGET_SIGMA)
        assert torch.equal(down, g["target/down"])
        assert torch.equal(weight, g["target/down_weight"][..., 0])
        assert torch.equal((down == 1).long(), g["train/feature/down_mask"])


def test_official_feature_loss_terms(case):
    """Sampled vectors, logits, both cross-entropies and the loss from the golden F and P, so
    that every quirk (zero vectors, weight 1 off the heatmap, mean over all keypoints) is
    checked on its own."""
    _, _, g, _ = case
    dense = g["train/F"]
    prompts = g["train/prompt_encoder_out"] + g["eval/gamma"] * g["train/context_decoder_out"]
    joints, vis = g["input/joints_3d"][..., :2], g["input/joints_3d_visible"][..., 0]
    mask = g["train/feature/down_mask"].float()
    visual = torch.einsum("bkhw,bdhw->bkd", mask, dense)
    assert_close(visual, g["train/feature/visual_sampled"], **TOL)
    assert (visual.abs().sum(-1) == 0).sum() >= 2  # invisible and off-grid keypoints

    logit_scale = g["eval/logit_scale"]
    loss = official_feature_loss(dense, prompts, joints, vis, (256, 256), logit_scale)
    ref = g["train/loss/feature_loss"] / g["train/loss_weight/feature_loss"]
    assert_close(loss, ref, atol=1e-6, rtol=1e-4)
    # the intermediate terms, with the same expressions the loss uses
    visual = torch.nn.functional.normalize(g["train/feature/visual_sampled"], dim=-1)
    text = torch.nn.functional.normalize(prompts, dim=-1)
    logits = logit_scale.exp() * visual @ text.transpose(1, 2)
    assert_close(logits, g["train/logits_per_image"], **TOL)
    labels = torch.arange(logits.shape[1]).expand(logits.shape[0], -1)
    ce = torch.nn.functional.cross_entropy
    assert_close(ce(logits, labels, reduction="none"), g["train/ce_visual_unweighted"], **TOL)
    assert_close(ce(logits.transpose(1, 2), labels, reduction="none"),
                 g["train/ce_text_unweighted"], **TOL)
