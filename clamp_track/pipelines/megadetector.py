"""MegaDetector as an in-process detector: ``--detector megadetector``.

MegaDetector finds ``animal``, ``person`` and ``vehicle`` in camera-trap images. This backend
runs the MIT-licensed v6 weights with clamp-track's own YOLOv9 (:mod:`clamp_track.models.yolov9`),
the Apache-2.0 v6 weights with its own RT-DETRv2 (:mod:`clamp_track.models.rtdetr`) and
MegaDetector v5a with its own YOLOv5 (:mod:`clamp_track.models.yolov5`), so neither
PytorchWildlife, the megadetector package, yolov5 nor ultralytics is needed.

MegaDetector v6 MIT (``MDV6-mit-yolov9-c`` / ``-e``), as PytorchWildlife 1.3.0 runs them
(``yolo_mit``):

* letterbox: the frame is resized (Pillow, Lanczos) to fit 640 x 640 keeping its aspect
  (``scale = min(640 / w, 640 / h)``, new size truncated to whole pixels), centred on a grey
  (114, 114, 114) canvas, RGB in [0, 1];
* the network's boxes are mapped back with ``(box - (pad_left, pad_top)) / factor`` (each axis
  by its own resize factor) and clipped to the frame;
* scores are ``sigmoid(logit)`` per class; boxes above the threshold go through per-class NMS
  (IoU 0.5, at most 300 boxes per image, MIT YOLO's inference settings).

MegaDetector v6 Apache (``MDV6-apa-rtdetr-c`` / ``-e``), as PytorchWildlife runs them
(``rtdetr_apache``, ``microsoft/CameraTraps`` @ ``4077ae2``):

* plain resize, no letterbox: the frame is resized (Pillow, bilinear: torchvision's
  ``Resize((640, 640))`` on a PIL image) to 640 x 640 whatever its aspect, RGB in [0, 1], no
  normalisation;
* scores are ``sigmoid(logit)`` of each query and class; the best 300 (query, class) pairs of
  the 300 x 3 are kept (``RTDETRPostProcessor``, ``num_top_queries`` 300; a query may so give
  boxes of two classes), then those above the threshold. No NMS;
* the network's normalised ``cx, cy, w, h`` boxes become ``x1, y1, x2, y2`` times the frame's
  width and height.

MegaDetector v5a (``MDv5a``), as the megadetector package 10.0.28 runs it
(``pytorch_detector.py``, its default, non-"classic" mode):

* the frame is resized (OpenCV, area when shrinking, bilinear when enlarging) so that its long
  side is 1280, then padded with grey to ``ceil(side / 64 + 0.5) * 64`` on each axis, centred;
* score = objectness x class probability, one class per box (the best), per-class NMS at IoU 0.6,
  at most 300 boxes.

One deliberate difference for the letterboxed ones (v6 MIT, v5a): boxes whose centre lies on the
grey padding are dropped before NMS (the network sometimes fires there; the reference code keeps
them, outside the image). The RT-DETR input has no padding. For all, boxes are clipped to the
frame (PytorchWildlife leaves RT-DETR boxes unclipped).

All frames of a batch have the video's size, so one letterbox geometry serves the whole batch and
the frames go through the network together.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clamp_track.errors import InputError
from clamp_track.types import Detections, Frame

log = logging.getLogger(__name__)

#: MegaDetector's categories, by class index of the network (``"1"``, ``"2"``, ``"3"`` in its
#: batch-output JSON).
MD_CLASSES = ("animal", "person", "vehicle")


@dataclass(frozen=True)
class Variant:
    """An offered MegaDetector.

    Attributes:
        family: ``"yolov9"`` (MIT YOLO layout), ``"rtdetr"`` (RT-DETRv2) or ``"yolov5"``.
        layout: The YOLOv9 layout (``v9-s``, ``v9-c``) or the RT-DETR one (``r18vd``,
            ``r101vd``); for YOLOv5, the file brings its own.
        iou: MegaDetector's NMS IoU for it; ``None``: no NMS (RT-DETR).
        description: One line.
    """

    family: str
    layout: str | None
    iou: float | None
    description: str


#: Offered variants, by the names MegaDetector / PytorchWildlife use (their weights, with
#: licence and checksums, are entries of :data:`clamp_track.weights.REGISTRY`).
MEGADETECTOR_MODELS = {
    "MDV6-mit-yolov9-c": Variant("yolov9", "v9-s", 0.5,
                                 "MegaDetector v6 compact, MIT YOLOv9 (v9-s layout), 640 px"),
    "MDV6-mit-yolov9-e": Variant("yolov9", "v9-c", 0.5,
                                 "MegaDetector v6 extra, MIT YOLOv9 (v9-c layout), 640 px"),
    "MDV6-apa-rtdetr-c": Variant("rtdetr", "r18vd", None,
                                 "MegaDetector v6 compact, Apache RT-DETRv2 (ResNet-18vd), 640 px"),
    "MDV6-apa-rtdetr-e": Variant("rtdetr", "r101vd", None,
                                 "MegaDetector v6 extra, Apache RT-DETRv2 (ResNet-101vd), 640 px"),
    "MDv5a": Variant("yolov5", None, 0.6, "MegaDetector v5a, YOLOv5x6, 1280 px"),
}
#: ``--detector-model`` aliases, as for the torchvision detector.
ALIASES = {"fast": "MDV6-mit-yolov9-c", "accurate": "MDV6-apa-rtdetr-c"}
INPUT_SIZE = 640
#: (query, class) pairs an RT-DETR keeps before thresholding (PytorchWildlife's
#: ``RTDETRPostProcessor.num_top_queries``).
RTDETR_TOP = 300
V5_SIZE, V5_STRIDE = 1280, 64
PAD_VALUE = 114


@dataclass(frozen=True)
class MegaDetectorConfig:
    """Settings of the MegaDetector backend.

    Attributes:
        model: A variant of :data:`MEGADETECTOR_MODELS`, or ``fast`` / ``accurate``.
        weights: ``"auto"`` (the registry's file, fetched once and checked), a path to the
            variant's file (``MDV6-mit-*.ckpt``, ``MDV6-apa-rtdetr-*.pth``, ``md_v5a.0.0.pt``),
            or ``None`` for random weights (tests only).
        score_threshold: Boxes below this confidence are dropped (MegaDetector's own
            conventions: 0.2 for most uses, 0.1-0.15 to miss fewer animals, 0.005 is what its
            batch files keep).
        iou_threshold: NMS overlap threshold (per class); ``None``: MegaDetector's for the
            variant (0.5 for the MIT YOLOv9 ones, 0.6 for v5a, no NMS for the RT-DETR ones;
            a value given for those adds a per-class NMS).
        max_boxes: Most boxes kept per frame after NMS (the best by score).
        classes: MegaDetector categories to keep (``animal``, ``person``, ``vehicle``).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda:1"``...
        batch_size: Frames per forward pass.
        image_size: ``MDv5a`` only: the long side frames are resized to (MegaDetector's
            ``image_size``, 1280 by default; smaller is faster and misses small animals). The v6
            weights always run at 640 x 640.
    """

    model: str = "fast"
    weights: str | None = "auto"
    score_threshold: float = 0.2
    iou_threshold: float | None = None
    max_boxes: int = 300
    classes: tuple[str, ...] = ("animal",)
    device: str = "auto"
    batch_size: int = 4
    image_size: int = V5_SIZE

    def __post_init__(self):
        name = ALIASES.get(self.model, self.model)
        if name not in MEGADETECTOR_MODELS:
            raise ValueError(f"unknown MegaDetector model {self.model!r}; use 'fast', "
                             f"'accurate' or one of {list(MEGADETECTOR_MODELS)}")
        unknown = {c.lower() for c in self.classes} - set(MD_CLASSES)
        if unknown or not self.classes:
            raise ValueError(f"classes {sorted(unknown) or '[]'}: MegaDetector knows "
                             f"{list(MD_CLASSES)}")
        if (self.batch_size < 1 or self.max_boxes < 1 or self.image_size < V5_STRIDE
                or not 0 < (self.iou_threshold or 0.5) <= 1):
            raise ValueError(f"batch_size and max_boxes must be >= 1, image_size >= {V5_STRIDE}, "
                             "iou_threshold in (0, 1]")

    @property
    def variant(self) -> str:
        """The full variant name."""
        return ALIASES.get(self.model, self.model)


@dataclass(frozen=True)
class Letterbox:
    """Where a frame sits in the square network input.

    Attributes:
        frame: (width, height) of the frame.
        size: (width, height) of the resized frame inside the input: ``scale`` times the frame
            size, truncated to whole pixels as PytorchWildlife does.
        pad_left: Grey columns left of the frame, input pixels.
        pad_top: Grey rows above the frame.
    """

    frame: tuple[int, int]
    size: tuple[int, int]
    pad_left: int
    pad_top: int

    @classmethod
    def fit(cls, width: int, height: int, target: int = INPUT_SIZE) -> Letterbox:
        """The geometry of a ``width`` x ``height`` frame in a ``target`` square."""
        scale = min(target / width, target / height)
        new_w, new_h = int(width * scale), int(height * scale)
        return cls((width, height), (new_w, new_h), (target - new_w) // 2, (target - new_h) // 2)

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes (N, 4) ``x1, y1, x2, y2`` in input pixels -> frame pixels.

        Each axis is divided by its own resize factor (the truncation to whole pixels makes
        them differ slightly; PytorchWildlife divides both by ``scale``, up to ~1 px off at the
        far edge of a 1080p frame).
        """
        offset = np.array([self.pad_left, self.pad_top] * 2, float)
        factor = np.array([self.size[0] / self.frame[0], self.size[1] / self.frame[1]] * 2)
        return (np.asarray(boxes, float).reshape(-1, 4) - offset) / factor


def letterbox(images: Sequence[np.ndarray], target: int = INPUT_SIZE):
    """Letterbox equally sized RGB frames into one network batch.

    Args:
        images: (H, W, 3) uint8 RGB frames, all the same size.
        target: Side of the square input.

    Returns:
        (B, target, target, 3) uint8 array and the :class:`Letterbox`.
    """
    from PIL import Image

    h, w = images[0].shape[:2]
    box = Letterbox.fit(w, h, target)
    batch = np.full((len(images), target, target, 3), PAD_VALUE, np.uint8)
    for i, image in enumerate(images):
        if image.shape[:2] != (h, w):
            raise ValueError("all frames of a batch must have the same size")
        resized = Image.fromarray(image).resize(box.size, Image.Resampling.LANCZOS)
        batch[i, box.pad_top:box.pad_top + box.size[1],
              box.pad_left:box.pad_left + box.size[0]] = np.asarray(resized)
    return batch, box


def stretch(images: Sequence[np.ndarray], target: int = INPUT_SIZE):
    """Resize equally sized RGB frames to ``target`` x ``target``, aspect not kept (RT-DETR).

    Pillow's bilinear resize, as torchvision's ``Resize`` does on the PIL image PytorchWildlife
    gives it.

    Returns:
        (B, target, target, 3) uint8 array and the :class:`Letterbox` (no padding; each axis
        its own scale).
    """
    from PIL import Image

    h, w = images[0].shape[:2]
    batch = np.empty((len(images), target, target, 3), np.uint8)
    for i, image in enumerate(images):
        if image.shape[:2] != (h, w):
            raise ValueError("all frames of a batch must have the same size")
        batch[i] = np.asarray(Image.fromarray(image).resize((target, target),
                                                            Image.Resampling.BILINEAR))
    return batch, Letterbox((w, h), (target, target), 0, 0)


def letterbox_v5(images: Sequence[np.ndarray], size: int = V5_SIZE, stride: int = V5_STRIDE):
    """Resize and pad equally sized RGB frames as MegaDetector v5 does (non-classic mode).

    The long side becomes ``size`` (OpenCV area interpolation when shrinking, bilinear when
    enlarging; sizes truncated to whole pixels), then each axis is padded with grey to
    ``ceil(side * size / long_side / stride + 0.5) * stride``, centred.

    Returns:
        (B, H_in, W_in, 3) uint8 array and the :class:`Letterbox`.
    """
    import math

    import cv2

    h, w = images[0].shape[:2]
    ratio = size / max(h, w)
    new_w, new_h = (int(w * ratio), int(h * ratio)) if ratio != 1 else (w, h)
    target = [math.ceil(side / max(h, w) * size / stride + 0.5) * stride for side in (h, w)]
    top, left = round((target[0] - new_h) / 2 - 0.1), round((target[1] - new_w) / 2 - 0.1)
    batch = np.full((len(images), target[0], target[1], 3), PAD_VALUE, np.uint8)
    method = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
    for i, image in enumerate(images):
        if image.shape[:2] != (h, w):
            raise ValueError("all frames of a batch must have the same size")
        resized = image if ratio == 1 else cv2.resize(image, (new_w, new_h), interpolation=method)
        batch[i, top:top + new_h, left:left + new_w] = resized
    return batch, Letterbox((w, h), (new_w, new_h), left, top)


def v5_scores(raw):
    """YOLOv5 output (B, N, 5 + C) -> class scores (B, N, C) and ``x1, y1, x2, y2`` (B, N, 4).

    The score is objectness x class probability; each box keeps only its best class (single
    label, as MegaDetector's NMS); the others get 0.
    """
    import torch

    xy, wh = raw[..., :2], raw[..., 2:4]
    boxes = torch.cat((xy - wh / 2, xy + wh / 2), -1)
    scores = raw[..., 5:] * raw[..., 4:5]  # (B, N, C)
    best = scores.max(-1, keepdim=True).values
    return scores.where(scores >= best, torch.zeros_like(scores)), boxes


def rtdetr_scores(logits, boxes, size: int = INPUT_SIZE, top: int = RTDETR_TOP):
    """RT-DETR output -> class scores (B, Q, C) and ``x1, y1, x2, y2`` input pixels (B, Q, 4).

    Scores are ``sigmoid(logits)``; only the best ``top`` (query, class) pairs of each image keep
    theirs, the others get 0 (PytorchWildlife's top-k over queries x classes).
    """
    import torch

    scores = logits.sigmoid()
    flat = scores.flatten(1)
    kept = flat.topk(min(top, flat.shape[1]), dim=1).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, kept, True)
    scores = scores.masked_fill(~mask.view_as(scores), 0.0)
    centre, wh = boxes[..., :2], boxes[..., 2:]
    return scores, torch.cat((centre - wh / 2, centre + wh / 2), -1) * size


def postprocess(scores, boxes, score_threshold: float, iou_threshold: float | None,
                max_boxes: int):
    """Threshold, per-class NMS and the best ``max_boxes`` per image (MIT YOLO's ``bbox_nms``).

    Args:
        scores: (B, N, C) class scores in [0, 1] (``sigmoid(logits)`` for YOLOv9).
        boxes: (B, N, 4) ``x1, y1, x2, y2`` input pixels.
        score_threshold: Minimum score (exclusive, as MegaDetector).
        iou_threshold: NMS IoU; ``None``: no NMS, the boxes are only sorted by score.
        max_boxes: Boxes kept per image (highest scores).

    Returns:
        Per image: boxes (K, 4), scores (K,), class indices (K,), tensors sorted by score.
    """
    import torch
    from torchvision.ops import batched_nms

    out = []
    for b in range(scores.shape[0]):
        anchor, cls = torch.where(scores[b] > score_threshold)
        conf = scores[b, anchor, cls]
        if iou_threshold is None:
            kept = conf.argsort(descending=True, stable=True)
        else:
            kept = batched_nms(boxes[b, anchor].float(), conf.float(), cls, iou_threshold)
        kept = kept[:max_boxes]
        out.append((boxes[b, anchor[kept]], conf[kept], cls[kept]))
    return out


class MegaDetectorDetector:
    """MegaDetector (v6 MIT YOLOv9 / Apache RT-DETRv2, v5a YOLOv5x6), keeping chosen categories.

    Args:
        cfg: The settings.

    Raises:
        CheckpointError: The weights are not cached and cannot be fetched, or the file is not
            weights of the chosen variant (one line).
    """

    def __init__(self, cfg: MegaDetectorConfig | None = None):
        import torch

        from clamp_track.pipelines.detectors import _device

        self.cfg = cfg = cfg or MegaDetectorConfig()
        self.variant = MEGADETECTOR_MODELS[cfg.variant]
        self._keep = [MD_CLASSES.index(c.lower()) for c in cfg.classes]
        self.class_names = {i: MD_CLASSES[i] for i in self._keep}
        self.device = torch.device(_device(cfg.device))
        from clamp_track.models.rtdetr import fuse_for_inference
        from clamp_track.models.yolov9 import fuse_batchnorm

        model = load_megadetector(cfg.variant, cfg.weights)
        # inference only: BatchNorm folded in (and the RT-DETR's RepVGG branches merged)
        fuse = fuse_for_inference if self.variant.family == "rtdetr" else fuse_batchnorm
        self.model = fuse(model).to(self.device)
        self.iou = cfg.iou_threshold or self.variant.iou

    def _scores(self, images: list[np.ndarray]):
        """Class scores (B, N, C), boxes (B, N, 4) in input pixels, and the geometry."""
        import torch

        family = self.variant.family
        if family == "yolov5":
            pixels, box = letterbox_v5(images, self.cfg.image_size)
        elif family == "rtdetr":
            pixels, box = stretch(images)
        else:
            pixels, box = letterbox(images)
        x = torch.from_numpy(pixels).to(self.device).permute(0, 3, 1, 2)  # (B, 3, H_in, W_in)
        x = x.float().div_(255)
        if family == "yolov5":
            scores, boxes = v5_scores(self.model(x))
        elif family == "rtdetr":
            scores, boxes = rtdetr_scores(*self.model(x))
        else:
            logits, boxes = self.model(x)
            scores = logits.sigmoid()
        return scores, boxes, box

    def detect(self, frames: Sequence[Frame]) -> list[Detections]:
        """Detect; see :class:`~clamp_track.pipelines.detectors.Detector`."""
        import torch

        out: list[Detections] = []
        frames = list(frames)
        for start in range(0, len(frames), self.cfg.batch_size):
            batch = frames[start:start + self.cfg.batch_size]
            with torch.inference_mode():
                scores, boxes, box = self._scores([f.image for f in batch])
                scores = _outside_frame_dropped(scores[..., self._keep], boxes, box)
                found = postprocess(scores, boxes, self.cfg.score_threshold, self.iou,
                                    self.cfg.max_boxes)
            h, w = batch[0].image.shape[:2]
            out += [_to_detections(b, s, c, box, w, h, self._keep) for b, s, c in found]
        return out

    def close(self) -> None:
        """Drop the model."""
        self.model = None


def _outside_frame_dropped(scores, boxes, box: Letterbox):
    """Scores with those of boxes centred on the grey padding set to 0 (never kept)."""
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2  # (B, N, 2) input pixels
    low = centre.new_tensor([box.pad_left, box.pad_top])
    high = low + centre.new_tensor(box.size)
    inside = ((centre >= low) & (centre <= high)).all(-1, keepdim=True)  # (B, N, 1)
    return scores.masked_fill(~inside, 0.0)


def _to_detections(boxes, scores, cls, box: Letterbox, width: int, height: int,
                   keep: list[int]) -> Detections:
    """Network boxes -> frame-pixel :class:`Detections` (clipped; empty boxes dropped)."""
    xyxy = box.to_frame(boxes.float().cpu().numpy())
    xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, width)
    xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, height)
    ok = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    ids = np.asarray(keep, np.int64)[cls.cpu().numpy()]
    return Detections(xyxy[ok], scores.float().cpu().numpy()[ok], ids[ok])


def load_megadetector(variant: str, weights: str | Path | None = "auto"):
    """The network of ``variant`` with its weights, in eval mode.

    Args:
        variant: A key of :data:`MEGADETECTOR_MODELS`.
        weights: ``"auto"`` (the registry's file of ``variant``, fetched once), a file, or
            ``None`` (random weights).

    Raises:
        CheckpointError: As :class:`MegaDetectorDetector`.
        InputError: Unknown variant.
    """
    from clamp_track.models import rtdetr, yolov5, yolov9

    if variant not in MEGADETECTOR_MODELS:
        raise InputError(f"unknown MegaDetector model {variant!r}; known: "
                         f"{list(MEGADETECTOR_MODELS)}")
    spec = MEGADETECTOR_MODELS[variant]
    if weights is None:
        if spec.family == "rtdetr":
            return rtdetr.build_rtdetr(spec.layout)
        return (yolov5.build_yolov5() if spec.family == "yolov5"
                else yolov9.build_yolov9(spec.layout, num_classes=len(MD_CLASSES)))
    if str(weights) == "auto":
        from clamp_track.weights import fetch_file

        weights = fetch_file(variant)
    if spec.family == "yolov5":
        model, names = yolov5.load_yolov5_file(weights)
        _check_classes(names, weights)
    elif spec.family == "rtdetr":
        model = rtdetr.build_rtdetr(spec.layout)
        # the weights-only unpickler; any non-tensor object becomes an inert stand-in
        state = rtdetr.rtdetr_state(yolov9.read_lightning_checkpoint(weights), weights)
        rtdetr.load_rtdetr_state(model, state, weights)
    else:
        model = yolov9.build_yolov9(spec.layout, num_classes=len(MD_CLASSES))
        state = yolov9.yolov9_state(yolov9.read_lightning_checkpoint(weights), weights)
        yolov9.load_yolov9_state(model, state, weights)
    log.info("MegaDetector %s weights: %s", variant, weights)
    return model.eval()


def _check_classes(names: dict[int, str], path) -> None:
    """A YOLOv5 file must be MegaDetector's: classes animal, person, vehicle in that order."""
    from clamp_track.errors import CheckpointError

    found = tuple(names.get(i, "").lower() for i in range(len(names)))
    if found and found != MD_CLASSES:
        raise CheckpointError(f"{path}: a YOLOv5 with classes {list(found)[:5]}, not "
                              f"MegaDetector's {list(MD_CLASSES)}; pass md_v5a.0.0.pt")
