"""Animal detectors behind one small interface, and four backends.

Every detector turns a batch of :class:`~clamp_track.types.Frame` into one
:class:`~clamp_track.types.Detections` per frame (boxes ``x1, y1, x2, y2`` in frame pixels) and is
made by :func:`make_detector` from a name and options (strictly checked: an unknown option is an
error naming it). Detectors only detect the frames they are given; running detection on every
k-th frame is the caller's business.

* ``torchvision`` (default): a COCO-trained torchvision detector keeping the animal classes. The
  input is kept at the video's own size (torchvision otherwise rescales the short side to 800 px:
  measured 2-3x slower on 640x480 video). ``model="fast"`` is
  ``fasterrcnn_mobilenet_v3_large_fpn`` (0.6 s per 640x480 frame on this 2-core CPU),
  ``"accurate"`` is ``fasterrcnn_resnet50_fpn_v2`` (3.4-4 s). Weights come through torchvision's
  own cache (``torch.hub.get_dir()/checkpoints``); offline and not cached, it fails at once saying
  what to download and where to put it.
* ``mmdet`` (optional): any MMDetection 3 config + checkpoint through ``mmdet.apis``. mmdet is not
  a dependency (it needs mmcv's compiled ops); only the conversion of its outputs is tested here.
* ``file``: boxes someone already computed: a MegaDetector batch-output JSON (for a video, or for
  frames extracted from it) or a MOTChallenge ``det.txt``.
* ``motion``: background subtraction (OpenCV MOG2 or KNN) for static cameras; needs no weights.
* ``megadetector``: MegaDetector v6 (MIT YOLOv9 or Apache RT-DETRv2 weights) or v5a in-process; see
  :mod:`clamp_track.pipelines.megadetector`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable
from urllib.parse import urlparse

import numpy as np

from clamp_track.config import from_dict
from clamp_track.errors import CheckpointError, InputError, MissingDependencyError
from clamp_track.types import Detections, Frame

log = logging.getLogger(__name__)

# COCO classes that are animals (torchvision's COCO category names).
ANIMAL_CLASSES = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
                  "giraffe")


@runtime_checkable
class Detector(Protocol):
    """Finds animals in frames.

    Attributes:
        class_names: Names of the ``class_ids`` the detector reports.
    """

    class_names: dict[int, str]

    def detect(self, frames: Sequence[Frame]) -> list[Detections]:
        """Detect animals in each frame (batched where the backend can).

        Args:
            frames: Frames of one video, in any order.

        Returns:
            One :class:`Detections` per frame, in the same order.
        """
        ...

    def close(self) -> None:
        """Release models, files and memory."""
        ...


def make_detector(name: str, **options) -> Detector:
    """Build a detector by name.

    Args:
        name: ``"torchvision"``, ``"mmdet"``, ``"file"``, ``"motion"`` or ``"megadetector"``.
        **options: Fields of the backend's config (:class:`TorchvisionConfig`,
            :class:`MMDetConfig`, :class:`FileConfig`, :class:`MotionConfig`,
            :class:`~clamp_track.pipelines.megadetector.MegaDetectorConfig`).

    Returns:
        The detector.

    Raises:
        InputError: Unknown name or option, or a bad option value.
    """
    from clamp_track.pipelines.megadetector import MegaDetectorConfig, MegaDetectorDetector

    backends = {"torchvision": (TorchvisionConfig, TorchvisionDetector),
                "mmdet": (MMDetConfig, MMDetDetector),
                "file": (FileConfig, FileDetector),
                "motion": (MotionConfig, MotionDetector),
                "megadetector": (MegaDetectorConfig, MegaDetectorDetector)}
    if name not in backends:
        raise InputError(f"unknown detector {name!r}; known: {sorted(backends)}")
    config_cls, detector_cls = backends[name]
    return detector_cls(from_dict(config_cls, options, source=f"detector {name!r}"))


def _device(name: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ============================================================================================
# torchvision


_NOT_CLASSES = ("N/A", "__background__")  # placeholders in torchvision's COCO category list
TORCHVISION_MODELS = {"fast": "fasterrcnn_mobilenet_v3_large_fpn",
                      "accurate": "fasterrcnn_resnet50_fpn_v2"}
# torchvision COCO detectors whose transform takes min_size / max_size.
_RESIZABLE = ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn",
              "fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2",
              "fcos_resnet50_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")


@dataclass(frozen=True)
class TorchvisionConfig:
    """Settings of the torchvision detector.

    Attributes:
        model: ``"fast"``, ``"accurate"`` or a torchvision COCO detector name (see
            ``_RESIZABLE``).
        weights: ``"DEFAULT"`` (torchvision's COCO weights, cached by torchvision), a path to a
            state-dict file of that model, or ``None`` for random weights (tests only).
        score_threshold: Boxes below this score are dropped.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        batch_size: Frames per forward pass.
        max_side: Frames whose long side exceeds this are shrunk to it; smaller frames keep
            their size (never upscaled).
        classes: COCO class names to keep.
    """

    model: str = "fast"
    weights: str | None = "DEFAULT"
    score_threshold: float = 0.5
    device: str = "auto"
    batch_size: int = 4
    max_side: int = 1333
    classes: tuple[str, ...] = ANIMAL_CLASSES

    def __post_init__(self):
        name = TORCHVISION_MODELS.get(self.model, self.model)
        if name not in _RESIZABLE:
            raise ValueError(f"unknown torchvision detector {self.model!r}; use 'fast', "
                             f"'accurate' or one of {list(_RESIZABLE)}")
        if self.batch_size < 1 or self.max_side < 32:
            raise ValueError("batch_size must be >= 1 and max_side >= 32")


def _offline() -> bool:
    from clamp_track.weights import is_offline

    return is_offline()


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether ``host:443`` answers within ``timeout`` (DNS included; never blocks longer)."""
    answer = []

    def connect():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            answer.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(answer)


def cached_weights_path(url: str) -> Path:
    """Where torchvision's cache keeps the file at ``url``: ``torch.hub.get_dir()/checkpoints``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _require_weights(name: str, weights) -> None:
    """Fail at once, with what to download and where, if the weights can't be had offline."""
    target = cached_weights_path(weights.url)
    if target.is_file():
        return
    if not _offline() and _reachable(urlparse(weights.url).hostname or ""):
        log.info("downloading %s weights into torchvision's cache %s", name, target.parent)
        return
    raise CheckpointError(
        f"{name} weights are not in torchvision's cache and cannot be downloaded (offline): "
        f"download {weights.url} to {target} (torch.hub.get_dir()/checkpoints; TORCH_HOME moves "
        f"it), or pass the file as weights=PATH")


def check_torchvision_weights(**options) -> None:
    """Fail now, before any model loads, if the torchvision detector's weights can't be had.

    Args:
        **options: Fields of :class:`TorchvisionConfig`.

    Raises:
        ClampTrackError: A bad option, a missing weights file, or weights neither cached nor
            downloadable (what to download and where).
    """
    from torchvision.models import get_model_weights

    cfg = from_dict(TorchvisionConfig, options, source="detector 'torchvision'")
    if cfg.weights is None:
        return
    if Path(str(cfg.weights)).suffix in (".pt", ".pth") or os.sep in str(cfg.weights):
        if not Path(str(cfg.weights)).is_file():
            raise CheckpointError(f"{cfg.weights}: detector weights file not found")
        return
    name = TORCHVISION_MODELS.get(cfg.model, cfg.model)
    try:
        weights = get_model_weights(name)[cfg.weights] if cfg.weights != "DEFAULT" \
            else get_model_weights(name).DEFAULT
    except KeyError:
        raise InputError(f"detector weights {cfg.weights!r} are not a file nor a weights name "
                         f"of {name}") from None
    _require_weights(name, weights)


def coco_categories(model: str) -> list[str]:
    """The COCO category names of a torchvision detector, indexed by label id (no download)."""
    from torchvision.models import get_model_weights

    name = TORCHVISION_MODELS.get(model, model)
    return list(get_model_weights(name).DEFAULT.meta["categories"])


def _build_torchvision(cfg: TorchvisionConfig):
    """The torchvision model (eval mode) and its COCO category names."""
    import torch
    from torchvision.models import get_model, get_model_weights

    name = TORCHVISION_MODELS.get(cfg.model, cfg.model)
    default = get_model_weights(name).DEFAULT
    categories = coco_categories(name)
    if cfg.weights is None or Path(str(cfg.weights)).is_file():
        model = get_model(name, weights=None, weights_backbone=None,
                          num_classes=len(categories))
        if cfg.weights is not None:
            state = torch.load(cfg.weights, map_location="cpu", weights_only=True)
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                first = str(exc).splitlines()[0]
                raise CheckpointError(f"{cfg.weights}: not {name} weights ({first})") from None
    else:
        weights = get_model_weights(name)[cfg.weights] if cfg.weights != "DEFAULT" else default
        _require_weights(name, weights)
        model = get_model(name, weights=weights)
    return model.eval(), categories


def _frame_sizes(height: int, width: int, max_side: int) -> tuple[int, int]:
    """``(min_size, max_size)`` for torchvision's transform that keep a frame at its own size.

    Frames with a long side above ``max_side`` are shrunk to it (aspect kept); smaller frames
    are not upscaled.
    """
    scale = min(1.0, max_side / max(height, width))
    return round(min(height, width) * scale), round(max(height, width) * scale)


def _class_ids(names: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    """Indices of ``names`` in ``wanted`` (case-insensitive); all of them if ``wanted`` is empty."""
    wanted_set = {w.strip().lower() for w in wanted}
    return np.array([i for i, n in enumerate(names)
                     if not wanted_set or str(n).strip().lower() in wanted_set], dtype=np.int64)


def _to_numpy(value) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _select(boxes, scores, labels, keep_ids: np.ndarray, threshold: float) -> Detections:
    """Detections of the kept classes scoring at least ``threshold``."""
    boxes = _to_numpy(boxes).reshape(-1, 4)  # (N, 4) x1 y1 x2 y2
    scores, labels = _to_numpy(scores).reshape(-1), _to_numpy(labels).reshape(-1)
    keep = np.isin(labels, keep_ids) & (scores >= threshold)
    return Detections(boxes[keep], scores[keep], labels[keep].astype(np.int64))


class TorchvisionDetector:
    """COCO-trained torchvision detector, keeping the animal classes.

    Args:
        cfg: The settings.

    Raises:
        CheckpointError: The weights are not cached and cannot be downloaded.
    """

    def __init__(self, cfg: TorchvisionConfig | None = None):
        import torch

        self.cfg = cfg = cfg or TorchvisionConfig()
        categories = coco_categories(cfg.model)
        unknown = {c.lower() for c in cfg.classes} - {c.lower() for c in categories}
        if unknown or not cfg.classes:
            known = [c for c in categories if c not in _NOT_CLASSES]
            raise InputError(f"torchvision detector: classes {sorted(unknown)} are not COCO "
                             f"classes; choose from {known}")
        self._keep = _class_ids(categories, cfg.classes)
        self.class_names = {int(i): categories[i] for i in self._keep}
        self.device = torch.device(_device(cfg.device))
        self.model, _ = _build_torchvision(cfg)
        self.model.to(self.device)

    def _resize_for(self, frame: Frame) -> None:
        h, w = frame.image.shape[:2]
        min_size, max_size = _frame_sizes(h, w, self.cfg.max_side)
        self.model.transform.min_size = (min_size,)
        self.model.transform.max_size = max_size

    def detect(self, frames: Sequence[Frame]) -> list[Detections]:
        """Detect animals; see :meth:`Detector.detect`."""
        import torch

        out: list[Detections] = []
        for batch in _batches(list(frames), self.cfg.batch_size):
            self._resize_for(batch[0])
            images = [torch.from_numpy(f.image).to(self.device).permute(2, 0, 1).float() / 255
                      for f in batch]  # each (3, H, W) in [0, 1]
            with torch.inference_mode():
                results = self.model(images)
            out += [_select(r["boxes"], r["scores"], r["labels"], self._keep,
                            self.cfg.score_threshold) for r in results]
        return out

    def close(self) -> None:
        """Drop the model."""
        self.model = None


# ============================================================================================
# mmdet (optional)


MMDET_INSTALL = ("pip install -U openmim && mim install mmengine 'mmcv>=2.0.0rc4,<2.2.0' mmdet "
                 "(mmcv needs compiled ops; see mmdetection.readthedocs.io get_started)")


@dataclass(frozen=True)
class MMDetConfig:
    """Settings of the MMDetection adapter.

    Attributes:
        config: An mmdet 3 config file.
        checkpoint: Its checkpoint file.
        device: ``"auto"``, ``"cpu"``, ``"cuda:0"``...
        score_threshold: Boxes below this score are dropped.
        classes: Class names (of the model's ``dataset_meta``) to keep; empty keeps all.
        batch_size: Frames per inference call.
    """

    config: str
    checkpoint: str
    device: str = "auto"
    score_threshold: float = 0.5
    classes: tuple[str, ...] = ANIMAL_CLASSES
    batch_size: int = 4


def _mmdet_apis():
    try:
        import mmdet.apis as apis
    except ImportError as exc:
        raise MissingDependencyError(
            f"the mmdet detector needs MMDetection 3 ({exc}); install it with: {MMDET_INSTALL}"
        ) from None
    return apis


def mmdet_to_detections(sample, keep_ids: np.ndarray, threshold: float) -> Detections:
    """Convert one mmdet 3 ``DetDataSample`` to :class:`Detections`.

    Args:
        sample: Has ``pred_instances.bboxes`` (N, 4) ``x1, y1, x2, y2`` px, ``.scores`` (N,) and
            ``.labels`` (N,) (tensors or arrays).
        keep_ids: Label ids to keep.
        threshold: Minimum score.

    Returns:
        The kept boxes, labels as ``class_ids``.
    """
    pred = sample.pred_instances
    return _select(pred.bboxes, pred.scores, pred.labels, keep_ids, threshold)


class MMDetDetector:
    """Any MMDetection 3 detector through ``mmdet.apis.init_detector`` / ``inference_detector``.

    Args:
        cfg: The settings.

    Raises:
        MissingDependencyError: mmdet is not installed (with the install command).
        InputError: The config or checkpoint file is missing, or no class is kept.
    """

    def __init__(self, cfg: MMDetConfig):
        self.cfg = cfg
        self._apis = _mmdet_apis()
        for path in (cfg.config, cfg.checkpoint):
            if not Path(path).is_file():
                raise InputError(f"{path}: mmdet config/checkpoint file not found")
        self.model = self._apis.init_detector(cfg.config, cfg.checkpoint,
                                              device=_device(cfg.device))
        names = list(self.model.dataset_meta["classes"])
        self._keep = _class_ids(names, cfg.classes)
        if len(self._keep) == 0:
            raise InputError(f"{cfg.config}: none of the classes {list(cfg.classes)} is among "
                             f"the model's {names[:10]}...; set classes")
        self.class_names = {int(i): names[i] for i in self._keep}

    def detect(self, frames: Sequence[Frame]) -> list[Detections]:
        """Detect animals; see :meth:`Detector.detect`."""
        out: list[Detections] = []
        for batch in _batches(list(frames), self.cfg.batch_size):
            images = [np.ascontiguousarray(f.image[:, :, ::-1]) for f in batch]  # BGR, as mmcv
            samples = self._apis.inference_detector(self.model, images)
            out += [mmdet_to_detections(s, self._keep, self.cfg.score_threshold)
                    for s in samples]
        return out

    def close(self) -> None:
        """Drop the model."""
        self.model = None


# ============================================================================================
# file: MegaDetector batch JSON or MOTChallenge det.txt


@dataclass(frozen=True)
class FileConfig:
    """Settings of the file detector.

    Attributes:
        path: A MegaDetector batch-output ``.json`` or a MOTChallenge ``det.txt``.
        video: The video the boxes are for, when a MegaDetector file covers several (matched by
            file name or stem; frames extracted to a folder named after the video also match).
        min_score: Boxes below this confidence are dropped.
        categories: MegaDetector categories to keep, by name or id (``"animal"`` = ``"1"``).
    """

    path: str
    video: str | None = None
    min_score: float = 0.0
    categories: tuple[str, ...] = ("animal",)


@dataclass
class _Boxes:
    """Boxes of one frame, as read from a file (normalised for MegaDetector)."""

    boxes: list
    scores: list
    class_ids: list
    track_ids: list


_FRAME_NUMBER = re.compile(r"(\d+)\D*$")


def _md_categories(data: dict, wanted: Sequence[str], path: Path) -> dict[str, str]:
    """The kept MegaDetector categories, id -> name."""
    names = data.get("detection_categories") or {"1": "animal", "2": "person", "3": "vehicle"}
    if not isinstance(names, dict):
        raise InputError(f"{path}: 'detection_categories' must map ids to names")
    wanted_set = {str(w).lower() for w in wanted}
    return {str(i): str(n) for i, n in names.items()
            if str(i) in wanted_set or str(n).lower() in wanted_set}


def _md_group(entry: dict, where: str, path: Path) -> tuple[str, int | None]:
    """The video an entry belongs to, and its frame index (None: per-detection frame_number)."""
    file = str(entry.get("file", "")).replace("\\", "/")
    if not file:
        raise InputError(f"{path}: {where} has no 'file'")
    dets = entry.get("detections") or []
    is_video = ("frame_rate" in entry or "frames_processed" in entry
                or any(isinstance(d, dict) and "frame_number" in d for d in dets))
    if is_video:
        return file, None
    match = _FRAME_NUMBER.search(Path(file).stem)
    if match is None:
        raise InputError(f"{path}: {where} file {file!r} is neither a video entry (frame_rate, "
                         "frame_number) nor a frame named with its number (frame000123.jpg)")
    return str(Path(file).parent), int(match.group(1))


def _md_detection(det, where: str, path: Path) -> tuple[list, float, str, int | None]:
    """``(bbox [x, y, w, h] normalised, conf, category, frame_number)`` of one detection."""
    try:
        bbox = [float(v) for v in det["bbox"]]
        conf = float(det["conf"])
        category = str(det["category"])
        frame = int(det["frame_number"]) if "frame_number" in det else None
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: {where} is malformed ({exc.__class__.__name__}: {exc}); "
                         "expected category, conf, bbox [x, y, w, h]") from None
    if len(bbox) != 4 or bbox[2] < 0 or bbox[3] < 0 or not all(map(math.isfinite, bbox)):
        raise InputError(f"{path}: {where} bbox {bbox} is not [x_min, y_min, width, height] "
                         "normalised to the image size")
    return bbox, conf, category, frame


def _read_megadetector(path: Path, cfg: FileConfig):
    """Read a MegaDetector batch output.

    Returns:
        Boxes per frame (normalised ``x1, y1, x2, y2``), the processed frames if the file lists
        them (else None), and the kept class names.
    """
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"{path}: not a MegaDetector batch output (no 'images' list)")
    keep = _md_categories(data, cfg.categories, path)
    groups: dict[str, dict[int, _Boxes]] = {}
    processed: dict[str, set[int]] = {}
    for i, entry in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(entry, dict):
            raise InputError(f"{path}: {where} is not an object")
        if entry.get("detections") is None:  # a failed image: nothing known
            continue
        group, frame = _md_group(entry, where, path)
        frames = groups.setdefault(group, {})
        if frame is not None:
            frames.setdefault(frame, _Boxes([], [], [], []))
            processed.setdefault(group, set()).add(frame)
        elif "frames_processed" in entry:
            processed.setdefault(group, set()).update(int(f) for f in entry["frames_processed"])
        for j, det in enumerate(entry["detections"]):
            bbox, conf, category, number = _md_detection(det, f"{where}.detections[{j}]", path)
            number = frame if frame is not None else number
            if number is None:
                raise InputError(f"{path}: {where}.detections[{j}] has no frame_number")
            if category not in keep or conf < cfg.min_score:
                continue
            x, y, w, h = bbox
            b = frames.setdefault(number, _Boxes([], [], [], []))
            b.boxes.append([x, y, x + w, y + h])
            b.scores.append(conf)
            b.class_ids.append(int(category) if category.isdigit() else 0)
            b.track_ids.append(-1)
    name = _pick_group(sorted(groups), cfg.video, path)
    class_names = {int(i) if i.isdigit() else 0: n for i, n in keep.items()}
    return groups.get(name, {}), processed.get(name), class_names


def _pick_group(names: list[str], video: str | None, path: Path) -> str | None:
    """The group (video file or frame folder) of a MegaDetector file that belongs to ``video``."""
    if not names:
        return None
    if video is not None:
        v = Path(video)
        hits = [n for n in names if Path(n).name in (v.name, v.stem) or Path(n).stem == v.stem]
        if len(hits) == 1:
            return hits[0]
        if len(names) == 1:
            log.warning("%s: its only entry %r does not look like %s; using it", path, names[0],
                        v.name)
            return names[0]
    if len(names) == 1:
        return names[0]
    raise InputError(f"{path}: has boxes for {len(names)} videos ({', '.join(names[:4])}...); "
                     f"say which with video=NAME")


def _read_mot(path: Path, cfg: FileConfig) -> dict[int, _Boxes]:
    """Boxes per frame (pixels) from ``frame,id,left,top,width,height,conf,...`` lines."""
    frames: dict[int, _Boxes] = {}
    expected = "expected 'frame,id,left,top,width,height,conf,...'"
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = [f for f in re.split(r"[,\s]+", text) if f]
        try:
            if len(fields) < 7:
                raise ValueError
            frame, ident, left, top, width, height, conf = (float(f) for f in fields[:7])
        except ValueError:
            raise InputError(f"{path}:{lineno}: {expected}, got {text[:60]!r}") from None
        if frame < 1 or frame != int(frame) or width <= 0 or height <= 0:
            raise InputError(f"{path}:{lineno}: frame must be a whole number >= 1 and width, "
                             f"height positive; got {text[:60]!r}")
        if conf < cfg.min_score:
            continue
        b = frames.setdefault(int(frame) - 1, _Boxes([], [], [], []))  # 1-based -> 0-based
        b.boxes.append([left, top, left + width, top + height])
        b.scores.append(min(max(conf, 0.0), 1.0))
        b.class_ids.append(0)
        b.track_ids.append(int(ident) if ident >= 0 else -1)
    return frames


class FileDetector:
    """Boxes read from a MegaDetector batch-output JSON or a MOTChallenge ``det.txt``.

    MegaDetector: ``images[].detections[]`` with ``category``, ``conf`` and ``bbox`` =
    normalised ``[x_min, y_min, width, height]`` (scaled by each frame's size). A video entry
    (``frame_rate``, ``frames_processed``, per-detection ``frame_number``) gives frame indices
    directly; entries of extracted frames take the index from the file name
    (``.../video/frame000123.jpg`` -> 123). MOTChallenge: frames are 1-based; ids >= 0 are kept
    as ``track_ids``; confidences are clipped to [0, 1].

    Attributes:
        frames_covered: Frame indices the file has results for (``frames_processed`` of a
            MegaDetector video; the frames listed otherwise). Other frames get no boxes.

    Raises:
        InputError: The file is missing or malformed (naming the line or entry).
    """

    def __init__(self, cfg: FileConfig):
        self.cfg = cfg
        path = Path(cfg.path)
        if not path.is_file():
            raise InputError(f"{path}: boxes file not found; check the path given to --boxes")
        try:
            if self._is_json(path):
                self._frames, covered, self.class_names = _read_megadetector(path, cfg)
                self.normalised = True
            else:
                self._frames, covered = _read_mot(path, cfg), None
                self.class_names = {0: "animal"}
                self.normalised = False
        except UnicodeDecodeError:
            raise InputError(f"{path}: binary data, not a boxes file; pass a MegaDetector "
                             "JSON or a MOTChallenge det.txt with --boxes") from None
        self.frames_covered = frozenset(covered if covered is not None else self._frames)
        #: Boxes dropped so far for lying entirely outside the frame.
        self.outside = 0
        log.info("%s: boxes for %d frames", path, len(self.frames_covered))

    @staticmethod
    def _is_json(path: Path) -> bool:
        if path.suffix.lower() == ".json":
            return True
        with open(path, "rb") as fh:
            return fh.read(64).lstrip().startswith(b"{")

    def detect(self, frames: Sequence[Frame]) -> list[Detections]:
        """The file's boxes for these frames; see :meth:`Detector.detect`."""
        out = []
        for frame in frames:
            b = self._frames.get(frame.index)
            if b is None or not b.boxes:
                out.append(Detections.empty())
                continue
            boxes = np.asarray(b.boxes, dtype=np.float64)  # (N, 4)
            h, w = frame.image.shape[:2]
            if self.normalised:
                boxes = boxes * np.array([w, h, w, h])
            inside = (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (boxes[:, 0] < w) & (boxes[:, 1] < h)
            if not inside.all():
                self._warn_outside(frame.index, boxes[~inside][0], (w, h), int((~inside).sum()))
            keep = np.flatnonzero(inside)
            out.append(Detections(boxes[keep], np.asarray(b.scores)[keep],
                                  np.asarray(b.class_ids, np.int64)[keep],
                                  np.asarray(b.track_ids, np.int64)[keep]))
        return out

    def _warn_outside(self, frame: int, box, size: tuple[int, int], count: int) -> None:
        """Boxes with no pixel in the frame are dropped; say so once per file."""
        self.outside += count
        if self.outside == count:
            log.warning("%s: boxes lie entirely outside the %dx%d frame (first: frame %d, box "
                        "%s) and are dropped; check that the file belongs to this video and is "
                        "in its pixels", self.cfg.path, size[0], size[1], frame,
                        [round(float(v), 1) for v in box])

    def close(self) -> None:
        """Nothing to release."""


# ============================================================================================
# motion: background subtraction


@dataclass(frozen=True)
class MotionConfig:
    """Settings of the background-subtraction detector (static cameras).

    Attributes:
        method: ``"mog2"`` or ``"knn"`` (OpenCV's background subtractors).
        history: Frames the background model remembers. An animal that stays still for about
            a tenth of this many detected frames fades into the background (MOG2).
        threshold: Foreground threshold (MOG2 ``varThreshold``, default 16; KNN
            ``dist2Threshold``, default 400); ``None`` for OpenCV's default.
        learning_rate: How fast the background follows changes, per frame; ``None`` is
            OpenCV's automatic ``1 / min(2 n, history)`` after ``n`` frames. It learns fast at
            first, so the ghost of an animal present at the start fades quickly (measured on the
            open-field mouse video: one box on the mouse in 87 % of frames 100-600 vs 65 % with a
            fixed ``1 / history``), but an untextured animal that moves slowly in the first
            ``history / 2`` frames can be partly absorbed.
        max_side: Frames are shrunk to this long side before subtraction (speed).
        blur: Median-blur kernel applied to the mask (odd; 0 = none), against speckle.
        open_px: Morphological opening kernel (px, at the working size): removes thin lines.
        close_px: Morphological closing kernel: joins the parts of one animal.
        min_area: Smallest foreground blob kept, as a fraction of the frame area.
        merge_gap: Boxes closer than this fraction of the frame diagonal are merged.
        warmup: The first this many frames only teach the background and get no boxes (OpenCV
            marks everything as moving at first: MOG2 on 1 frame, KNN on about 4).
    """

    method: Literal["mog2", "knn"] = "mog2"
    history: int = 500
    threshold: float | None = None
    learning_rate: float | None = None
    max_side: int = 640
    blur: int = 5
    open_px: int = 3
    close_px: int = 15
    min_area: float = 0.001
    merge_gap: float = 0.03
    warmup: int = 5

    def __post_init__(self):
        if self.method not in ("mog2", "knn"):
            raise ValueError(f"method must be 'mog2' or 'knn', got {self.method!r}")
        if self.blur and self.blur % 2 == 0:
            raise ValueError(f"blur must be odd or 0, got {self.blur}")
        if (self.history < 1 or self.max_side < 16 or not 0 <= self.min_area < 1
                or self.warmup < 0):
            raise ValueError("history >= 1, max_side >= 16, 0 <= min_area < 1 and warmup >= 0 "
                             "are required")


def merge_boxes(boxes: np.ndarray, gap: float) -> np.ndarray:
    """Merge boxes that overlap or lie within ``gap`` pixels of each other (transitively).

    Args:
        boxes: (N, 4) ``x1, y1, x2, y2``.
        gap: Largest distance between two boxes' edges that still merges them, px.

    Returns:
        (M, 4) enclosing boxes of the groups, M <= N.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    group = np.arange(len(boxes))
    changed = True
    while changed:  # few boxes per frame: a simple fixed point is enough
        changed = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                dx = max(a[0] - b[2], b[0] - a[2], 0.0)
                dy = max(a[1] - b[3], b[1] - a[3], 0.0)
                if group[i] != group[j] and max(dx, dy) <= gap:
                    group[group == group[j]] = group[i]
                    changed = True
    out = [np.concatenate([boxes[group == g, :2].min(0), boxes[group == g, 2:].max(0)])
           for g in np.unique(group)]
    return np.asarray(out).reshape(-1, 4)


class MotionDetector:
    """Moving things on a static camera, by background subtraction.

    Per frame: background model update (MOG2 or KNN) at a working size of at most ``max_side``
    px, median blur, opening (speckle, thin lines) and closing (joins an animal's parts), outer
    contours with at least ``min_area`` of the frame, merge of boxes closer than ``merge_gap``.
    A box's score is ``a / (a + a_min)`` for its foreground area ``a``: 0.5 at the minimum area,
    0.8 at four times it.

    The model learns from every frame it is given, in order, so give it consecutive (or evenly
    spaced) frames of one video. The first ``warmup`` frames get no boxes. Limits of the method:
    an animal already in the first frames leaves a "ghost" box where it stood until the model
    relearns that spot (about ``history / 10`` frames), and an animal that stays still that long
    fades into the background; moving shadows, reflections and people count as motion.
    """

    class_names = {0: "motion"}

    def __init__(self, cfg: MotionConfig | None = None):
        import cv2

        self.cfg = cfg = cfg or MotionConfig()
        self._cv2 = cv2
        self._seen = 0
        if cfg.method == "mog2":
            self._model = cv2.createBackgroundSubtractorMOG2(
                history=cfg.history, varThreshold=cfg.threshold or 16.0, detectShadows=False)
        else:
            self._model = cv2.createBackgroundSubtractorKNN(
                history=cfg.history, dist2Threshold=cfg.threshold or 400.0, detectShadows=False)

    def _mask(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Cleaned foreground mask at the working size, and the working scale."""
        cv2, cfg = self._cv2, self.cfg
        h, w = image.shape[:2]
        scale = min(1.0, cfg.max_side / max(h, w))
        if scale < 1:
            image = cv2.resize(image, (round(w * scale), round(h * scale)),
                               interpolation=cv2.INTER_AREA)
        rate = -1.0 if cfg.learning_rate is None else cfg.learning_rate
        mask = self._model.apply(image, learningRate=rate)  # (h, w) uint8: 0 or 255
        if cfg.blur:
            mask = cv2.medianBlur(mask, cfg.blur)
        for op, size in ((cv2.MORPH_OPEN, cfg.open_px), (cv2.MORPH_CLOSE, cfg.close_px)):
            if size > 1:
                kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
                mask = cv2.morphologyEx(mask, op, kernel)
        return mask, scale

    def _detect_one(self, frame: Frame) -> Detections:
        cv2, cfg = self._cv2, self.cfg
        mask, scale = self._mask(frame.image)
        self._seen += 1
        if self._seen <= cfg.warmup:
            return Detections.empty()
        min_px = cfg.min_area * mask.shape[0] * mask.shape[1]
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        boxes = [cv2.boundingRect(c) for c in contours if cv2.contourArea(c) >= max(min_px, 1)]
        if not boxes:
            return Detections.empty()
        xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=np.float64)
        xyxy = merge_boxes(xyxy, cfg.merge_gap * math.hypot(*mask.shape))
        fg = [np.count_nonzero(mask[int(y1):int(y2), int(x1):int(x2)]) for x1, y1, x2, y2 in xyxy]
        scores = np.array(fg, dtype=np.float64) / (np.array(fg) + max(min_px, 1))
        return Detections(xyxy / scale, scores, np.zeros(len(xyxy)))

    def detect(self, frames: Sequence[Frame]) -> list[Detections]:
        """Update the background with each frame and box what moves; see :meth:`Detector.detect`."""
        return [self._detect_one(f) for f in frames]

    def close(self) -> None:
        """Drop the background model."""
        self._model = None
