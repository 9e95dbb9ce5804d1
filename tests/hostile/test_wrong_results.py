"""Inputs that gave wrong results with exit 0 now warn and are recorded (issue 16, items 9-11).

Each case runs ``clamp-track run`` on one chunk of the clip with something odd about it and
checks the warning, the exit status and what the store records.
"""

from __future__ import annotations

import json
import logging
import struct

import numpy as np
import pytest

from clamp_track.io.store import ResultStore

STORE = "cows.mp4.clamp.sqlite"


def _rotated(video, folder):
    """A copy of ``video`` whose mp4 track header asks players to turn it 90° clockwise."""
    data = bytearray(video.read_bytes())
    tkhd = data.find(b"tkhd")
    at = tkhd + 4 + (52 if data[tkhd + 4] == 1 else 40)
    struct.pack_into(">9i", data, at, 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    out = folder / "cows.mp4"
    out.write_bytes(bytes(data))
    return out


def _corrupt(video, folder):
    """A copy of ``video`` with three packets in the middle of the first chunks overwritten."""
    import av

    with av.open(str(video)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0])
                   if p.size]
    data = bytearray(video.read_bytes())
    for pos, size in packets[10:13]:
        data[pos:pos + size] = b"\xff" * size
    out = folder / "cows.mp4"
    out.write_bytes(bytes(data))
    return out


def _outside_boxes(clip, folder):
    """Boxes of the clip plus, in every frame, one box far right of the 854-pixel frame."""
    boxes = folder / "det.txt"
    lines = clip[1].read_text().splitlines()
    boxes.write_text("".join(f"{line}\n{i + 1},-1,3000,100,80,60,0.99,-1,-1,-1\n"
                             for i, line in enumerate(lines)))
    return boxes


def _check_rotation(store):
    assert store.video_info.rotation == 90
    assert store.meta("video")["rotation"] == 90


def _check_inside(store):
    boxes = store.boxes()
    assert len(boxes) and (boxes["x1"] < store.video_info.width).all()


def _check_skipped(store):
    frames = store.frame_times()[0]
    assert len(frames) == 13 and not {9, 10, 11} & set(frames.tolist())


def _check_model(store):
    assert store.meta("model")["variant"] == "clamp_tiny_rn50"  # what ran, not what was asked
    assert store.keypoints.name == "ap10k"


CASES = {
    # name: (prepare(clip, folder) -> (video, extra args), warning text, check(store))
    "rotated phone video": (lambda clip, t: (_rotated(clip[0], t), []),
                            "turn it 90° clockwise", _check_rotation),
    "boxes outside the frame": (lambda clip, t: (clip[0], ["--boxes", _outside_boxes(clip, t)]),
                                "entirely outside the 854x480 frame", _check_inside),
    "corrupt frames mid-file": (lambda clip, t: (_corrupt(clip[0], t), []),
                                "3 could not be decoded (first: frame 9)", _check_skipped),
    "detect every 1000": (lambda clip, t: (clip[0], ["--detect-every", "1000"]),
                          "--detect-every 1000", lambda store: None),
    "pose model not the checkpoint's": (lambda clip, t: (clip[0], ["--pose-model",
                                                                  "clamp_vitb16"]),
                                        "--pose-model clamp_vitb16 ignored", _check_model),
    "keypoints not the checkpoint's": (lambda clip, t: (clip[0], ["--keypoints",
                                                                 "animalpose"]),
                                       "--keypoints animalpose is ignored", _check_model),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_odd_inputs_warn_and_are_recorded(case, clip, run_args, cli, tmp_path, caplog):
    prepare, warning, check = CASES[case]
    video, extra = prepare(clip, tmp_path)
    args = run_args(tmp_path / "out", "--end", "16", *extra)
    args[args.index(str(clip[0]))] = str(video)
    with caplog.at_level(logging.WARNING):
        status, err = cli(args)
    assert status == 0, err
    assert "Traceback" not in err
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [w for w in warned if warning in w], warned
    with ResultStore.open(tmp_path / "out" / STORE, readonly=True) as store:
        assert store.complete
        check(store)


def test_the_rotation_read_is_the_one_opencv_applies(clip, tmp_path):
    cv2 = pytest.importorskip("cv2")
    from clamp_track.io.video import probe

    video = _rotated(clip[0], tmp_path)
    capture = cv2.VideoCapture(str(video))
    try:
        ok, image = capture.read()
        opencv = capture.get(cv2.CAP_PROP_ORIENTATION_META)
    finally:
        capture.release()
    info = probe(video)
    assert ok and opencv == info.rotation == 90
    assert image.shape[:2] == (info.width, info.height)  # OpenCV shows it turned upright
    assert probe(clip[0]).rotation == 0


def test_coco_keypoints_outside_the_image_warn(shared_data, cli, tmp_path, caplog):
    source = (shared_data / "deeplabcut-examples" / "openfield-Pranav-2018-10-30" /
              "labeled-data" / "m4s1" / "CollectedData_Pranav.csv")
    status, err = cli(["labels", "convert", source, "--to", "coco", "-o", tmp_path / "coco"])
    assert status == 0, err
    coco = next((tmp_path / "coco").rglob("*.json"))
    data = json.loads(coco.read_text())
    ann = data["annotations"][0]
    image = next(i for i in data["images"] if i["id"] == ann["image_id"])
    values = np.asarray(ann["keypoints"], float).reshape(-1, 3)
    labelled = int(np.flatnonzero(values[:, 2] > 0)[0])
    values[labelled, :2] = (image["width"] + 40.0, 12.0)
    ann["keypoints"] = values.ravel().tolist()
    coco.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        status, err = cli(["labels", "convert", coco, "--to", "coco", "-o", tmp_path / "again"])
    assert status == 0, err
    warned = [r.getMessage() for r in caplog.records if "outside their image" in r.getMessage()]
    assert len(warned) == 1 and f"annotation {ann['id']}" in warned[0], warned
    assert next((tmp_path / "again").rglob("*.json")).is_file()
