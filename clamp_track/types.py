"""Value types passed between the stages of the video pipeline.

Each is a dataclass of parallel numpy arrays (like supervision's ``Detections``) whose shapes and
dtypes are checked in ``__post_init__``, so a stage that produces a wrong shape fails where it
does so, not three stages later. Coordinates are frame pixels, (x, y), origin top-left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _check(name: str, array, shape: tuple, dtype) -> np.ndarray:
    """Convert ``array`` to ``dtype`` and check its shape; ``None`` in ``shape`` is any size."""
    out = np.asarray(array, dtype=dtype)
    if out.ndim != len(shape) or any(s is not None and s != o for s, o in zip(shape, out.shape)):
        raise ValueError(f"{name}: expected shape {shape}, got {out.shape}")
    return out


@dataclass(frozen=True)
class VideoInfo:
    """What a video is.

    Attributes:
        path: The file.
        width: Frame width in pixels.
        height: Frame height in pixels.
        fps: Average frame rate (frames per second).
        n_frames: Number of frames (as decoded; may be fewer than the container claims).
        codec: Codec name, e.g. ``"h264"``.
        rotation: Degrees (0, 90, 180, 270) a player turns the frames clockwise to show them
            upright (a phone's display matrix). Frames, sizes and coordinates here are always
            as stored, unrotated.
    """

    path: str
    width: int
    height: int
    fps: float
    n_frames: int
    codec: str = ""
    rotation: int = 0

    @property
    def duration_s(self) -> float:
        """Nominal duration: ``n_frames / fps``."""
        return self.n_frames / self.fps if self.fps else 0.0


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        index: 0-based frame index in the video.
        time_s: Presentation time in seconds (real timestamps: correct for variable frame rate).
        image: (H, W, 3) uint8 RGB.
    """

    index: int
    time_s: float
    image: np.ndarray

    def __post_init__(self):
        img = self.image
        if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3
                and img.dtype == np.uint8):
            got = getattr(img, "shape", type(img))
            raise ValueError(f"Frame.image must be (H, W, 3) uint8 RGB, got {got}")


@dataclass(frozen=True)
class Detections:
    """Animal boxes in one frame (from a detector, or tracked).

    Attributes:
        boxes: (N, 4) float32 ``x1, y1, x2, y2`` in frame pixels.
        scores: (N,) float32 confidences in [0, 1].
        class_ids: (N,) int64 detector class ids (0 when the detector has one class).
        track_ids: (N,) int64 track identities, -1 before tracking.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray = None
    track_ids: np.ndarray = None

    def __post_init__(self):
        boxes = _check("boxes", self.boxes, (None, 4), np.float32)
        n = len(boxes)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", _check("scores", self.scores, (n,), np.float32))
        for name in ("class_ids", "track_ids"):
            value = getattr(self, name)
            default = np.zeros(n) if name == "class_ids" else np.full(n, -1)
            object.__setattr__(self, name, _check(name, default if value is None else value,
                                                  (n,), np.int64))

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> Detections:
        """No detections."""
        return cls(np.zeros((0, 4)), np.zeros(0))

    def __getitem__(self, index) -> Detections:
        """Select detections by boolean mask or index array."""
        return Detections(self.boxes[index], self.scores[index], self.class_ids[index],
                          self.track_ids[index])


@dataclass(frozen=True)
class PosePredictions:
    """Keypoints of the tracked animals in one frame.

    Attributes:
        frame_index: The frame.
        track_ids: (N,) int64 track identities.
        boxes: (N, 4) float32 boxes the crops came from (``x1, y1, x2, y2``).
        keypoints: (N, K, 2) float32 keypoint (x, y) in frame pixels.
        scores: (N, K) float32 keypoint confidences (heatmap maxima).
        box_scores: (N,) float32 detection confidences.
    """

    frame_index: int
    track_ids: np.ndarray
    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    box_scores: np.ndarray = field(default=None)

    def __post_init__(self):
        ids = _check("track_ids", self.track_ids, (None,), np.int64)
        n = len(ids)
        kp = _check("keypoints", self.keypoints, (n, None, 2), np.float32)
        object.__setattr__(self, "track_ids", ids)
        object.__setattr__(self, "boxes", _check("boxes", self.boxes, (n, 4), np.float32))
        object.__setattr__(self, "keypoints", kp)
        object.__setattr__(self, "scores", _check("scores", self.scores, kp.shape[:2], np.float32))
        box_scores = np.ones(n) if self.box_scores is None else self.box_scores
        object.__setattr__(self, "box_scores", _check("box_scores", box_scores, (n,), np.float32))

    def __len__(self) -> int:
        return len(self.track_ids)
