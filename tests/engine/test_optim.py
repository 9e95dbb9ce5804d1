from __future__ import annotations

import pytest
import torch

from clamp_track.engine.optim import (
    OptimConfig,
    WarmupStepSchedule,
    build_optimizer,
    lr_factor,
    parameter_groups,
)
from clamp_track.models import build_model, create_model, get_config
from clamp_track.skeleton import AP10K


def _groups(model, cfg):
    names = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: (g, {names[id(p)] for p in g["params"]})
            for g in parameter_groups(model, cfg)}


def test_official_groups_vit():
    model = create_model("clamp_tiny_vitb16")
    cfg = OptimConfig(lr=5e-4, backbone_lr_mult=0.1, bias_decay=True)  # the ViT-B config
    groups = _groups(model, cfg)
    assert set(groups) == {"backbone", "heads", "heads_no_decay"}
    backbone, names = groups["backbone"]
    assert backbone["lr"] == pytest.approx(5e-5) and backbone["weight_decay"] == 1e-4
    assert all(n.startswith("backbone.") for n in names)
    # official: only names containing "norm" outside backbone/text encoder skip decay
    no_decay = groups["heads_no_decay"][1]
    assert no_decay and all("norm" in n for n in no_decay)
    assert "context_decoder.memory_proj.0.weight" in groups["heads"][1]  # a LayerNorm, decayed
    assert {"contexts", "gamma", "logit_scale"} <= groups["heads"][1]
    # the frozen text encoder is in no group; every trainable parameter is in one
    grouped = set().union(*(n for _, n in groups.values()))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert grouped == trainable and not any(n.startswith("text_encoder.") for n in grouped)


def test_official_groups_rn50_turn_bias_decay_off():
    """The RN50 config's ``bias`` custom key: every bias skips decay (93 tensors more than
    the ``norm`` rule alone in the full CLAMP RN50), and nothing else changes."""
    with torch.device("meta"):
        model = build_model(get_config("clamp_rn50"), AP10K)
    rn50 = _groups(model, OptimConfig())  # the default is the RN50 config
    vit_rule = _groups(model, OptimConfig(bias_decay=True))
    moved = vit_rule["backbone"][1] - rn50["backbone"][1] | vit_rule["heads"][1] - rn50["heads"][1]
    assert len(moved) == 93 and all("bias" in n for n in moved)
    assert "prompt_encoder.transformer.resblocks.0.attn.in_proj_bias" in moved
    assert "backbone.attnpool.q_proj.bias" in moved and "keypoint_head.final_layer.bias" in moved
    decayed = rn50["backbone"][1] | rn50["heads"][1]
    assert not any("bias" in n for n in decayed)
    assert {"backbone.conv1.weight", "contexts", "gamma", "logit_scale"} <= decayed
    assert rn50["backbone"][0]["lr"] == rn50["heads"][0]["lr"] == 5e-4
    assert rn50["heads_no_decay"][0]["weight_decay"] == 0.0
    no_decay = rn50["backbone_no_decay"][1] | rn50["heads_no_decay"][1]
    assert no_decay == vit_rule["heads_no_decay"][1] | moved  # the norm rule's 18 + 93 biases


def test_norm_bias_rule_skips_decay_on_vectors_and_embeddings():
    model = create_model("clamp_tiny_rn50")
    groups = _groups(model, OptimConfig(no_decay="norm_bias"))
    decayed = groups["backbone"][1] | groups["heads"][1]
    params = dict(model.named_parameters())
    assert all(params[n].ndim >= 2 for n in decayed)
    skipped = groups["backbone_no_decay"][1] | groups["heads_no_decay"][1]
    assert {"contexts", "gamma", "logit_scale", "backbone.attnpool.positional_embedding"} <= skipped
    assert "keypoint_head.final_layer.bias" in skipped


def test_schedule_warmup_and_steps():
    cfg = OptimConfig(lr=1.0, warmup_iters=10, warmup_ratio=0.001, milestones=(2, 4), gamma=0.1)
    assert lr_factor(0, 0, cfg) == pytest.approx(0.001)
    assert lr_factor(0, 5, cfg) == pytest.approx(1 - 0.5 * 0.999)
    assert lr_factor(1, 10, cfg) == 1.0
    assert lr_factor(2, 30, cfg) == pytest.approx(0.1)
    assert lr_factor(4, 50, cfg) == pytest.approx(0.01)
    assert lr_factor(2, 3, cfg) == pytest.approx(0.1 * (1 - 0.7 * 0.999))  # warm-up x step
    model = create_model("simplebaseline_tiny_rn50")
    opt = build_optimizer(model, OptimConfig(lr=2e-3, backbone_lr_mult=0.5, warmup_iters=0,
                                             milestones=(1,)))
    sched = WarmupStepSchedule(opt, OptimConfig(lr=2e-3, backbone_lr_mult=0.5, warmup_iters=0,
                                                milestones=(1,)))
    assert sched.set(1, 7) == pytest.approx(2e-4)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["backbone"] == pytest.approx(1e-4) and lrs["heads"] == pytest.approx(2e-4)
    other = WarmupStepSchedule(opt, sched.cfg)
    other.load_state_dict(sched.state_dict())
    assert other.state_dict() == {"epoch": 1, "step": 7}


def test_config_validation():
    with pytest.raises(ValueError, match="milestones"):
        OptimConfig(milestones=(200, 170))
    with pytest.raises(ValueError, match="lr"):
        OptimConfig(lr=0)
    assert isinstance(build_optimizer(create_model("simplebaseline_tiny_rn50"), OptimConfig()),
                      torch.optim.AdamW)
