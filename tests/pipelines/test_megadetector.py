"""MegaDetector in-process: geometry, classes, NMS, weights files, the whole run.

v6 MIT (YOLOv9), v6 Apache (RT-DETRv2) and v5a (YOLOv5). No MegaDetector weights can be
downloaded here: the tests build the layouts with random weights, save them in the file formats
the real weights have (Lightning ``.ckpt``, RT-DETR training ``.pth``, pickled yolov5 model) and
load those through the same code a user's download goes through.
"""

from __future__ import annotations

import csv
import re
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
    ((kept, scores, cls),) = md.postprocess(logits.sigmoid(), boxes, 0.2, 0.5, 300)
    assert cls.tolist() == [0, 1]
    np.testing.assert_allclose(scores.numpy(), torch.sigmoid(torch.tensor([3.0, 1.0])).numpy())
    assert kept[0].tolist() == [0, 0, 100, 100]
    ((kept, _, _),) = md.postprocess(logits.sigmoid(), boxes, 0.1, 0.5, 1)
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
    # as the command line gives it: --set 'detect.options.classes=[animal,person]'
    from clamp_track.config import from_dict, parse_overrides
    from clamp_track.pipelines.run import RunConfig

    settings = parse_overrides(["detect.name=megadetector",
                                "detect.options.classes=[animal,person]",
                                "detect.options.weights=null", "detect.options.max_boxes=5"])
    detect = from_dict(RunConfig, settings).detect
    both = make_detector("megadetector", **detect.backend_options(Path("v.mp4"), "cpu"))
    _person_everywhere(both)
    (found,) = both.detect([frame])
    assert both.class_names == {0: "animal", 1: "person"}
    assert 1 <= len(found) <= 5 and set(found.class_ids.tolist()) == {1}
    assert (found.boxes[:, [0, 2]] <= 854).all() and (found.boxes[:, [1, 3]] <= 480).all()
    assert (found.boxes >= 0).all() and (found.scores > 0.99).all()


def test_bad_options_are_one_line_errors():
    with pytest.raises(InputError, match="MegaDetector knows"):
        make_detector("megadetector", classes=("cat",))
    with pytest.raises(InputError, match="unknown MegaDetector model 'v7'") as err:
        make_detector("megadetector", model="v7")
    assert "\n" not in str(err.value) and "MDV6-apa-rtdetr-c" in str(err.value)


# ---------------------------------------------------------------------------- weights files


def test_the_lightning_checkpoint_loads_exactly(v9s_ckpt):
    model, path = v9s_ckpt
    detector = make_detector("megadetector", weights=str(path), device="cpu",
                             score_threshold=0.0)
    x = torch.rand(2, 3, 256, 256)  # any multiple of 32 runs; 640 is what the detector feeds
    with torch.inference_mode():
        expected, got = model.eval()(x), detector.model(x)
    # the detector folds BatchNorm into the convolutions: equal up to float rounding
    torch.testing.assert_close(got[0], expected[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[1], expected[1], atol=1e-3, rtol=1e-4)
    # the same file is the v9-s layout: asking for the v9-c variant names the mismatch
    with pytest.raises(CheckpointError, match=r"MDV6-c.ckpt: does not fit YOLOv9 v9-c \(the "
                                              r"file is the v9-s layout"):
        make_detector("megadetector", model="MDV6-mit-yolov9-e", weights=str(path),
                      device="cpu")


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


def plant(marker: str) -> None:
    """What a malicious pickle would call: leaves a file behind if it ever runs."""
    Path(marker).write_text("code from the weights file ran")


class Payload:
    """Unpickles as a call of ``call(*args)`` (how a pickle runs code when loaded)."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def test_loading_a_weights_file_never_runs_code_from_it(tmp_path, v9s_ckpt):
    import os

    model, _ = v9s_ckpt
    marker = tmp_path / "ran"
    # a call to a function of any module becomes an inert stand-in: the file loads, nothing runs
    path = save_lightning_ckpt(model, tmp_path / "MDV6-c.ckpt")
    data = torch.load(path, weights_only=False)
    data["callbacks"] = {"x": Payload(plant, str(marker))}
    torch.save(data, path)
    detector = make_detector("megadetector", weights=str(path), device="cpu")
    assert detector.model is not None and not marker.exists()
    # calls of code-running modules are refused with one line naming them
    for call, args in ((os.system, (f"touch {marker}",)),
                       (exec, (f"open({str(marker)!r}, 'w')",))):
        data["callbacks"] = {"x": Payload(call, *args)}
        torch.save(data, path)
        calls = r"refused, its pickle calls (posix\.system|nt\.system|builtins\.exec)"
        with pytest.raises(CheckpointError, match=calls) as err:
            make_detector("megadetector", weights=str(path), device="cpu")
        assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert not marker.exists()


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


# --------------------------------------------------------------------- MegaDetector v5a


@pytest.mark.parametrize("width, height, box, size, shape", [
    (1280, 720, (900, 100, 1100, 400), 1280, (768, 1344)),   # MD v5's sizes for 720p
    (854, 480, (10, 300, 200, 470), 1280, (768, 1344)),      # enlarged to a 1280 long side
    (1920, 1080, (1500, 700, 1910, 1070), 1280, (768, 1344)),
    (480, 854, (40, 600, 300, 820), 1280, (1344, 768)),      # portrait
    (1280, 720, (900, 100, 1100, 400), 640, (448, 704)),     # image_size=640
])
def test_v5_letterbox_maps_a_drawn_box_back_within_a_pixel(width, height, box, size, shape):
    frame = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    frame[y1:y2, x1:x2] = 255
    batch, geometry = md.letterbox_v5([frame], size)
    assert batch.shape[1:3] == shape and max(geometry.size) == size
    image = batch[0, ..., 0].astype(int)
    assert image[0, 0] == 114 and image[-1, -1] == 114
    rows, cols = np.nonzero(image > 127)
    found = np.array([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]])
    np.testing.assert_allclose(geometry.to_frame(found)[0], box, atol=1.0)


def test_v5_scores_are_objectness_times_class_with_one_class_per_box():
    raw = torch.tensor([[[50.0, 60.0, 20.0, 10.0, 0.5, 0.9, 0.8, 0.1],
                         [10.0, 10.0, 4.0, 4.0, 0.1, 0.2, 0.7, 0.0]]])
    scores, boxes = md.v5_scores(raw)
    torch.testing.assert_close(scores, torch.tensor([[[0.45, 0.0, 0.0], [0.0, 0.07, 0.0]]]))
    torch.testing.assert_close(boxes[0, 0], torch.tensor([40.0, 55.0, 60.0, 65.0]))


def tiny_v5_yaml() -> dict:
    """YOLOv5x6's layout at a small width and depth (the file format is what is tested)."""
    from clamp_track.models.yolov5 import YOLOV5X6

    return {**YOLOV5X6, "depth_multiple": 0.33, "width_multiple": 0.125}


def save_yolov5_pt(model, path: Path, monkeypatch, names=("animal", "person", "vehicle")):
    """Save ``model`` as ultralytics/yolov5 saves MegaDetector v5a: a pickled model object.

    The classes are renamed to yolov5's (``models.yolo.Model``, ``models.common.C3``...), which
    exist only while saving, so loading must not need them.
    """
    import copy
    import sys
    import types

    from clamp_track.models import yolov5

    fake = {"models": types.ModuleType("models"), "models.yolo": types.ModuleType("models.yolo"),
            "models.common": types.ModuleType("models.common")}
    for name, module in fake.items():
        monkeypatch.setitem(sys.modules, name, module)
    classes = {}
    for cls, where in ((yolov5.Conv, "common"), (yolov5.C3, "common"),
                       (yolov5.Bottleneck, "common"), (yolov5.SPPF, "common"),
                       (yolov5.Concat, "common"), (yolov5.Detect, "yolo")):
        classes[cls] = type(cls.__name__, (cls,), {"__module__": f"models.{where}"})
        setattr(fake[f"models.{where}"], cls.__name__, classes[cls])
    model = copy.deepcopy(model).half()
    for module in model.modules():
        if type(module) in classes:
            module.__class__ = classes[type(module)]
        elif isinstance(module, yolov5.Upsample):
            module.__class__ = torch.nn.Upsample
    head = model.model[-1]
    stride = head._buffers.pop("stride").float()
    head.__dict__["stride"] = stride  # a plain attribute in yolov5's Detect
    root_cls = type("Model", (torch.nn.Module,), {"__module__": "models.yolo"})
    fake["models.yolo"].Model = root_cls
    root = root_cls()
    root.model = torch.nn.Sequential(*model.model)
    root.yaml, root.stride, root.names = tiny_v5_yaml(), stride, list(names)
    torch.save({"epoch": -1, "best_fitness": None, "model": root, "ema": None, "updates": None,
                "optimizer": None, "date": "2022-06-15"}, path)
    return path


def test_the_pickled_yolov5_model_file_loads_without_yolov5(tmp_path, monkeypatch):
    from clamp_track.models.yolov5 import build_yolov5

    torch.manual_seed(0)
    model = build_yolov5(tiny_v5_yaml())
    path = save_yolov5_pt(model, tmp_path / "md_v5a.0.0.pt", monkeypatch)
    monkeypatch.undo()  # yolov5's module names are gone again
    detector = make_detector("megadetector", model="MDv5a", weights=str(path), device="cpu",
                             score_threshold=0.0, max_boxes=3, image_size=640)
    x = torch.rand(1, 3, 256, 320)
    with torch.inference_mode():
        expected = model.half().float()(x)
        got = detector.model(x)
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-3)
    frame = Frame(0, 0.0, np.random.default_rng(0).integers(0, 255, (480, 854, 3), np.uint8))
    (found,) = detector.detect([frame])
    assert 1 <= len(found) <= 3 and set(found.class_ids.tolist()) <= {0}
    assert (found.boxes >= 0).all() and (found.boxes[:, [0, 2]] <= 854).all()


def test_the_pickled_yolov5_file_runs_none_of_its_code(tmp_path, monkeypatch):
    from clamp_track.models.yolov5 import build_yolov5

    path = save_yolov5_pt(build_yolov5(tiny_v5_yaml()), tmp_path / "md_v5a.0.0.pt", monkeypatch)
    marker = tmp_path / "ran"
    data = torch.load(path, weights_only=False)  # a test may; clamp-track never does
    data["model"].payload = Payload(plant, str(marker))  # inside the pickled model object
    torch.save(data, path)
    monkeypatch.undo()  # yolov5's module names are gone again
    detector = make_detector("megadetector", model="MDv5a", weights=str(path), device="cpu",
                             image_size=256)
    assert detector.model is not None and not marker.exists()


def test_a_yolov5_file_of_another_kind_is_refused(tmp_path, monkeypatch, v9s_ckpt):
    from clamp_track.models.yolov5 import build_yolov5

    coco = save_yolov5_pt(build_yolov5(tiny_v5_yaml()), tmp_path / "yolov5s.pt", monkeypatch,
                          names=("person", "bicycle", "car"))
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="classes.*not MegaDetector's"):
        make_detector("megadetector", model="MDv5a", weights=str(coco), device="cpu")
    with pytest.raises(CheckpointError, match="not a YOLOv5 / MegaDetector v5 model file"):
        make_detector("megadetector", model="MDv5a", weights=str(v9s_ckpt[1]), device="cpu")


# ------------------------------------------------------------- MegaDetector v6 Apache (RT-DETR)
#
# Facts from PytorchWildlife (microsoft/CameraTraps @ 4077ae2, models/detection/rtdetr_apache):
# MDV6-apa-rtdetr-c = rtdetrv2_r18vd_120e_megadetector.yml, -e = rtdetrv2_r101vd_6x_megadetector.yml
# (the first tuple below follows from those configs and the RT-DETRv2 sources it vendors); the
# checkpoint is RT-DETR's training state, from which PytorchWildlife loads ``ema.module``.


def save_rtdetr_pth(model: torch.nn.Module, path: Path, frozen_backbone: bool = False) -> Path:
    """Save ``model`` as RT-DETR's training saves it (the MDV6-apa-rtdetr-*.pth format).

    ``ema.module`` holds the weights PytorchWildlife uses; ``model`` holds other (non-EMA) values,
    so that a loader taking the wrong one is caught. With ``frozen_backbone`` (the -e file:
    ``FrozenBatchNorm2d`` in the backbone) the backbone has no ``num_batches_tracked``.
    """
    import collections

    ema = {k: v.clone() for k, v in model.state_dict().items()
           if not (frozen_backbone and k.startswith("backbone.")
                   and k.endswith("num_batches_tracked"))}
    raw = {k: (v + 0.5 if v.is_floating_point() and "anchors" not in k else v.clone())
           for k, v in ema.items()}
    torch.save({"date": "2025-05-12T10:00:00", "last_epoch": 119, "model": raw,
                "ema": {"module": ema, "updates": 123456},
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
                "lr_scheduler": {"milestones": collections.Counter({1000: 1}), "gamma": 0.1},
                "lr_warmup_scheduler": {"warmup_duration": 2000, "last_step": 99}}, path)
    return path


def _randomised_norms(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():  # running statistics too, so that loading them is checked
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def rtdetr_c_pth(tmp_path_factory):
    from clamp_track.models.rtdetr import build_rtdetr

    torch.manual_seed(0)
    model = _randomised_norms(build_rtdetr("r18vd"))
    return model, save_rtdetr_pth(model, tmp_path_factory.mktemp("rt") / "MDV6-apa-rtdetr-c.pth")


# (name, shape) of tensors the real files hold, from the configs and sources named above
R18VD_TENSORS = {
    "backbone.conv1.conv1_1.conv.weight": (32, 3, 3, 3),         # "vd" stem: 3 x 3 convs
    "backbone.conv1.conv1_3.norm.running_var": (64,),
    "backbone.res_layers.0.blocks.0.short.conv.weight": (64, 64, 1, 1),   # unstrided projection
    "backbone.res_layers.1.blocks.0.short.conv.conv.weight": (128, 64, 1, 1),  # pool + conv
    "backbone.res_layers.3.blocks.1.branch2b.conv.weight": (512, 512, 3, 3),
    "encoder.input_proj.2.conv.weight": (256, 512, 1, 1),
    "encoder.encoder.0.layers.0.self_attn.in_proj_weight": (768, 256),
    "encoder.encoder.0.layers.0.linear1.weight": (1024, 256),   # dim_feedforward 1024
    "encoder.fpn_blocks.0.conv1.conv.weight": (128, 512, 1, 1),  # expansion 0.5
    "encoder.fpn_blocks.0.bottlenecks.2.conv2.conv.weight": (128, 128, 1, 1),
    "encoder.pan_blocks.1.conv3.conv.weight": (256, 128, 1, 1),
    "encoder.lateral_convs.1.conv.weight": (256, 256, 1, 1),
    "encoder.downsample_convs.0.conv.weight": (256, 256, 3, 3),
    "decoder.input_proj.0.conv.weight": (256, 256, 1, 1),
    "decoder.decoder.layers.2.cross_attn.sampling_offsets.weight": (192, 256),  # 8 x 3 x 4 x 2
    "decoder.decoder.layers.2.cross_attn.attention_weights.bias": (96,),
    "decoder.decoder.layers.2.cross_attn.num_points_scale": (12,),
    "decoder.decoder.layers.0.linear1.weight": (1024, 256),
    "decoder.denoising_class_embed.weight": (4, 256),            # 3 classes + padding
    "decoder.query_pos_head.layers.0.weight": (512, 4),
    "decoder.enc_output.norm.weight": (256,),
    "decoder.enc_score_head.weight": (3, 256),
    "decoder.dec_score_head.2.weight": (3, 256),
    "decoder.dec_bbox_head.2.layers.2.weight": (4, 256),
    "decoder.anchors": (1, 8400, 4),                             # 80^2 + 40^2 + 20^2 cells
    "decoder.valid_mask": (1, 8400, 1),
}


def test_the_real_rtdetr_layouts_have_the_tensors_of_the_real_files():
    from clamp_track.models.rtdetr import build_rtdetr

    c = build_rtdetr("r18vd").state_dict()
    for name, shape in R18VD_TENSORS.items():
        assert tuple(c[name].shape) == shape, name
    # two blocks per stage, three decoder layers; no learnt query content
    assert not any(".blocks.2." in k for k in c)
    assert "decoder.decoder.layers.3.norm1.weight" not in c
    assert not any("tgt_embed" in k or "pos_embed" in k for k in c)
    # tensors in RT-DETRv2's own build of the two configs (its modules, at 4077ae2): 538 for -c
    # (69 of them BatchNorm counters), 999 for -e (42 counters: its backbone norms are frozen)
    without = [k for k in c if not k.endswith("num_batches_tracked")]
    assert len(c) == 538 and len(without) == 469
    assert torch.equal(c["decoder.decoder.layers.0.cross_attn.num_points_scale"],
                       torch.full((12,), 0.25))
    e = build_rtdetr("r101vd")
    e_state = e.state_dict()
    assert len([k for k in e_state if not k.endswith("num_batches_tracked")]) == 957
    # ResNet-101: 23 bottlenecks in the third stage, 4 x width out
    last = e_state["backbone.res_layers.2.blocks.22.branch2c.conv.weight"]
    assert last.shape == (1024, 256, 1, 1)
    assert "backbone.res_layers.2.blocks.23.branch2a.conv.weight" not in e_state
    assert e_state["encoder.input_proj.2.conv.weight"].shape == (384, 2048, 1, 1)
    assert e_state["encoder.encoder.0.layers.0.linear1.weight"].shape == (2048, 384)
    assert e_state["decoder.input_proj.0.conv.weight"].shape == (256, 384, 1, 1)
    assert "decoder.dec_score_head.5.weight" in e_state
    assert "encoder.fpn_blocks.0.conv3.conv.weight" not in e_state  # expansion 1.0: no conv3
    # the model zoo lists 20 M and 76 M parameters (whole millions)
    params = [sum(p.numel() for p in m.parameters()) / 1e6 for m in (build_rtdetr("r18vd"), e)]
    assert int(params[0]) == 20 and int(params[1]) == 76


def test_the_rtdetr_checkpoint_loads_its_ema_weights_exactly(rtdetr_c_pth):
    from clamp_track.models.rtdetr import build_rtdetr

    model, path = rtdetr_c_pth
    loaded = md.load_megadetector("MDV6-apa-rtdetr-c", path)
    x = torch.rand(1, 3, 320, 320)  # the detector feeds 640; any multiple of 32 runs
    with torch.inference_mode():
        expected, got = model.eval()(x), loaded(x)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    # the detector folds BatchNorm and merges RepVGG branches: the maps are equal up to rounding
    detector = make_detector("megadetector", model="MDV6-apa-rtdetr-c", weights=str(path),
                             device="cpu")
    with torch.inference_mode():
        maps = model.encoder(model.backbone(x))
        fused = detector.model.encoder(detector.model.backbone(x))
    for a, b in zip(maps, fused):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in detector.model.modules())
    # the -e layout: frozen backbone norms (no counters) load too (in memory: the file would be
    # 600 MB, and its format is the one above)
    from clamp_track.models import rtdetr

    torch.manual_seed(1)
    e = build_rtdetr("r101vd")
    ema = {k: v for k, v in e.state_dict().items()
           if not (k.startswith("backbone.") and k.endswith("num_batches_tracked"))}
    assert len(ema) == 999  # as RT-DETRv2's own build of the -e config
    loaded_e = build_rtdetr("r101vd")
    rtdetr.load_rtdetr_state(loaded_e, rtdetr.rtdetr_state({"ema": {"module": ema}}, "e.pth"),
                             "e.pth")
    for k, v in ema.items():
        assert torch.equal(loaded_e.state_dict()[k], v), k


def test_a_wrong_rtdetr_file_is_refused_with_one_line(rtdetr_c_pth, v9s_ckpt, tmp_path):
    _, path = rtdetr_c_pth
    cases = [
        ("MDV6-apa-rtdetr-e", path, r"does not fit RT-DETR r101vd \(the file is the r18vd layout"),
        ("MDV6-apa-rtdetr-c", v9s_ckpt[1], "not an RT-DETR checkpoint: its keys look like"),
    ]
    text = tmp_path / "page.pth"
    text.write_text("<html>Zenodo is down</html>")
    cases.append(("MDV6-apa-rtdetr-c", text, "not a readable PyTorch checkpoint"))
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    cases.append(("MDV6-apa-rtdetr-c", listed, "not an RT-DETR checkpoint: holds a list"))
    for variant, bad, message in cases:
        with pytest.raises(CheckpointError, match=message) as err:
            make_detector("megadetector", model=variant, weights=str(bad), device="cpu")
        assert "\n" not in str(err.value) and str(bad) in str(err.value)
        assert re.search("; (pass|delete it and fetch it again)", str(err.value))  # the fix


def test_the_rtdetr_file_runs_none_of_its_code(rtdetr_c_pth, tmp_path):
    model, _ = rtdetr_c_pth
    marker = tmp_path / "ran"
    path = save_rtdetr_pth(model, tmp_path / "MDV6-apa-rtdetr-c.pth")
    data = torch.load(path, weights_only=False)  # a test may; clamp-track never does
    data["optimizer"]["hook"] = Payload(plant, str(marker))
    torch.save(data, path)
    assert md.load_megadetector("MDV6-apa-rtdetr-c", path) is not None
    assert not marker.exists()


def test_rtdetr_input_is_pytorchwildlifes_plain_resize():
    """As PytorchWildlife: torchvision ``Resize((640, 640))`` then ``ToTensor`` on the PIL image."""
    from PIL import Image
    from torchvision import transforms

    frame = np.random.default_rng(3).integers(0, 255, (480, 854, 3), np.uint8)
    frame[100:200, 300:500] = 255  # edges, where interpolations differ most
    batch, geometry = md.stretch([frame, frame])
    reference = transforms.Compose([transforms.Resize((640, 640)), transforms.ToTensor()])
    expected = reference(Image.fromarray(frame))  # (3, 640, 640) in [0, 1]
    got = torch.from_numpy(batch[1]).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert (geometry.pad_left, geometry.pad_top, geometry.size) == (0, 0, (640, 640))
    with pytest.raises(ValueError, match="same size"):
        md.stretch([frame, frame[:10]])


class FixedRTDETR(torch.nn.Module):
    """Stands for the network: fixed class logits (Q, 3) and normalised cx, cy, w, h (Q, 4)."""

    def __init__(self, logits, boxes):
        super().__init__()
        self.logits, self.boxes, self.seen = logits, boxes, []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        b = x.shape[0]
        return self.logits.expand(b, -1, -1), self.boxes.expand(b, -1, -1)


def _rtdetr_detector(logits, boxes, **options):
    detector = make_detector("megadetector", model="MDV6-apa-rtdetr-c", weights=None,
                             device="cpu", **options)
    detector.model = FixedRTDETR(logits, boxes)
    return detector


def _normalised_cxcywh(box, width, height):
    x1, y1, x2, y2 = box
    return [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width,
            (y2 - y1) / height]


@pytest.mark.parametrize("width, height", [(1280, 720), (480, 854), (854, 480)])
def test_rtdetr_boxes_map_back_to_frame_pixels(width, height):
    animal = (0.31 * width, 0.22 * height, 0.58 * width, 0.9 * height)
    person = (5.0, 7.0, 0.2 * width, 0.3 * height)
    q = 300
    logits = torch.full((1, q, 3), -10.0)
    boxes = torch.full((1, q, 4), 0.5)
    logits[0, 7, 0], boxes[0, 7] = 2.0, torch.tensor(_normalised_cxcywh(animal, width, height))
    logits[0, 40, 1], boxes[0, 40] = 3.0, torch.tensor(_normalised_cxcywh(person, width, height))
    frame = Frame(0, 0.0, np.zeros((height, width, 3), np.uint8))
    (found,) = _rtdetr_detector(logits, boxes).detect([frame])
    assert found.class_ids.tolist() == [0]  # animals only by default
    np.testing.assert_allclose(found.boxes[0], animal, atol=1.0)
    np.testing.assert_allclose(found.scores, [torch.sigmoid(torch.tensor(2.0)).item()], rtol=1e-6)
    both = _rtdetr_detector(logits, boxes, classes=("animal", "person"))
    (found,) = both.detect([frame, frame])[1:]
    assert found.class_ids.tolist() == [1, 0]  # sorted by score
    np.testing.assert_allclose(found.boxes, [person, animal], atol=1.0)
    assert both.model.seen == [(2, 3, 640, 640)]  # the batch in one forward pass


def test_rtdetr_keeps_the_best_300_query_class_pairs_and_applies_no_nms():
    q = 300
    logits = torch.full((1, q, 3), -10.0)
    boxes = torch.tensor([0.5, 0.5, 0.2, 0.2]).repeat(1, q, 1)  # all the same box
    logits[0, :, 1] = 3.0   # every query a confident person (0.95) ...
    logits[0, :, 0] = 2.0   # ... and an animal (0.88): 600 pairs above 0.2, 300 kept, all persons
    frame = Frame(0, 0.0, np.zeros((480, 854, 3), np.uint8))
    (animals,) = _rtdetr_detector(logits, boxes).detect([frame])
    assert len(animals) == 0
    logits[0, :150, 1] = -10.0  # now 150 persons and 300 animals compete for 300 places
    (found,) = _rtdetr_detector(logits, boxes, classes=("animal", "person")).detect([frame])
    assert sorted(np.bincount(found.class_ids).tolist()) == [150, 150]
    # identical boxes are all kept (no NMS); max_boxes keeps the best; the threshold is exclusive
    (few,) = _rtdetr_detector(logits, boxes, classes=("person",), max_boxes=4).detect([frame])
    assert len(few) == 4 and set(few.class_ids.tolist()) == {1}
    logits[0, :, :] = -10.0
    logits[0, 0, 0] = 0.0  # sigmoid 0.5
    (none,) = _rtdetr_detector(logits, boxes, score_threshold=0.5).detect([frame])
    assert len(none) == 0
    # an IoU given on purpose adds per-class NMS
    logits[0, :3, 0] = 1.0
    (nms,) = _rtdetr_detector(logits, boxes, iou_threshold=0.5).detect([frame])
    assert len(nms) == 1


def test_rtdetr_weights_by_name_offline_say_where_to_put_the_file(tmp_path, monkeypatch):
    from clamp_track import weights

    monkeypatch.setenv("CLAMP_TRACK_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for variant in ("MDV6-apa-rtdetr-c", "MDV6-apa-rtdetr-e"):
        with pytest.raises(CheckpointError) as err:
            make_detector("megadetector", model=variant, device="cpu")
        text = str(err.value)
        assert "\n" not in text and str(tmp_path / "detector" / f"{variant}.pth") in text
        assert f"https://zenodo.org/records/15398270/files/{variant}.pth" in text
        assert weights.REGISTRY[variant].licence == "Apache-2.0"


def test_clamp_track_run_with_the_rtdetr_megadetector(shared_data, tmp_path, monkeypatch):
    """``clamp-track run --detector-model MDV6-apa-rtdetr-c`` on a real clip.

    The real network runs (random weights, from a .pth file); its output is then replaced by two
    fixed animals, so that the boxes in the store can be checked in frame pixels.
    """
    from clamp_track.cli import main
    from clamp_track.io.store import ResultStore
    from clamp_track.models.rtdetr import RTDETR, build_rtdetr

    torch.manual_seed(2)
    ckpt = save_rtdetr_pth(build_rtdetr("r18vd"), tmp_path / "MDV6-apa-rtdetr-c.pth")
    width, height = 854, 480
    fixed = [(100.0, 50.0, 300.0, 400.0), (500.0, 120.0, 800.0, 470.0)]
    batches = []
    forward = RTDETR.forward

    def spy(self, images):
        logits, boxes = forward(self, images)
        batches.append((tuple(images.shape), tuple(logits.shape), tuple(boxes.shape)))
        logits = torch.full_like(logits, -10.0)
        logits[:, :2, 0] = 5.0
        boxes = boxes.clone()
        boxes[:, :2] = torch.tensor([_normalised_cxcywh(b, width, height) for b in fixed])
        return logits, boxes

    monkeypatch.setattr(RTDETR, "forward", spy)
    rc = main(["run", str(shared_data / COWS), "-o", str(tmp_path), "--detector", "megadetector",
               "--detector-model", "MDV6-apa-rtdetr-c", "--pose-model", "clamp_tiny_rn50",
               "--pose-weights", "none", "--end", "6", "--detect-every", "3", "--export", "csv",
               "--device", "cpu", "--set", f"detect.options.weights={ckpt}",
               "detect.options.batch_size=4", "tracker.min_track_length=1"])
    assert rc == 0
    assert batches == [((2, 3, 640, 640), (2, 300, 3), (2, 300, 4))]  # frames 0 and 3 together
    assert "MDV6-apa-rtdetr-c" in (tmp_path / "config.resolved.yaml").read_text()
    with ResultStore.open(tmp_path / "cows_480p_24fps.mp4.clamp.sqlite", readonly=True) as store:
        assert store.complete and store.last_frame() == 5
        tracks = [store.track(t)["boxes"] for t in store.track_ids()]
    assert len(tracks) == 2
    for b in tracks:  # detected frames hold the fixed boxes, in frame pixels
        assert len(b) == 6
        (match,) = [f for f in fixed if np.allclose(b[0], f, atol=1.0)]
        np.testing.assert_allclose(b[3], match, atol=1.0)
    rows = list(csv.DictReader(open(next(tmp_path.glob("*.clamp.csv")))))
    assert {int(r["frame"]) for r in rows} == set(range(6))
