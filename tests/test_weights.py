from __future__ import annotations

import zipfile

import pytest

from clamp_track.cli import main
from clamp_track.errors import CheckpointError
from clamp_track.models import create_model, load_checkpoint
from clamp_track.weights import fetch_pose_archive, resolve_pose_weights


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAMP_TRACK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_fetching_an_archive_converts_every_checkpoint(golden_dir, tmp_path, cache, capsys):
    archive = tmp_path / "release.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(golden_dir / "rn50_tiny_ref_checkpoint.pth", "CLAMP/rn50_tiny_ap10k.pth")
        z.write(golden_dir / "vit_tiny_ref_checkpoint.pth", "CLAMP/vit_tiny_ap10k.pth")
    written = fetch_pose_archive(archive.as_uri(), "test-release")
    assert sorted(p.name for p in written) == ["rn50_tiny_ap10k.pt", "vit_tiny_ap10k.pt"]
    assert all(p.parent == cache / "pose" for p in written)
    assert load_checkpoint(written[0]).extra["file"] == "rn50_tiny_ap10k.pth"
    # found by name afterwards, and listed
    assert resolve_pose_weights("vit_tiny_ap10k") == cache / "pose" / "vit_tiny_ap10k.pt"
    assert create_model(weights=resolve_pose_weights("rn50_tiny_ap10k")).keypoints.name == "ap10k"
    assert main(["weights", "list"]) == 0
    assert "vit_tiny_ap10k" in capsys.readouterr().out
    # "auto" finds the official weights of a variant through the cache index
    assert resolve_pose_weights("auto", "clamp_tiny_vitb16") == written[1]


def test_checkpoints_put_in_the_cache_by_hand_are_found_by_auto(golden_dir, cache):
    out = cache / "pose" / "my_rn50.pt"
    out.parent.mkdir(parents=True)
    assert main(["weights", "convert", str(golden_dir / "rn50_tiny_ref_checkpoint.pth"),
                 "-o", str(out)]) == 0
    assert resolve_pose_weights("auto", "clamp_tiny_rn50") == out


def test_auto_weights_offline_say_what_to_do(cache, monkeypatch):
    import clamp_track.weights as weights

    def offline(name):
        raise CheckpointError("cannot download clamp-official (URLError)")

    monkeypatch.setattr(weights, "fetch", offline)
    with pytest.raises(CheckpointError, match="--pose-weights FILE.*none"):
        resolve_pose_weights("auto", "clamp_rn50")


def test_unknown_or_unreachable_weights_explain_what_to_do(tmp_path, cache):
    with pytest.raises(CheckpointError, match="weights fetch clamp-official"):
        resolve_pose_weights("clamp_rn50_ap10k")
    with pytest.raises(CheckpointError, match="not found"):
        resolve_pose_weights(str(tmp_path / "missing.pth"))
    with pytest.raises(CheckpointError, match="cannot download .* by hand"):
        fetch_pose_archive((tmp_path / "nowhere.zip").as_uri(), "x")
