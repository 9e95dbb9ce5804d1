"""Multi-object tracking of animal boxes (ByteTrack) with prediction, re-linking and cleanup.

The online part gives boxes ids as the video streams and predicts boxes for frames without
detection; the offline part re-links tracks split by occlusions and drops short spurious tracks.
Online, :class:`Tracker` wraps ``trackers.ByteTrackTracker`` (Roboflow's ``trackers`` package;
supervision 0.31 no longer ships a ByteTrack). Offline, :func:`finalize_tracks` works on the
table of boxes the result store holds, so it also runs on a resumed or re-exported store.

How ``trackers`` 2.6 looks (read from its source; it may change in later versions):

* ``ByteTrackTracker(lost_track_buffer=30, frame_rate=30.0, track_activation_threshold=0.7,
  minimum_consecutive_frames=2, minimum_iou_threshold=0.1, high_conf_det_threshold=0.6,
  state_estimator_class=XYXYStateEstimator, iou=None)``.
* ``update(detections: sv.Detections, frame=None, timestamp=None) -> sv.Detections`` returns
  *every* input detection (reordered: matched high-score, matched low-score, unmatched
  low-score, then unmatched high-score), with ``tracker_id`` set, ``-1`` while a track is not
  yet confirmed (fewer than ``minimum_consecutive_frames`` consecutive matches). Ids are
  0-based, allocated per tracker instance on confirmation. Slicing keeps ``data`` arrays, so
  an index array put in ``data`` maps outputs back to inputs.
* Without ``timestamp`` every call is one Kalman step. With ``timestamp`` the Kalman step is
  ``(t - t_prev) * frame_rate`` frames and a lost track is pruned once its missed time exceeds
  ``lost_track_buffer / 30`` seconds (the buffer is counted in "30 FPS frames").
* ``tracked_objects`` gives the Kalman boxes and ids of confirmed tracks still alive (matched
  or lost within the buffer); ``reset()`` clears.

This module drives it with ``timestamp = frame_index`` and ``frame_rate = 1``, so the Kalman
step equals the number of frames since the last detection (detection may run every k-th frame)
and, passing ``lost_track_buffer * 30``, the lost-track budget is exactly
``TrackerConfig.lost_track_buffer`` frames of this video whatever its frame rate.

Track ids: the online id of a ByteTrack track is its ``tracker_id + 1`` (1, 2, ...; ``-1`` means
unconfirmed). :func:`finalize_tracks` maps online ids to final ids 1..M, numbered by first
appearance, or to ``-1`` for dropped tracks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clamp_track.config import check_fractions
from clamp_track.types import Detections

#: Columns :func:`finalize_tracks` needs in its table (extra columns are ignored).
TABLE_COLUMNS = ("frame", "track", "x1", "y1", "x2", "y2")

#: Frames at each end of a track used to estimate its velocity for re-linking.
VELOCITY_WINDOW = 10


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of the tracker; frame counts are frames of the video being tracked.

    Attributes:
        high_threshold: Detections scoring at least this are matched first and may start tracks;
            lower-scoring ones only continue existing tracks (ByteTrack's second stage).
        activation_threshold: Minimum score of a detection that starts a new track.
        match_iou: Minimum IoU between a track's predicted box and a detection to match them.
        confirm_detections: Consecutive detection frames a new track must be matched in before
            it gets an id; at least 2 (ByteTrack gives ids only on a match after the first).
        lost_track_buffer: Frames a track without detections is kept for re-matching online.
        min_track_length: Tracks present in fewer frames are dropped by :func:`finalize_tracks`
            (after re-linking).
        relink_max_gap: Largest gap in frames between the end of one track and the start of
            another that :func:`finalize_tracks` may join; 0 disables re-linking.
        relink_max_distance: Largest distance between where the ended track would be and where
            the new one starts, in box diagonals, for a re-link.
        relink_max_size_ratio: Largest ratio of box areas (larger / smaller) for a re-link.
        velocity_smoothing: Weight of the newest observation in the velocity estimate used by
            :meth:`Tracker.predict` (1 = last displacement only).
    """

    high_threshold: float = 0.5
    activation_threshold: float = 0.6
    match_iou: float = 0.3
    confirm_detections: int = 2
    lost_track_buffer: int = 20
    min_track_length: int = 10
    relink_max_gap: int = 90
    relink_max_distance: float = 1.0
    relink_max_size_ratio: float = 2.0
    velocity_smoothing: float = 0.5

    def __post_init__(self):
        check_fractions(self, "high_threshold", "activation_threshold", "match_iou",
                        "velocity_smoothing")
        for name in ("lost_track_buffer", "min_track_length", "relink_max_gap"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.confirm_detections < 2:
            raise ValueError(f"confirm_detections must be >= 2, got {self.confirm_detections}")
        if self.relink_max_distance <= 0 or self.relink_max_size_ratio < 1:
            raise ValueError("relink_max_distance must be > 0 and relink_max_size_ratio >= 1")


class _BoxMotion:
    """Constant-velocity model of one track's box: the centre moves, the size holds.

    The velocity (pixels per frame) is an exponential average of the displacements between
    observations, so a detection every k-th frame and pose-refined boxes in between both count.
    A second observation at the same frame (a refinement) replaces the first.
    """

    def __init__(self, frame: int, box: np.ndarray, score: float, class_id: int,
                 smoothing: float):
        self.smoothing = smoothing
        self.score, self.class_id = score, class_id
        self.frame, (self.center, self.size) = frame, _center_size(box)
        self.velocity = None  # no estimate before the second observed frame
        self._prev = None  # (frame, centre, velocity) before the latest observation

    def observe(self, frame: int, box: np.ndarray) -> None:
        """Take a box observed (or refined) at ``frame`` (not before the latest one)."""
        if frame < self.frame:
            raise ValueError(f"box for frame {frame} after one for frame {self.frame}")
        center, size = _center_size(box)
        if frame == self.frame and self._prev is None:  # refining the first observation
            self.center, self.size = center, size
            return
        if frame == self.frame:  # refining the latest observation: redo it
            prev_frame, prev_center, prev_velocity = self._prev
        else:
            self._prev = prev_frame, prev_center, prev_velocity = (self.frame, self.center,
                                                                   self.velocity)
        step = (center - prev_center) / (frame - prev_frame)
        a = self.smoothing
        self.velocity = step if prev_velocity is None else a * step + (1 - a) * prev_velocity
        self.frame, self.center, self.size = frame, center, size

    def box_at(self, frame: int) -> np.ndarray:
        """Box (x1, y1, x2, y2) extrapolated to ``frame``."""
        velocity = np.zeros(2) if self.velocity is None else self.velocity
        center = self.center + velocity * (frame - self.frame)
        return np.concatenate([center - self.size / 2, center + self.size / 2])


def _center_size(box) -> tuple[np.ndarray, np.ndarray]:
    box = np.asarray(box, dtype=np.float64)
    return (box[:2] + box[2:]) / 2, box[2:] - box[:2]


class Tracker:
    """Online ByteTrack over a video plus box prediction for frames without detection.

    Typical use (detection every ``k``-th frame)::

        tracker = Tracker(TrackerConfig())
        for frame in frames:
            if frame.index % k == 0:
                tracked = tracker.update(frame.index, detector(frame))
            else:
                tracked = tracker.predict(frame.index)
            poses = pose_model(frame, tracked[tracked.track_ids > 0])
            for tid, box in zip(poses.track_ids, boxes_from(poses)):
                tracker.refine(tid, box)  # optional: a better box for the next prediction
        mapping = tracker.finalize(store.boxes())  # online id -> final id (or -1)

    Frame indices must not go back: ``update`` needs a frame after the previous ``update``
    and not before the last ``predict``.
    """

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self._bytetrack = _make_bytetrack(self.config)
        self._motion: dict[int, _BoxMotion] = {}
        self._active: list[int] = []  # tracks matched at the latest update, in output order
        self._last_update: int | None = None
        self._frame: int | None = None

    def reset(self) -> None:
        """Forget all tracks (e.g. before another video); ids start at 1 again."""
        self.__init__(self.config)

    @property
    def active_track_ids(self) -> list[int]:
        """Ids of the tracks matched at the latest :meth:`update` (those :meth:`predict` gives)."""
        return list(self._active)

    def update(self, frame_index: int, detections: Detections) -> Detections:
        """Associate one frame's detections with the tracks.

        Args:
            frame_index: The frame the detections come from.
            detections: The detector's boxes and scores (``track_ids`` are ignored).

        Returns:
            The same detections in the same order, with ``track_ids`` set: an online id >= 1,
            or -1 for a detection not (yet) in a confirmed track.
        """
        frame_index = int(frame_index)
        if self._last_update is not None and frame_index <= self._last_update:
            raise ValueError(f"update({frame_index}) after update({self._last_update})")
        if self._frame is not None and frame_index < self._frame:
            raise ValueError(f"update({frame_index}) after predict({self._frame})")
        out = self._bytetrack.update(_to_supervision(detections), timestamp=float(frame_index))
        ids = np.full(len(detections), -1, dtype=np.int64)
        if len(out):
            ids[out.data["index"]] = np.where(out.tracker_id >= 0, out.tracker_id + 1, -1)
        self._last_update = self._frame = frame_index
        self._observe_matched(frame_index, detections, ids)
        return Detections(detections.boxes, detections.scores, detections.class_ids, ids)

    def _observe_matched(self, frame: int, detections: Detections, ids: np.ndarray) -> None:
        matched = np.flatnonzero(ids > 0)
        for i in matched:
            tid = int(ids[i])
            motion = self._motion.get(tid)
            if motion is None:
                self._motion[tid] = _BoxMotion(frame, detections.boxes[i],
                                               float(detections.scores[i]),
                                               int(detections.class_ids[i]),
                                               self.config.velocity_smoothing)
            else:
                motion.observe(frame, detections.boxes[i])
                motion.score = float(detections.scores[i])
                motion.class_id = int(detections.class_ids[i])
        self._active = [int(ids[i]) for i in matched]
        alive = {int(t) + 1 for t in self._bytetrack.tracked_objects.tracker_id}
        for tid in [t for t in self._motion if t not in alive]:
            del self._motion[tid]

    def predict(self, frame_index: int) -> Detections:
        """Boxes of the active tracks at a frame without detection.

        Each active track's box is extrapolated with constant velocity from its latest
        observation (a detection or a :meth:`refine` box); until a track has been observed at
        two frames since it got its id, its box holds still. Scores and class ids are those of
        the track's latest detection.

        Args:
            frame_index: A frame at or after the latest :meth:`update`.

        Returns:
            One box per active track, with its online id in ``track_ids``.
        """
        frame_index = int(frame_index)
        if self._last_update is not None and frame_index < self._last_update:
            raise ValueError(f"predict({frame_index}) before the last update({self._last_update})")
        self._frame = frame_index
        motions = [self._motion[t] for t in self._active]
        if not motions:
            return Detections.empty()
        return Detections(
            np.stack([m.box_at(frame_index) for m in motions]),
            np.array([m.score for m in motions]),
            np.array([m.class_id for m in motions]),
            np.array(self._active),
        )

    def refine(self, track_id: int, box, frame_index: int | None = None) -> None:
        """Give an active track a better box (e.g. around its pose) for later predictions.

        Args:
            track_id: An id from :attr:`active_track_ids`.
            box: (4,) ``x1, y1, x2, y2`` in frame pixels.
            frame_index: Frame of the box; defaults to the latest ``update``/``predict`` frame.
        """
        if int(track_id) not in self._active:
            raise ValueError(f"track {track_id} is not active (active: {self._active})")
        box = np.asarray(box, dtype=np.float64).reshape(4)
        if not np.isfinite(box).all():
            return
        self._motion[int(track_id)].observe(self._frame if frame_index is None else
                                            int(frame_index), box)

    def finalize(self, tracks_table) -> dict[int, int]:
        """Re-link and filter the tracks of a finished video; see :func:`finalize_tracks`."""
        return finalize_tracks(tracks_table, self.config)


def _make_bytetrack(config: TrackerConfig):
    from trackers import ByteTrackTracker

    # frame_rate=1 with timestamp=frame index: the Kalman step is in frames, and the lost-track
    # budget (lost_track_buffer / 30 "seconds") becomes exactly config.lost_track_buffer frames.
    return ByteTrackTracker(
        lost_track_buffer=config.lost_track_buffer * 30,
        frame_rate=1.0,
        track_activation_threshold=config.activation_threshold,
        minimum_consecutive_frames=config.confirm_detections,
        minimum_iou_threshold=config.match_iou,
        high_conf_det_threshold=config.high_threshold,
    )


def _to_supervision(detections: Detections):
    import supervision as sv

    return sv.Detections(
        xyxy=detections.boxes,
        confidence=detections.scores,
        class_id=detections.class_ids.astype(int),
        data={"index": np.arange(len(detections))},
    )


# ----------------------------------------------------------------------------- offline pass


@dataclass(frozen=True)
class _Segment:
    """Summary of one online track: where and how it starts and ends."""

    track: int
    start: int
    end: int
    n_frames: int
    first_box: np.ndarray
    last_box: np.ndarray
    start_velocity: np.ndarray  # centre velocity (px / frame) over its first frames
    end_velocity: np.ndarray  # ... and over its last frames


def finalize_tracks(tracks_table, config: TrackerConfig | None = None) -> dict[int, int]:
    """Re-link tracks split by short occlusions, drop short tracks, renumber 1..M.

    A track ending at frame ``e`` and another starting at ``s`` with ``0 < s - e <=
    relink_max_gap`` may be joined if their boxes are of similar size and the new track starts
    near where the old one would be: the distance from the new track's first box centre to the
    old one's last centre, or to that centre moved by the old track's end velocity (and
    symmetrically back from the new track's start velocity) — whichever is smaller — is at most
    ``relink_max_distance`` box diagonals. Pairs are joined one-to-one, greedily from the
    lowest cost (that distance plus a small penalty for long gaps); chains (a -> b -> c)
    follow. Then joined tracks present in fewer than ``min_track_length``
    frames are dropped, and the rest are numbered 1, 2, ... by first frame.

    Args:
        tracks_table: pandas DataFrame with one row per frame and track, columns
            ``frame, track, x1, y1, x2, y2`` (the boxes the pipeline stored, detected or
            predicted); rows with ``track < 1`` (unconfirmed) are ignored.
        config: Thresholds; defaults to ``TrackerConfig()``.

    Returns:
        ``{online id: final id}`` for every track id in the table; dropped tracks map to -1.
    """
    config = config or TrackerConfig()
    missing = [c for c in TABLE_COLUMNS if c not in tracks_table.columns]
    if missing:
        raise ValueError(f"tracks table lacks columns {missing}; needs {list(TABLE_COLUMNS)}")
    table = tracks_table[tracks_table["track"] >= 1]
    segments = [_summarize(int(t), rows) for t, rows in table.groupby("track", sort=True)]
    successor = _link_segments(segments, config) if config.relink_max_gap > 0 else {}
    chains = _chains(segments, successor)
    chains = [c for c in chains if sum(s.n_frames for s in c) >= config.min_track_length]
    chains.sort(key=lambda c: (c[0].start, c[0].track))
    mapping = {s.track: -1 for s in segments}
    for new_id, chain in enumerate(chains, start=1):
        for seg in chain:
            mapping[seg.track] = new_id
    return mapping


def apply_track_mapping(table, mapping: dict[int, int], column: str = "track"):
    """Rename tracks in a DataFrame by ``mapping`` and drop the rows of dropped tracks.

    Args:
        table: DataFrame with a track-id column (boxes or keypoints).
        mapping: From :func:`finalize_tracks`; ids absent from it are kept unchanged.
        column: Name of the track-id column.

    Returns:
        A new DataFrame without the rows mapped to -1, ids replaced.
    """
    ids = table[column].map(lambda t: mapping.get(int(t), int(t)))
    out = table.assign(**{column: ids})
    return out[out[column] >= 1].reset_index(drop=True)


def _summarize(track: int, rows) -> _Segment:
    rows = rows.sort_values("frame")
    frames = rows["frame"].to_numpy(dtype=np.int64)
    boxes = rows[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64)
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    return _Segment(
        track=track,
        start=int(frames[0]),
        end=int(frames[-1]),
        n_frames=len(np.unique(frames)),
        first_box=boxes[0],
        last_box=boxes[-1],
        start_velocity=_velocity(frames[:VELOCITY_WINDOW], centers[:VELOCITY_WINDOW]),
        end_velocity=_velocity(frames[-VELOCITY_WINDOW:], centers[-VELOCITY_WINDOW:]),
    )


def _velocity(frames: np.ndarray, centers: np.ndarray) -> np.ndarray:
    span = frames[-1] - frames[0]
    return (centers[-1] - centers[0]) / span if span > 0 else np.zeros(2)


def _link_cost(a: _Segment, b: _Segment, config: TrackerConfig) -> float:
    """Cost of continuing track ``a`` with track ``b`` (``inf`` if not allowed)."""
    gap = b.start - a.end
    if not 0 < gap <= config.relink_max_gap:
        return np.inf
    area_a, area_b = (_area(a.last_box), _area(b.first_box))
    if min(area_a, area_b) <= 0 or max(area_a, area_b) / min(area_a, area_b) > \
            config.relink_max_size_ratio:
        return np.inf
    (ca, _), (cb, _) = _center_size(a.last_box), _center_size(b.first_box)
    static = np.linalg.norm(cb - ca)
    moving = (np.linalg.norm(cb - (ca + a.end_velocity * gap))
              + np.linalg.norm(ca - (cb - b.start_velocity * gap))) / 2
    diagonal = (_diagonal(a.last_box) + _diagonal(b.first_box)) / 2
    distance = min(static, moving) / diagonal
    if distance > config.relink_max_distance:
        return np.inf
    return distance + 0.1 * gap / config.relink_max_gap


def _link_segments(segments: list[_Segment], config: TrackerConfig) -> dict[int, int]:
    """Greedy one-to-one choice of (ending track -> starting track) links; index -> index.

    The cheapest allowed link is taken first, then the cheapest among the tracks still free,
    and so on. (An optimal assignment minimising the summed cost would rather make two poor
    links than one good one, as it must pay for every track left unlinked.)
    """
    n = len(segments)
    if n < 2:
        return {}
    cost = np.array([[_link_cost(a, b, config) for b in segments] for a in segments])
    successor: dict[int, int] = {}
    taken: set[int] = set()
    for flat in np.argsort(cost, axis=None, kind="stable"):
        a, b = divmod(int(flat), n)
        if not np.isfinite(cost[a, b]):
            break
        if a not in successor and b not in taken:
            successor[a] = b
            taken.add(b)
    return successor


def _chains(segments: list[_Segment], successor: dict[int, int]) -> list[list[_Segment]]:
    heads = set(range(len(segments))) - set(successor.values())
    chains = []
    for head in sorted(heads):
        chain, i = [segments[head]], head
        while i in successor:
            i = successor[i]
            chain.append(segments[i])
        chains.append(chain)
    return chains


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0) * max(box[3] - box[1], 0))


def _diagonal(box: np.ndarray) -> float:
    return float(np.hypot(box[2] - box[0], box[3] - box[1])) or 1.0
