from __future__ import annotations

import pytest
import torch

from clamp_track.cli import main
from clamp_track.errors import CheckpointError
from clamp_track.models import create_model, load_checkpoint, save_checkpoint
from clamp_track.skeleton import ANIMALPOSE


def test_round_trip_keeps_outputs_and_metadata(tmp_path):
    model = create_model("clamp_tiny_vitb16", keypoints=ANIMALPOSE)
    path = save_checkpoint(model, tmp_path / "m.pt", extra={"note": "test"})
    loaded = create_model(weights=path)  # everything comes from the file
    assert loaded.keypoints == ANIMALPOSE and loaded.config == model.config
    ckpt = load_checkpoint(path)
    assert ckpt.variant == "clamp_tiny_vitb16" and ckpt.extra == {"note": "test"}
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["heatmaps"], model.eval()(x)["heatmaps"])
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary file


def test_official_checkpoint_is_detected_and_converted(golden_dir, tmp_path):
    official = golden_dir / "vit_tiny_ref_checkpoint.pth"
    out = tmp_path / "ours.pt"
    assert main(["weights", "convert", str(official), "-o", str(out)]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.variant == "clamp_tiny_vitb16" and ckpt.keypoints.name == "ap10k"
    a, b = create_model(weights=official), create_model(weights=out)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("this is not a checkpoint\n" * 10), "not a PyTorch checkpoint"),
        (lambda p: torch.save([1, 2, 3], p), "not a checkpoint"),
        (lambda p: torch.save({"weights": torch.zeros(2)}, p), "not a clamp-track or official"),
    ],
    ids=["missing", "empty", "text", "list", "foreign-dict"],
)
def test_bad_files_fail_with_one_clear_message(tmp_path, make, message):
    path = tmp_path / "bad.pt"
    make(path)
    with pytest.raises(CheckpointError, match=message) as info:
        create_model("clamp_tiny_rn50", weights=path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_checkpoint(golden_dir, tmp_path):
    data = (golden_dir / "rn50_tiny_ref_checkpoint.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        create_model(weights=path)


def test_mismatches_name_the_file_and_the_problem(golden_dir, tmp_path):
    official = golden_dir / "rn50_tiny_ref_checkpoint.pth"
    with pytest.raises(CheckpointError, match="do not fit clamp_tiny_vitb16"):
        create_model("clamp_tiny_vitb16", weights=official)
    with pytest.raises(CheckpointError, match="predicts 17 keypoints.*has 20"):
        create_model("clamp_tiny_rn50", weights=official, keypoints="animalpose")
    ours = save_checkpoint(create_model("clamp_tiny_rn50"), tmp_path / "ap10k.pt")
    with pytest.raises(CheckpointError, match="trained for keypoint set 'ap10k'"):
        create_model("clamp_tiny_rn50", weights=ours, keypoints="animalpose")
    with pytest.raises(CheckpointError, match="CLIP"):
        create_model("clamp_tiny_rn50", weights=golden_dir / "rn50_tiny_fake_clip.pt")


def test_uncached_clip_weights_fail_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="--clip-weights"):
        create_model("clamp_rn50", clip_weights="openai")


def test_numpy_metadata_loads_safely_and_other_objects_need_trust(golden_dir, tmp_path):
    import fractions

    import numpy as np

    data = torch.load(golden_dir / "rn50_tiny_ref_checkpoint.pth", weights_only=True)
    data["meta"]["hook_msgs"] = {"best_score": np.float64(0.72), "curve": np.arange(3)}
    path = tmp_path / "numpy_meta.pth"
    torch.save(data, path)
    assert load_checkpoint(path).variant == "clamp_tiny_rn50"  # mmpose-style numpy metadata

    data["meta"]["odd"] = fractions.Fraction(1, 3)  # any other Python object
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="--trust"):
        load_checkpoint(path)
    out = tmp_path / "ours.pt"
    assert main(["weights", "convert", str(path), "-o", str(out), "--trust"]) == 0
    assert load_checkpoint(out).variant == "clamp_tiny_rn50"


def test_checkpoints_are_readable_by_the_group_as_the_umask_allows(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = save_checkpoint(create_model("clamp_tiny_rn50"), tmp_path / "shared.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["shared.pt"]
