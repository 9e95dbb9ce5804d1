"""Loading weights trained for one keypoint set into a model for another: explicit, and keeping
everything that does not depend on the number of keypoints."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from clamp_track.errors import CheckpointError
from clamp_track.models import adapt_to_keypoints, build_model, create_model, save_checkpoint
from clamp_track.models.checkpoint import keypoint_dims
from clamp_track.models.registry import get_config
from clamp_track.skeleton import AP10K, KeypointSet, from_names

MOUSE = from_names(["snout", "leftear", "rightear", "tailbase"], name="mouse")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a busy 2-core machine are far slower
    yield
    torch.set_num_threads(before)


def _trained_looking(name: str) -> torch.nn.Module:
    """A random 128-px model whose heads give heatmaps of order 1 (their 0.001 init: ~1e-10)."""
    model = build_model(replace(get_config(name), input_size=(128, 128)), AP10K)
    with torch.no_grad():
        for p in model.keypoint_head.parameters():
            p.mul_(30.0)
    return model.eval()


@pytest.mark.parametrize("name", ["clamp_tiny_rn50", "clamp_tiny_vitb16"])
def test_reordered_set_gives_the_same_heatmaps_reordered(name):
    model = _trained_looking(name)
    order = [16, 2, 0, 1, *range(3, 16)]
    permuted = KeypointSet(name="perm", names=tuple(AP10K.names[i] for i in order),
                           sigmas=tuple(AP10K.sigmas[i] for i in order))
    adapted = adapt_to_keypoints(model, permuted)
    assert adapted.keypoints == permuted and len(adapted.adaptation.matched) == 17
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        before = model(images)["heatmaps"]
        after = adapted(images)["heatmaps"]
    scale = before.abs().max().item()
    assert scale > 1e-3
    # the same sums in another order: equal up to float rounding
    torch.testing.assert_close(after, before[:, order], rtol=0, atol=1e-4 * scale)


def test_new_vocabulary_keeps_backbone_and_language_and_reinitialises_only_k_parts():
    model = _trained_looking("clamp_tiny_rn50")
    adapted = adapt_to_keypoints(model, MOUSE)
    old, new = model.state_dict(), adapted.state_dict()
    k_dependent = set(keypoint_dims(get_config("clamp_tiny_rn50"), 4))
    assert k_dependent == {
        "keypoint_head.deconv_layers.0.weight", "keypoint_head.final_layer.weight",
        "keypoint_head.final_layer.bias", "upconv_head.deconv_layers.0.weight",
        "upconv_head.final_layer.weight", "upconv_head.final_layer.bias"}
    for key in new:
        if key not in k_dependent:
            torch.testing.assert_close(new[key], old[key], rtol=0, atol=0, msg=key)
    # the C feature channels of the first deconv are kept, the 4 score channels are new
    c = get_config("clamp_tiny_rn50").backbone.feature_channels
    deconv = "keypoint_head.deconv_layers.0.weight"
    assert new[deconv].shape[0] == c + 4
    torch.testing.assert_close(new[deconv][:c], old[deconv][:c], rtol=0, atol=0)
    assert new["keypoint_head.final_layer.weight"].shape[0] == 4
    assert adapted.adaptation.matched == ()  # no AP-10K name among snout/ears/tail base
    # prompts come from the new names
    assert adapted.token_ids.shape[0] == 4 and not torch.equal(adapted.token_ids[:4],
                                                               model.token_ids[:4])
    with torch.no_grad():
        assert adapted(torch.randn(1, 3, 128, 128))["heatmaps"].shape == (1, 4, 32, 32)


def test_shared_names_keep_their_channels():
    model = _trained_looking("clamp_tiny_rn50")
    partial = from_names(["nose", "left_eye", "tailbase"], name="partial")
    adapted = adapt_to_keypoints(model, partial)
    assert adapted.adaptation.matched == ((0, AP10K.index("nose")), (1, AP10K.index("left eye")))
    old, new = model.state_dict(), adapted.state_dict()
    w = "keypoint_head.final_layer.weight"
    torch.testing.assert_close(new[w][0], old[w][AP10K.index("nose")], rtol=0, atol=0)
    assert not torch.equal(new[w][2], old[w][AP10K.index("nose")])


def test_loading_weights_of_another_set_is_explicit(tmp_path):
    path = save_checkpoint(_trained_looking("clamp_tiny_rn50"), tmp_path / "ap10k.pt")
    with pytest.raises(CheckpointError, match="adapt_keypoints=True.*--adapt-keypoints"):
        create_model(weights=path, keypoints=MOUSE)
    model = create_model(weights=path, keypoints=MOUSE, adapt_keypoints=True)
    assert model.keypoints == MOUSE and model.num_keypoints == 4
    same = create_model(weights=path, keypoints=AP10K, adapt_keypoints=True)
    assert same.keypoints == AP10K  # nothing to adapt


def test_official_checkpoint_adapts_to_a_new_set(golden_dir):
    official = golden_dir / "rn50_tiny_ref_checkpoint.pth"
    model = create_model("clamp_tiny_rn50", weights=official, keypoints=MOUSE,
                         adapt_keypoints=True)
    assert model.keypoints == MOUSE
