"""MegaDetector v6 (MIT YOLOv9) in-process: geometry, classes, NMS, weights files, the whole run.

No MegaDetector weights can be downloaded here: the tests build the YOLOv9 layouts with random
weights, save them as the Lightning ``.ckpt`` files the real weights are, and load those through
the same code a user's download goes through.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from clamp_track.errors import CheckpointError, InputError
from clamp_track.models.yolov9 import build_yolov9
from clamp_track.pipelines import megadetector as md
from clamp_track.pipelines.detectors import make_detector
from clamp_track.types import Frame

COWS = "badja-davis/derived/cows_480p_24fps.mp4"  # 854 x 480, real footage


class HyperParameters:
    """Stands for the OmegaConf objects a Lightning checkpoint pickles besides its tensors."""

    def __init__(self, **values):
        self.values = values


def save_lightning_ckpt(model: torch.nn.Module, path: Path, aux_layers: int = 2) -> Path:
    """Save ``model`` as MIT YOLO's Lightning training saves it (the MDV6-mit-*.ckpt format).

    ``state_dict`` has the network under ``model.model.<i>``, an EMA copy under ``ema.``, and
    auxiliary-branch layers after the detection layer; the file also pickles a non-tensor object.
    """
    state = {f"model.model.{k[len('model.'):]}": v for k, v in model.state_dict().items()}
    state.update({f"ema.{k}": v.clone() for k, v in list(state.items())})
    n = len(model.model)
    for i in range(aux_layers):  # training-only auxiliary branch: ignored at inference
        state[f"model.model.{n + i}.conv1.conv.weight"] = torch.zeros(8, 8, 1, 1)
    torch.save({"epoch": 3, "global_step": 999, "pytorch-lightning_version": "2.4.0",
                "state_dict": state, "hyper_parameters": {"cfg": HyperParameters(name="v9-s")},
                "optimizer_states": [], "lr_schedulers": []}, path)
    return path


@pytest.fixture(scope="module")
def v9s_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_yolov9("v9-s")
    with torch.no_grad():  # running statistics too, so that loading them is checked
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model, save_lightning_ckpt(model, tmp_path_factory.mktemp("md") / "MDV6-c.ckpt")


# ------------------------------------------------------------------------------- letterbox


@pytest.mark.parametrize("width, height, box", [
    (1280, 720, (900, 100, 1100, 400)),    # landscape: grey bars above and below
    (480, 854, (40, 600, 300, 820)),       # portrait: bars left and right
    (853, 480, (0, 0, 120, 90)),           # odd width, box in the corner
    (320, 240, (100, 50, 260, 200)),       # smaller than the input: scaled up
])
def test_a_box_drawn_into_the_letterboxed_image_maps_back_within_a_pixel(width, height, box):
    frame = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    frame[y1:y2, x1:x2] = 255
    batch, geometry = md.letterbox([frame, frame])
    assert batch.shape == (2, 640, 640, 3)
    image = batch[0].astype(int)
    new_w, new_h = geometry.size
    assert max(new_w, new_h) == 640 and abs(new_w / new_h - width / height) < 0.01
    # the padding is MegaDetector's grey, the frame sits centred
    assert (image[:geometry.pad_top] == 114).all() and (image[:, :geometry.pad_left] == 114).all()
    assert abs((640 - new_w) - 2 * geometry.pad_left) <= 1
    assert abs((640 - new_h) - 2 * geometry.pad_top) <= 1
    rows, cols = np.nonzero(image[..., 0] > 127)
    found = np.array([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]])
    back = geometry.to_frame(found)[0]
    np.testing.assert_allclose(back, box, atol=1.0)


def test_letterbox_refuses_frames_of_different_sizes():
    with pytest.raises(ValueError, match="same size"):
        md.letterbox([np.zeros((10, 20, 3), np.uint8), np.zeros((20, 10, 3), np.uint8)])


# ----------------------------------------------------------------------------- NMS, classes


def test_nms_is_per_class_and_keeps_the_best_boxes():
    boxes = torch.tensor([[[0, 0, 100, 100], [2, 2, 101, 101], [0, 0, 100, 100],
                           [300, 300, 400, 400]]], dtype=torch.float32)
    logits = torch.full((1, 4, 3), -20.0)
    logits[0, 0, 0], logits[0, 1, 0] = 3.0, 2.0   # two overlapping animals: one survives
    logits[0, 2, 1] = 1.0                          # a person on the same spot: kept
    logits[0, 3, 0] = -2.0                         # sigmoid 0.12: below 0.2
    ((kept, scores, cls),) = md.postprocess(logits, boxes, 0.2, 0.5, 300)
    assert cls.tolist() == [0, 1]
    np.testing.assert_allclose(scores.numpy(), torch.sigmoid(torch.tensor([3.0, 1.0])).numpy())
    assert kept[0].tolist() == [0, 0, 100, 100]
    ((kept, _, _),) = md.postprocess(logits, boxes, 0.1, 0.5, 1)
    assert len(kept) == 1  # max_boxes


def _person_everywhere(detector) -> None:
    """Make every anchor point a confident 'person' (class 1) and nothing else."""
    for head in detector.model.model[-1].heads:
        last = head.class_conv[-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.copy_(torch.tensor([-10.0, 5.0, -10.0]))


def test_only_animals_are_kept_by_default_and_classes_widens_it(shared_data):
    frame = Frame(0, 0.0, np.random.default_rng(0).integers(0, 255, (480, 854, 3), np.uint8))
    animals = make_detector("megadetector", weights=None, device="cpu", max_boxes=5)
    assert animals.class_names == {0: "animal"}
    _person_everywhere(animals)
    assert len(animals.detect([frame])[0]) == 0
    both = make_detector("megadetector", weights=None, device="cpu", max_boxes=5,
                         classes=("animal", "person"))
    _person_everywhere(both)
    (found,) = both.detect([frame])
    assert both.class_names == {0: "animal", 1: "person"}
    assert 1 <= len(found) <= 5 and set(found.class_ids.tolist()) == {1}
    assert (found.boxes[:, [0, 2]] <= 854).all() and (found.boxes[:, [1, 3]] <= 480).all()
    assert (found.boxes >= 0).all() and (found.scores > 0.99).all()


def test_bad_options_are_one_line_errors():
    with pytest.raises(InputError, match="MegaDetector knows"):
        make_detector("megadetector", classes=("cat",))
    with pytest.raises(InputError, match="unknown MegaDetector model 'v7'"):
        make_detector("megadetector", model="v7")
    with pytest.raises(InputError, match="does not run in-process.*--detector file"):
        make_detector("megadetector", model="MDV6-apa-rtdetr-c")


# ---------------------------------------------------------------------------- weights files


def test_the_lightning_checkpoint_loads_exactly(v9s_ckpt):
    model, path = v9s_ckpt
    detector = make_detector("megadetector", weights=str(path), device="cpu",
                             score_threshold=0.0)
    x = torch.rand(2, 3, 256, 256)  # any multiple of 32 runs; 640 is what the detector feeds
    with torch.inference_mode():
        expected, got = model.eval()(x), detector.model(x)
    torch.testing.assert_close(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1])
    # the same file is the v9-s layout: asking for the v9-c variant names the mismatch
    with pytest.raises(CheckpointError, match=r"MDV6-c.ckpt: does not fit YOLOv9 v9-c \(the "
                                              r"file is the v9-s layout"):
        make_detector("megadetector", model="accurate", weights=str(path), device="cpu")


@pytest.mark.parametrize("content, message", [
    ("text", "not a readable PyTorch checkpoint"),
    ("torchvision", "keys look like 'conv1.weight'"),
    ("list", "holds a list"),
    ("empty", "file is empty"),
])
def test_a_wrong_file_is_refused_with_one_line(tmp_path, content, message):
    path = tmp_path / "weights.ckpt"
    if content == "text":
        path.write_text("<html>Zenodo is down</html>")
    elif content == "torchvision":
        torch.save({"conv1.weight": torch.zeros(1), "fc.bias": torch.zeros(1)}, path)
    elif content == "list":
        torch.save([torch.zeros(1)], path)
    else:
        path.touch()
    with pytest.raises(CheckpointError, match=message) as err:
        make_detector("megadetector", weights=str(path), device="cpu")
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_weights_by_name_offline_say_where_to_put_the_file(tmp_path, monkeypatch):
    from clamp_track import weights

    monkeypatch.setenv("CLAMP_TRACK_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as err:
        make_detector("megadetector", device="cpu")  # weights="auto": the registry's file
    text = str(err.value)
    target = tmp_path / "detector" / "MDV6-mit-yolov9-c.ckpt"
    assert "\n" not in text and str(target) in text
    assert "https://zenodo.org/records/15398270/files/MDV6-mit-yolov9-c.ckpt" in text
    assert weights.REGISTRY["MDV6-mit-yolov9-e"].licence == "MIT"


def test_cached_weights_are_checksum_checked(tmp_path, monkeypatch, v9s_ckpt):
    import dataclasses
    import hashlib
    import shutil

    from clamp_track import weights

    monkeypatch.setenv("CLAMP_TRACK_CACHE", str(tmp_path))
    target = tmp_path / "detector" / "MDV6-mit-yolov9-c.ckpt"
    target.parent.mkdir()
    shutil.copy(v9s_ckpt[1], target)
    with pytest.raises(CheckpointError, match="md5 does not match.*delete it and fetch it"):
        weights.fetch_file("MDV6-mit-yolov9-c")  # random weights are not the real file
    md5 = hashlib.md5(target.read_bytes()).hexdigest()
    entry = dataclasses.replace(weights.REGISTRY["MDV6-mit-yolov9-c"], md5=md5)
    monkeypatch.setitem(weights.REGISTRY, "MDV6-mit-yolov9-c", entry)
    assert weights.fetch_file("MDV6-mit-yolov9-c") == target
    detector = make_detector("megadetector", device="cpu")  # "auto" finds the cached file
    assert detector.model is not None
    # a SHA-256 recorded at the first fetch is checked as well
    (target.parent / (target.name + ".sha256")).write_text("0" * 64 + "  x\n")
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        weights.fetch_file("MDV6-mit-yolov9-c")


# -------------------------------------------------------------------------------- whole run


def _constant_head(model) -> None:
    """Make the head's output ignore the image.

    Every anchor point becomes a confident animal with the same box shape, so each frame yields
    the same boxes and they track.
    """
    for head in model.model[-1].heads:
        with torch.no_grad():
            head.class_conv[-1].weight.zero_()
            head.class_conv[-1].bias.copy_(torch.tensor([5.0, -10.0, -10.0]))
            head.anchor_conv[-1].weight.zero_()
            head.anchor_conv[-1].bias.zero_()


def test_clamp_track_run_with_the_megadetector(shared_data, tmp_path, monkeypatch):
    """``clamp-track run --detector megadetector`` on a real clip, detector frames batched."""
    from clamp_track.cli import main
    from clamp_track.io.store import ResultStore
    from clamp_track.models.yolov9 import YoloV9

    torch.manual_seed(1)
    model = build_yolov9("v9-s")
    _constant_head(model)
    ckpt = save_lightning_ckpt(model, tmp_path / "MDV6-mit-yolov9-c.ckpt")

    batches = []
    forward = YoloV9.forward

    def spy(self, images):
        batches.append(tuple(images.shape))
        return forward(self, images)

    monkeypatch.setattr(YoloV9, "forward", spy)
    video = shared_data / COWS
    rc = main(["run", str(video), "-o", str(tmp_path), "--detector", "megadetector",
               "--detector-model", "MDV6-mit-yolov9-c", "--pose-model", "clamp_tiny_rn50",
               "--pose-weights", "none", "--end", "6", "--detect-every", "3", "--export", "csv",
               "--device", "cpu", "--set", f"detect.options.weights={ckpt}",
               "detect.options.max_boxes=2", "detect.options.batch_size=4",
               "tracker.min_track_length=1"])
    assert rc == 0
    assert batches == [(2, 3, 640, 640)]  # frames 0 and 3 in one forward pass
    resolved = (tmp_path / "config.resolved.yaml").read_text()
    assert "megadetector" in resolved and "MDV6-mit-yolov9-c" in resolved
    with ResultStore.open(tmp_path / "cows_480p_24fps.mp4.clamp.sqlite", readonly=True) as store:
        assert store.complete and store.last_frame() == 5
        boxes = [store.track(t)["boxes"] for t in store.track_ids()]
    assert len(boxes) == 2  # max_boxes=2 boxes, the same in every frame: two tracks
    for b in boxes:
        assert len(b) == 6 and (b[:, [0, 2]] <= 854).all() and (b[:, [1, 3]] <= 480).all()
        assert (b >= 0).all()
    rows = list(csv.DictReader(open(next(tmp_path.glob("*.clamp.csv")))))
    assert {int(r["frame"]) for r in rows} == set(range(6))
