from __future__ import annotations

import pytest
import torch

from clamp_track.models import Clamp, SimpleBaseline, create_model
from clamp_track.skeleton import ANIMALPOSE, from_names


@pytest.mark.parametrize("name", ["clamp_tiny_rn50", "clamp_tiny_vitb16"])
def test_forward_shapes_and_keys(name):
    model = create_model(name)
    with torch.no_grad():
        out = model(torch.randn(3, 3, 256, 256))
    k, d = 17, model.config.backbone.output_dim
    grid = 256 // model.config.backbone.stride
    assert out["heatmaps"].shape == (3, k, 64, 64)
    assert out["score_map"].shape == (3, k, grid, grid)
    assert out["prompt_embeddings"].shape == (3, k, d)
    assert out["dense_features"].shape == (3, d, grid, grid)
    assert "spatial_heatmaps" not in out  # inference skips the training-only head
    s = out["score_map"]
    assert s.abs().max() <= 1.0 + 1e-5  # plain cosine similarity


def test_text_side_is_cached_at_inference_and_invalidated_by_training():
    model = create_model("clamp_tiny_rn50")
    calls = []
    model.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    images = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        first = model(images)["text_embeddings"]
        model(images)
        model(images[:1])
    assert len(calls) == 1  # computed once for three forwards

    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = model(images)
    assert len(calls) == 2  # training always recomputes (gradients must reach the contexts)
    out["heatmaps"].sum().backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        second = model(images)["text_embeddings"]
    assert len(calls) == 3  # the optimizer step changed the contexts: cache invalidated
    assert not torch.allclose(first, second)


def test_gradient_reaches_contexts_but_text_encoder_never_changes():
    model = create_model("clamp_tiny_vitb16").train()
    before = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    contexts = model.contexts.detach().clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2,
                            weight_decay=1e-4)
    out = model(torch.randn(2, 3, 256, 256))
    loss = model.loss(out, torch.rand(2, 17, 64, 64), torch.ones(2, 17),
                      torch.rand(2, 17, 2) * 255)["total"]
    loss.backward()
    assert model.contexts.grad is not None and model.contexts.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.text_encoder.parameters())
    opt.step()
    assert not torch.equal(model.contexts, contexts)
    for key, value in model.text_encoder.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_keypoint_set_changes_prompts_and_heads():
    model = create_model("clamp_tiny_rn50", keypoints=ANIMALPOSE)
    assert model.token_ids.shape == (20, 5)
    assert model.keypoint_head.final_layer.out_channels == 20
    mouse = from_names(["snout", "leftear", "rightear", "tailbase"])
    model = create_model("clamp_tiny_vitb16", keypoints=mouse)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 256, 256))["heatmaps"].shape == (1, 4, 64, 64)


def test_prompt_encoder_ablation_and_baseline_have_no_language_parts():
    from dataclasses import replace

    from clamp_track.models import build_model, get_keypoint_set
    from clamp_track.models.registry import get_config

    cfg = replace(get_config("clamp_tiny_rn50"), use_prompt_encoder=False)
    model = build_model(cfg, get_keypoint_set("ap10k"))
    assert isinstance(model, Clamp) and model.prompt_encoder is None
    t, t_prompt = model.encode_text()
    assert torch.equal(t, t_prompt)

    baseline = create_model("simplebaseline_tiny_rn50")
    assert isinstance(baseline, SimpleBaseline)
    names = {n.split(".")[0] for n, _ in baseline.named_parameters()}
    assert names == {"backbone", "keypoint_head"}
    assert not any("attnpool" in n for n, _ in baseline.named_parameters())


def test_unknown_model_lists_known_ones():
    from clamp_track.errors import ClampTrackError

    with pytest.raises(ClampTrackError, match="clamp_rn50"):
        create_model("clamp_rn51")


def test_imagenet_simplebaseline_loads_torchvision_weights(tmp_path):
    """The ImageNet SimpleBaseline takes torchvision ResNet-50 weights (no classifier)."""
    import torchvision

    from clamp_track.models import init_pretrained

    reference = torchvision.models.resnet50().eval()  # stands in for IMAGENET1K_V1
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    model = create_model("simplebaseline_rn50_imagenet")
    init_pretrained(model, path)
    assert torch.equal(model.backbone.layer4[2].conv3.weight, reference.layer4[2].conv3.weight)
    model.eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        ours = model.backbone(x).features[-1]
        stem = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        theirs = reference.layer4(reference.layer3(reference.layer2(reference.layer1(stem))))
    torch.testing.assert_close(ours, theirs)
    assert model(x)["heatmaps"].shape == (1, 17, 64, 64)


def test_prompt_encoder_keeps_pytorch_default_init_as_the_official_code():
    """Built under a seed, the prompt encoder equals plain ``nn.MultiheadAttention`` +
    ``nn.Linear`` layers built in the official block's order under the same seed."""
    from torch import nn

    from clamp_track.models.text import PromptEncoder

    width, heads = 64, 8
    torch.manual_seed(7)
    ours = PromptEncoder(width, heads).transformer.resblocks[0]
    torch.manual_seed(7)
    attn = nn.MultiheadAttention(width, heads)
    c_fc, c_proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
    pairs = [(ours.attn.in_proj_weight, attn.in_proj_weight),
             (ours.attn.in_proj_bias, attn.in_proj_bias),
             (ours.attn.out_proj.weight, attn.out_proj.weight),
             (ours.attn.out_proj.bias, attn.out_proj.bias),
             (ours.mlp.c_fc.weight, c_fc.weight), (ours.mlp.c_fc.bias, c_fc.bias),
             (ours.mlp.c_proj.weight, c_proj.weight), (ours.mlp.c_proj.bias, c_proj.bias)]
    for a, b in pairs:
        assert torch.equal(a, b)
    # and in a whole model: zero attention biases, projections within the Xavier bound
    model = create_model("clamp_tiny_rn50")
    block = model.prompt_encoder.transformer.resblocks[0]
    assert not block.attn.in_proj_bias.any() and not block.attn.out_proj.bias.any()
    d = model.config.backbone.output_dim
    assert block.attn.in_proj_weight.abs().max() <= (6 / (d + 3 * d)) ** 0.5


def test_head_on_parts_equals_the_head_on_their_concatenation():
    """CLAMP's head runs [layer4; S] as two deconvolutions summed: the same heatmaps."""
    from clamp_track.models.heads import DeconvHead

    torch.manual_seed(0)
    head = DeconvHead(40 + 5, (16, 16), 5, init_std=0.05).eval()
    a = torch.randn(3, 40, 6, 6)
    b = torch.randn(3, 5, 6, 6)
    with torch.no_grad():
        whole = head(torch.cat([a, b], dim=1))
        torch.testing.assert_close(head.forward_parts(a, b), whole, atol=1e-5, rtol=1e-5)
        head = head.to(memory_format=torch.channels_last)
        a, b = (t.contiguous(memory_format=torch.channels_last) for t in (a, b))
        torch.testing.assert_close(head.forward_parts(a, b), whole, atol=1e-5, rtol=1e-5)
    assert whole.abs().max() > 1e-3  # the maps are not trivially zero
