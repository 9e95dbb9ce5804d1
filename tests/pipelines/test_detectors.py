from __future__ import annotations

import json
import sys
import time
import types
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from clamp_track.errors import CheckpointError, InputError, MissingDependencyError
from clamp_track.io.video import VideoReader
from clamp_track.pipelines import detectors
from clamp_track.pipelines.detectors import (
    ANIMAL_CLASSES,
    Detector,
    coco_categories,
    make_detector,
    merge_boxes,
    mmdet_to_detections,
)
from clamp_track.types import Detections, Frame

DOG = "deeplabcut-live/check_install/dog_clip.avi"  # 350 x 370
COWS = "badja-davis/derived/cows_480p_24fps.mp4"
COWS_BOXES = "badja-davis/derived/cows_480p_keypoints.json"
OPENFIELD = "deeplabcut-examples/openfield-Pranav-2018-10-30/videos/m3v1mp4.mp4"


def blank(index: int, width: int = 350, height: int = 370) -> Frame:
    return Frame(index, index / 30, np.zeros((height, width, 3), np.uint8))


def test_factory_checks_names_and_options(tmp_path):
    with pytest.raises(InputError, match="unknown detector 'yolo'.*motion"):
        make_detector("yolo")
    with pytest.raises(InputError, match="unknown key.*treshold"):
        make_detector("motion", treshold=3)
    with pytest.raises(InputError, match="method"):
        make_detector("motion", method="median")
    with pytest.raises(InputError, match="path"):
        make_detector("file")  # the boxes file is required
    assert isinstance(make_detector("motion"), Detector)


# ---------------------------------------------------------------------------------- torchvision


@pytest.fixture(scope="module")
def random_torchvision():
    """The fast model with random weights (never downloads)."""
    return make_detector("torchvision", model="fast", weights=None, score_threshold=0.0,
                         device="cpu")


def test_torchvision_keeps_the_frame_size_and_the_animal_classes(random_torchvision, shared_data):
    detector = random_torchvision
    assert sorted(detector.class_names.values()) == sorted(ANIMAL_CLASSES)
    assert sorted(detector.class_names) == list(range(16, 26))  # COCO ids bird..giraffe
    with VideoReader(shared_data / DOG, end=1) as reader:
        frames = list(reader)
    seen = []
    hook = detector.model.backbone.register_forward_pre_hook(
        lambda module, args: seen.append(tuple(args[0].shape)))
    try:
        out = detector.detect(frames)
    finally:
        hook.remove()
    assert len(out) == 1 and all(isinstance(d, Detections) for d in out)
    # 370 x 350 stays 370 x 350 (padded to a multiple of 32), not upscaled to 800 px
    assert seen == [(1, 3, 384, 352)]
    assert detector.model.transform.min_size == (350,) and detector.model.transform.max_size == 370
    for d in out:
        assert np.isin(d.class_ids, list(detector.class_names)).all()


def test_frame_sizes_shrink_large_frames_only():
    assert detectors._frame_sizes(480, 640, 1333) == (480, 640)
    assert detectors._frame_sizes(2160, 3840, 1333) == (750, 1333)
    assert detectors._frame_sizes(100, 80, 1333) == (80, 100)


def test_torchvision_outputs_are_filtered_to_animals_above_threshold():
    names = coco_categories("fast")
    keep = detectors._class_ids(names, ANIMAL_CLASSES)
    output = {"boxes": torch.tensor([[1.0, 2, 30, 40], [5, 5, 50, 60], [0, 0, 9, 9],
                                     [3, 3, 8, 8]]),
              "scores": torch.tensor([0.9, 0.95, 0.7, 0.3]),
              "labels": torch.tensor([names.index("dog"), names.index("person"),
                                      names.index("zebra"), names.index("cat")])}
    d = detectors._select(output["boxes"], output["scores"], output["labels"], keep, 0.5)
    assert d.class_ids.tolist() == [names.index("dog"), names.index("zebra")]
    np.testing.assert_allclose(d.boxes, [[1, 2, 30, 40], [0, 0, 9, 9]])
    assert d.track_ids.tolist() == [-1, -1]


def test_torchvision_offline_without_cached_weights_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(detectors, "_reachable", lambda host, timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        make_detector("torchvision")
    message = str(err.value)
    assert time.perf_counter() - start < 30  # no download attempt, no network wait
    assert "\n" not in message
    assert "https://download.pytorch.org/models/fasterrcnn_mobilenet_v3_large_fpn" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the project's no-network switch also does it
    monkeypatch.setattr(detectors, "_reachable", lambda *a, **k: pytest.fail("network probe"))
    with pytest.raises(CheckpointError, match="accurate|resnet50_fpn_v2"):
        make_detector("torchvision", model="accurate")


def test_torchvision_weights_from_a_file(random_torchvision, tmp_path):
    path = tmp_path / "detector.pth"
    torch.save(random_torchvision.model.state_dict(), path)
    loaded = make_detector("torchvision", weights=str(path), device="cpu")
    a = next(iter(random_torchvision.model.state_dict().values()))
    assert torch.equal(next(iter(loaded.model.state_dict().values())), a)
    torch.save({"not": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="other.pth"):
        make_detector("torchvision", weights=str(tmp_path / "other.pth"), device="cpu")


# ---------------------------------------------------------------------------------------- mmdet


def det_data_sample(bboxes, scores, labels):
    """An object shaped like mmdet 3's DetDataSample (pred_instances with tensors)."""
    return SimpleNamespace(pred_instances=SimpleNamespace(
        bboxes=torch.tensor(bboxes, dtype=torch.float32), scores=torch.tensor(scores),
        labels=torch.tensor(labels)))


def test_mmdet_outputs_are_converted_and_filtered_by_class_name():
    names = ("person", "Dog", "car", "sheep ")
    keep = detectors._class_ids(names, ANIMAL_CLASSES)
    assert keep.tolist() == [1, 3]
    sample = det_data_sample([[0, 0, 10, 10], [1, 2, 3, 4], [5, 6, 70, 80], [0, 0, 1, 1]],
                             [0.9, 0.8, 0.6, 0.2], [0, 1, 3, 3])
    d = mmdet_to_detections(sample, keep, 0.5)
    np.testing.assert_allclose(d.boxes, [[1, 2, 3, 4], [5, 6, 70, 80]])
    assert d.class_ids.tolist() == [1, 3] and d.scores.dtype == np.float32
    empty = mmdet_to_detections(det_data_sample(np.zeros((0, 4)), [], []), keep, 0.5)
    assert len(empty) == 0


def test_mmdet_adapter_with_a_stand_in_for_mmdet_apis(tmp_path, monkeypatch):
    calls = {}

    def init_detector(config, checkpoint, device):
        calls["init"] = (config, checkpoint, device)
        return SimpleNamespace(dataset_meta={"classes": ("person", "dog", "car")})

    def inference_detector(model, images):
        calls.setdefault("batches", []).append([im.copy() for im in images])
        return [det_data_sample([[1, 1, 5, 5], [2, 2, 9, 9]], [0.9, 0.9], [0, 1])
                for _ in images]

    apis = types.ModuleType("mmdet.apis")
    apis.init_detector, apis.inference_detector = init_detector, inference_detector
    package = types.ModuleType("mmdet")
    package.apis = apis
    monkeypatch.setitem(sys.modules, "mmdet", package)
    monkeypatch.setitem(sys.modules, "mmdet.apis", apis)
    (tmp_path / "cfg.py").write_text("")
    (tmp_path / "w.pth").write_bytes(b"")
    detector = make_detector("mmdet", config=str(tmp_path / "cfg.py"),
                             checkpoint=str(tmp_path / "w.pth"), device="cpu", batch_size=2)
    assert calls["init"][2] == "cpu" and detector.class_names == {1: "dog"}
    frames = [blank(i, 8, 6) for i in range(3)]
    frames[0].image[..., 0] = 200  # red in RGB
    out = detector.detect(frames)
    assert [len(b) for b in calls["batches"]] == [2, 1]
    assert calls["batches"][0][0][0, 0].tolist() == [0, 0, 200]  # handed over as BGR
    assert [d.class_ids.tolist() for d in out] == [[1]] * 3


def test_mmdet_missing_gives_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mmdet", None)
    monkeypatch.setitem(sys.modules, "mmdet.apis", None)
    with pytest.raises(MissingDependencyError, match="mim install"):
        make_detector("mmdet", config="c.py", checkpoint="w.pth")


# ----------------------------------------------------------------------------------------- file


def megadetector_json(path, images, categories=None):
    data = {"info": {"format_version": "1.6"},
            "detection_categories": categories or {"1": "animal", "2": "person",
                                                   "3": "vehicle"},
            "images": images}
    path.write_text(json.dumps(data, indent=1))
    return path


def test_megadetector_video_output(shared_data, tmp_path):
    video = {"file": "site3/dog_clip.avi", "frame_rate": 30, "frames_processed": [0, 10, 20],
             "detections": [
                 {"category": "1", "conf": 0.9, "bbox": [0.1, 0.2, 0.5, 0.4], "frame_number": 10},
                 {"category": "2", "conf": 0.8, "bbox": [0.0, 0.0, 0.2, 0.2], "frame_number": 10},
                 {"category": "1", "conf": 0.1, "bbox": [0.5, 0.5, 0.1, 0.1], "frame_number": 20},
             ]}
    other = {"file": "site3/other.mp4", "frame_rate": 30, "frames_processed": [0],
             "detections": [{"category": "1", "conf": 0.9, "bbox": [0, 0, 1, 1],
                             "frame_number": 0}]}
    path = megadetector_json(tmp_path / "md.json", [other, video])
    detector = make_detector("file", path=str(path), video=str(shared_data / DOG),
                             min_score=0.2)
    assert detector.frames_covered == {0, 10, 20} and detector.class_names == {1: "animal"}
    with VideoReader(shared_data / DOG, end=21) as reader:
        frames = [f for f in reader if f.index in (0, 10, 15, 20)]
    out = detector.detect(frames)
    assert [len(d) for d in out] == [0, 1, 0, 0]
    np.testing.assert_allclose(out[1].boxes, [[35, 74, 210, 222]], atol=1e-4)  # x 350, y 370
    assert out[1].scores.tolist() == pytest.approx([0.9]) and out[1].class_ids.tolist() == [1]
    with pytest.raises(InputError, match="2 videos"):
        make_detector("file", path=str(path))


def test_megadetector_output_for_extracted_frames(tmp_path):
    images = [{"file": f"clips\\dog_clip\\frame{i:06d}.jpg",
               "detections": [{"category": "1", "conf": 0.5, "bbox": [0.5, 0.5, 0.25, 0.5]}]}
              for i in (3, 4)]
    images.append({"file": "clips/dog_clip/frame000005.jpg", "failure": "Failure image access",
                   "detections": None})
    path = megadetector_json(tmp_path / "frames.json", images)
    detector = make_detector("file", path=str(path), video="dog_clip.avi")
    assert detector.frames_covered == {3, 4}
    out = detector.detect([blank(3, 200, 100), blank(5, 200, 100)])
    np.testing.assert_allclose(out[0].boxes, [[100, 50, 150, 100]])
    assert len(out[1]) == 0


@pytest.mark.parametrize("text, message", [
    ('{"images": [\n {"file": "v.mp4", "detections": [}]}', "line 2"),
    ('{"detections": []}', "images"),
    ('{"images": [{"file": "v.mp4", "frame_rate": 30, "detections": [{"category": "1", '
     '"conf": 0.5, "bbox": [0, 0, 1], "frame_number": 0}]}]}', r"images\[0\].detections\[0\]"),
    ('{"images": [{"file": "v.mp4", "frame_rate": 30, "detections": [{"category": "1", '
     '"bbox": [0, 0, 1, 1], "frame_number": 0}]}]}', "conf"),
    ('{"images": [{"file": "pic.jpg", "detections": []}]}', "frame000123"),
])
def test_malformed_megadetector_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as err:
        make_detector("file", path=str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_mot_det_txt(tmp_path):
    path = tmp_path / "det.txt"
    path.write_text("1,-1,10,20,30,40,0.9,-1,-1,-1\n"
                    "1,7,100,100,10,10,1.5,-1,-1,-1\n"
                    "\n"
                    "3,-1,0,0,5,5,0.05\n"
                    "3 2 1 1 4 4 0.8\n")
    detector = make_detector("file", path=str(path), min_score=0.1)
    assert detector.frames_covered == {0, 2}
    out = detector.detect([blank(0), blank(1), blank(2)])
    np.testing.assert_allclose(out[0].boxes, [[10, 20, 40, 60], [100, 100, 110, 110]])
    assert out[0].track_ids.tolist() == [-1, 7]
    assert out[0].scores.tolist() == pytest.approx([0.9, 1.0])  # clipped to [0, 1]
    assert len(out[1]) == 0
    assert out[2].track_ids.tolist() == [2] and out[2].boxes.tolist() == [[1, 1, 5, 5]]


@pytest.mark.parametrize("line, message", [
    ("1,-1,10,20,30", "expected 'frame,id"), ("1,-1,a,20,30,40,0.9", "expected 'frame,id"),
    ("0,-1,10,20,30,40,0.9", ">= 1"), ("2,-1,10,20,-30,40,0.9", "positive"),
])
def test_malformed_mot_lines_are_named(tmp_path, line, message):
    path = tmp_path / "det.txt"
    path.write_text(f"1,-1,10,20,30,40,0.9\n\n{line}\n")
    with pytest.raises(InputError, match=message) as err:
        make_detector("file", path=str(path))
    assert f"{path}:3:" in str(err.value)


def test_mot_boxes_from_the_badja_masks_on_the_cows_video(shared_data, tmp_path):
    coco = json.loads((shared_data / COWS_BOXES).read_text())
    frame_of = {im["id"]: im["frame_index"] for im in coco["images"]}
    lines = [f"{frame_of[a['image_id']] + 1},-1,{','.join(map(str, a['bbox']))},1"
             for a in coco["annotations"]]
    (tmp_path / "det.txt").write_text("\n".join(lines))
    detector = make_detector("file", path=str(tmp_path / "det.txt"))
    with VideoReader(shared_data / COWS) as reader:
        out = {f.index: d for f, d in zip(reader, detector.detect(list(reader)))}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        np.testing.assert_allclose(out[frame_of[a["image_id"]]].boxes, [[x, y, x + w, y + h]])
    assert sum(len(d) for d in out.values()) == len(coco["annotations"]) == 21


# --------------------------------------------------------------------------------------- motion


def test_merge_boxes():
    boxes = [[0, 0, 10, 10], [12, 0, 20, 10], [100, 100, 110, 110], [19, 9, 30, 30]]
    merged = merge_boxes(boxes, gap=3)
    assert sorted(merged.tolist()) == [[0, 0, 30, 30], [100, 100, 110, 110]]
    assert merge_boxes(np.zeros((0, 4)), 3).shape == (0, 4)


@pytest.mark.parametrize("method", ["mog2", "knn"])
def test_motion_finds_a_moving_square(method):
    rng = np.random.default_rng(0)
    background = rng.integers(90, 140, (120, 160, 3)).astype(np.uint8)
    fur = rng.integers(0, 70, (20, 20, 3)).astype(np.uint8)  # a textured "animal"
    detector = make_detector("motion", method=method)
    ious = []
    for i in range(60):
        image = np.clip(background + rng.normal(0, 3, background.shape), 0, 255).astype(np.uint8)
        x, y = 2 * i, 40 + i // 2
        if i >= 5:  # the camera sees the empty scene first, then the square enters
            image[y:y + 20, x:x + 20] = fur
        d = detector.detect([Frame(i, i / 30, image)])[0]
        if i < 5:
            assert len(d) == 0  # warm-up
        else:  # exactly the square
            assert len(d) == 1, (i, d.boxes)
            (x1, y1, x2, y2), truth = d.boxes[0], (x, y, x + 20, y + 20)
            inter = max(0, min(x2, truth[2]) - max(x1, truth[0])) * \
                max(0, min(y2, truth[3]) - max(y1, truth[1]))
            ious.append(inter / ((x2 - x1) * (y2 - y1) + 400 - inter))
            assert 0.5 <= d.scores[0] <= 1
    assert min(ious) > 0.6 and np.mean(ious) > 0.8


def dark_blob_centre(image: np.ndarray):
    """Independent reference for the open-field mouse: the largest dark blob on the white floor."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    mask = (grey < 50).astype(np.uint8)
    mask[:30], mask[465:], mask[:, :12], mask[:, 628:] = 0, 0, 0, 0  # walls and rim
    n, _, stats, centres = cv2.connectedComponentsWithStats(mask)
    return None if n < 2 else centres[1 + np.argmax(stats[1:, cv2.CC_STAT_AREA])]


def test_motion_follows_the_openfield_mouse(shared_data):
    # Detect every 2nd frame of frames 0-500; score frames 100-500 (after the warm-up).
    detector = make_detector("motion")
    one_box_on_mouse = on_mouse = scored = 0
    with VideoReader(shared_data / OPENFIELD, end=500) as reader:
        for frame in reader:
            if frame.index % 2:
                continue
            d = detector.detect([frame])[0]
            centre = dark_blob_centre(frame.image)
            if frame.index < 100 or centre is None:
                continue
            x, y = centre
            hits = [(x1 <= x <= x2) and (y1 <= y <= y2) for x1, y1, x2, y2 in d.boxes]
            scored += 1
            on_mouse += any(hits)
            one_box_on_mouse += len(d) == 1 and hits[0]
    assert scored > 190
    assert on_mouse / scored > 0.95
    assert one_box_on_mouse / scored > 0.7  # measured 0.85 (0.87 over the whole video)
