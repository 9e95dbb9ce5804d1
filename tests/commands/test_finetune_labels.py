"""``clamp-track finetune`` and ``clamp-track labels`` from the command line."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from clamp_track.cli import main
from clamp_track.io.store import ResultStore, store_path
from clamp_track.models import build_model, get_config, load_checkpoint, save_checkpoint
from clamp_track.skeleton import AP10K
from clamp_track.types import PosePredictions

OPENFIELD = "deeplabcut-examples/openfield-Pranav-2018-10-30/labeled-data/m4s1"
FAST = ["--steps", "4", "--set", "val_every=2", "--set", "min_val_images=3", "--batch-size",
        "4", "--device", "cpu", "--workers", "0", "--set", "backbone_bn=train", "--no-progress"]


@pytest.fixture
def store(shared_data, tmp_path):
    """A store of 8 frames of the cows video made by tiny 128-px weights, 4 frames corrected."""
    from clamp_track.io.video import probe

    video = tmp_path / "cows.mp4"
    shutil.copy(shared_data / "badja-davis" / "derived" / "cows_480p_24fps.mp4", video)
    weights = save_checkpoint(build_model(replace(get_config("clamp_tiny_rn50"),
                                                  input_size=(128, 128)), AP10K),
                              tmp_path / "tiny.pt")
    path = store_path(video)
    with ResultStore.create(path, {"keypoints": AP10K.to_dict(),
                                   "video": dict(probe(video).__dict__),
                                   "model": {"variant": None, "weights": str(weights)}}) as s:
        xy = np.tile(np.linspace(300, 500, 17, dtype=np.float32)[:, None], (1, 2))[None]
        s.write_chunk([(f, f / 24, True) for f in range(8)],
                      [PosePredictions(f, [1], [[250, 120, 600, 400]], xy, np.ones((1, 17)))
                       for f in range(8)])
        for f in (1, 3, 5, 7):
            for k in (0, 1, 2):
                s.set_correction(f, 1, k, 300.0 + 10 * k + f, 200.5 + k)
    return path, weights


def test_finetune_command_writes_weights(store, tmp_path, capsys):
    path, weights = store
    out = tmp_path / "ft.pt"
    assert main(["finetune", str(path), "-o", str(out), *FAST]) == 0
    text = capsys.readouterr().out
    assert f"use them: clamp-track run VIDEO --pose-weights {out}" in text
    assert "held-out frames, new weights:" in text
    meta = load_checkpoint(out).extra["finetune"]
    assert meta["start"]["weights"] == str(weights) and meta["recipe"]["steps"] == 4


def test_finetune_command_bad_input_is_one_line(store, shared_data, tmp_path, capsys):
    path, weights = store
    with ResultStore.open(path) as s:
        s._db.execute("DELETE FROM corrections")
    assert main(["finetune", str(path), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no corrected frames" in err
    assert main(["finetune", str(shared_data / OPENFIELD), "--from", str(weights), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pass --adapt-keypoints" in err
    assert main(["finetune", str(path), "--replay-ratio", "2", *FAST]) == 2
    assert "need --replay" in capsys.readouterr().err


def test_labels_export_convert_import(store, shared_data, tmp_path, capsys):
    path, _ = store
    assert main(["labels", "export", str(path), "--format", "coco", "-o",
                 str(tmp_path / "coco")]) == 0
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert len(coco["annotations"]) == 4 and len(coco["images"]) == 4
    assert coco["images"][0]["file_name"] == "cows/img001.png"
    assert (tmp_path / "coco" / "images" / "cows" / "img007.png").is_file()
    assert coco["annotations"][0]["keypoints"][:3] == [301.0, 200.5, 2.0]
    assert main(["labels", "export", str(path), "--format", "dlc", "--layout", "single",
                 "-o", str(tmp_path / "project")]) == 0
    assert "bodyparts: ['left_eye'" in capsys.readouterr().out
    dlc = tmp_path / "project" / "labeled-data" / "cows"
    assert (dlc / "CollectedData_clamp-track.h5").is_file()
    assert main(["labels", "convert", str(dlc), "--to", "coco", "-o", str(tmp_path / "c2")]) == 0
    again = json.loads((tmp_path / "c2" / "annotations.json").read_text())
    assert [a["keypoints"] for a in again["annotations"]] == \
        [a["keypoints"] for a in coco["annotations"]]
    before = ResultStore.open(path, readonly=True).corrections()
    with ResultStore.open(path) as s:
        s._db.execute("DELETE FROM corrections")
    assert main(["labels", "import", str(tmp_path / "coco" / "annotations.json"), "--store",
                 str(path)]) == 0
    assert "4 labelled animals imported" in capsys.readouterr().out
    assert ResultStore.open(path, readonly=True).corrections() == before
    assert main(["labels", "convert", str(shared_data / OPENFIELD), "--to", "dlc", "-o",
                 str(tmp_path / "dlc2")]) == 0
    # a re-run's store gets the corrections of the old one (nearest prediction per animal)
    rerun = tmp_path / "rerun" / path.name
    rerun.parent.mkdir()
    shutil.copy(path, rerun)
    with ResultStore.open(rerun) as s:
        s._db.execute("DELETE FROM corrections")
    assert main(["labels", "import", str(path), "--store", str(rerun)]) == 0
    assert ResultStore.open(rerun, readonly=True).corrections() == before
