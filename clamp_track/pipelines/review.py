"""A result store's tracks in memory, with the user's corrections applied, for reviewing.

:class:`ReviewData` is what the review GUI draws and what the review queue
(:mod:`clamp_track.pipelines.qc`) scores. It holds every track's arrays (a 10-minute video
with a few animals is a few tens of MB) so a frame's instances are found by binary search
rather than by a query, and it mirrors the store's corrections so an edit never re-reads a
track. It never writes: the GUI writes to the store, then tells this object what changed
(:meth:`ReviewData.set_correction`, :meth:`ReviewData.reload`). No Qt here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from clamp_track.io.labels import added_instance_box
from clamp_track.skeleton import KeypointSet


class Coordinates(enum.Enum):
    """Which keypoint positions are shown: the model's, or the smoother's."""

    RAW = "raw"
    SMOOTHED = "smoothed"


@dataclass(frozen=True)
class Correction:
    """The user's position of one keypoint in one frame.

    Attributes:
        x: Frame pixels (None when not visible).
        y: Frame pixels (None when not visible).
        visible: False marks the keypoint occluded or absent.
    """

    x: float | None
    y: float | None
    visible: bool = True

    @classmethod
    def hidden(cls) -> Correction:
        """A keypoint marked occluded / absent."""
        return cls(None, None, False)


@dataclass
class TrackArrays:
    """One track as stored (see :meth:`ResultStore.track`).

    Attributes:
        track: Track id.
        frames: (T,) int64 frame indices, ascending.
        boxes: (T, 4) float32 boxes ``x1, y1, x2, y2`` in frame pixels.
        raw: (T, K, 3) float32 model keypoints ``x, y, confidence``.
        smooth: (T, K, 3) float32 smoothed keypoints ``x, y, variance`` (NaN where none).
    """

    track: int
    frames: np.ndarray
    boxes: np.ndarray
    raw: np.ndarray
    smooth: np.ndarray

    @cached_property
    def mean_confidence(self) -> float:
        """Mean keypoint confidence of the model over the track (NaN if empty).

        Computed once: the arrays of a loaded track do not change (a reload makes new ones).
        """
        conf = self.raw[..., 2]
        finite = conf[np.isfinite(conf)]
        return float(finite.mean()) if finite.size else float("nan")

    def row(self, frame: int) -> int | None:
        """The row of ``frame``, or None if the track is absent there."""
        i = int(np.searchsorted(self.frames, frame))
        return i if i < len(self.frames) and self.frames[i] == frame else None


@dataclass(frozen=True)
class Instance:
    """One animal in one frame, as the review GUI draws it.

    Attributes:
        track: Track id.
        box: (4,) ``x1, y1, x2, y2``.
        xy: (K, 2) shown positions: the correction where there is one, else the model's (raw or
            smoothed as asked; raw where the smoother has no value).
        confidence: (K,) the model's confidence (1 for corrected keypoints).
        corrected: (K,) bool, the user corrected this keypoint here.
        hidden: (K,) bool, the user marked it occluded / absent (``xy`` is then the model's).
    """

    track: int
    box: np.ndarray
    xy: np.ndarray
    confidence: np.ndarray
    corrected: np.ndarray
    hidden: np.ndarray


@dataclass(frozen=True)
class TrackStats:
    """One row of the track list.

    Attributes:
        track: Track id.
        frames: Frames the track is present in.
        first: First frame.
        last: Last frame.
        mean_confidence: Mean keypoint confidence of the model over the track.
        corrected_frames: Frames in which the user corrected at least one of its keypoints.
    """

    track: int
    frames: int
    first: int
    last: int
    mean_confidence: float
    corrected_frames: int


class ReviewData:
    """All tracks of a store plus the corrections, in memory.

    Smoothed positions follow the corrections (when frame times and the smoother's settings are
    given, as :meth:`from_store` does): a fix re-smooths its keypoint over the frames within
    :data:`FOLLOW_S` seconds, the fix a measurement of confidence 1, as the exports smooth the
    whole track (:func:`clamp_track.pipelines.run.corrected_table`); with no fix left nearby,
    the stored smoothing comes back exactly.

    Args:
        keypoints: The keypoint set of the predictions.
        n_frames: Frames in the video (the timeline's length; results may cover fewer).
        tracks: The tracks' arrays.
        corrections: ``(frame, track, keypoint, x, y, visible)`` rows, as the store lists them.
        times: (n_frames,) seconds of each frame (NaN where not processed), for smoothing.
        smoother: The run's smoother settings (None: smoothed positions stay as stored).
    """

    #: Seconds around a fix whose smoothed positions are recomputed (half of the window they
    #: are computed from, so the window's own edges never show).
    FOLLOW_S = 1.0

    def __init__(self, keypoints: KeypointSet, n_frames: int, tracks: Iterable[TrackArrays],
                 corrections: Iterable[tuple] = (), *, times: np.ndarray | None = None,
                 smoother=None):
        self.keypoints = keypoints
        self.n_frames = int(n_frames)
        self.tracks: dict[int, TrackArrays] = {t.track: t for t in tracks}
        self._times, self._smoother = times, smoother
        self._stored = {t: a.smooth.copy() for t, a in self.tracks.items()}
        # track -> frame -> keypoint -> Correction
        self._corrections: dict[int, dict[int, dict[int, Correction]]] = {}
        self._set_all_corrections(corrections)
        self._follow_all(self.tracks)

    @classmethod
    def from_store(cls, store) -> ReviewData:
        """Load everything from an open :class:`~clamp_track.io.store.ResultStore`."""
        from clamp_track.errors import ClampTrackError
        from clamp_track.pipelines.smoother import stored_config

        info = store.video_info
        frames, seconds = store.frame_times()
        n_frames = max(info.n_frames, int(frames.max()) + 1 if len(frames) else 0)
        times = np.full(n_frames, np.nan)
        times[frames] = seconds
        try:
            smoother = stored_config(store)
        except ClampTrackError:  # foreign settings: keep the stored smoothing
            smoother = None
        tracks = [_load_track(store, t) for t in store.track_ids()]
        return cls(store.keypoints, n_frames, tracks, store.corrections(), times=times,
                   smoother=smoother)

    def reload(self, store, tracks: Iterable[int] | None = None) -> None:
        """Re-read some tracks (all when None) and all corrections after an identity edit."""
        present = set(store.track_ids())
        wanted = present if tracks is None else set(tracks)
        for track in wanted | (set(self.tracks) - present):
            if track in present:
                self.tracks[track] = _load_track(store, track)
                self._stored[track] = self.tracks[track].smooth.copy()
            else:
                self.tracks.pop(track, None)
                self._stored.pop(track, None)
        self._set_all_corrections(store.corrections())
        self._follow_all(wanted & present)

    # ------------------------------------------------------------- smoothing follows fixes
    def _follow_all(self, tracks: Iterable[int]) -> None:
        for track in tracks:
            fixes = self._corrections.get(track, {})
            positions = self.corrected_positions(track) if fixes else None
            for frame, kps in fixes.items():
                for kp in kps:
                    self._follow(track, kp, frame, positions)

    def _follow(self, track: int, kp: int, frame: int, positions=None) -> None:
        """Recompute keypoint ``kp``'s smoothed positions near ``frame`` (class docstring).

        ``positions``: the track's :meth:`corrected_positions`, if already at hand.
        """
        arrays = self.tracks.get(track)
        i = arrays.row(frame) if arrays is not None else None
        stored = self._stored.get(track)
        if i is None or self._smoother is None or self._times is None or \
                not np.isfinite(stored[:, kp, 0]).any():
            return
        t = self._times[arrays.frames]
        gap = np.abs(t - t[i])
        near = np.flatnonzero(gap <= 2 * self.FOLLOW_S)
        inner = gap[near] <= self.FOLLOW_S
        rows = near[inner]
        fixes = self._corrections.get(track, {})
        if not any(kp in fixes.get(int(f), {}) for f in arrays.frames[near]):
            arrays.smooth[rows, kp] = stored[rows, kp]  # nothing to follow any more
            return
        from clamp_track.pipelines.smoother import smooth_track

        xy, conf = positions if positions is not None else self.corrected_positions(track)
        smooth, var = smooth_track(t[near], xy[near, kp:kp + 1], conf[near, kp:kp + 1],
                                   self._smoother)
        arrays.smooth[rows, kp, :2] = smooth[inner, 0]
        arrays.smooth[rows, kp, 2] = var[inner, 0]

    def _set_all_corrections(self, rows: Iterable[tuple]) -> None:
        self._corrections = {}
        for frame, track, kp, x, y, visible in rows:
            self._corrections.setdefault(track, {}).setdefault(frame, {})[kp] = Correction(
                x, y, bool(visible))

    # ---------------------------------------------------------------------- lookups
    @property
    def track_ids(self) -> list[int]:
        """Track ids, ascending."""
        return sorted(self.tracks)

    def tracks_at(self, frame: int) -> list[int]:
        """Tracks present in ``frame``."""
        return [t for t in self.track_ids if self.tracks[t].row(frame) is not None]

    def correction(self, frame: int, track: int, keypoint: int) -> Correction | None:
        """The user's correction of a keypoint, or None."""
        return self._corrections.get(track, {}).get(frame, {}).get(keypoint)

    def set_correction(self, frame: int, track: int, keypoint: int,
                       correction: Correction | None) -> None:
        """Mirror a correction just written to (or, with None, removed from) the store."""
        per_frame = self._corrections.setdefault(track, {})
        if correction is None:
            per_frame.get(frame, {}).pop(keypoint, None)
            if not per_frame.get(frame, True):
                del per_frame[frame]
        else:
            per_frame.setdefault(frame, {})[keypoint] = correction
        self._follow(track, keypoint, frame)

    def corrected_frames(self, track: int | None = None) -> np.ndarray:
        """Sorted frames with corrections (of one track, or of any)."""
        tracks = self._corrections if track is None else {track: self._corrections.get(track,
                                                                                        {})}
        frames = {f for per_frame in tracks.values() for f, kps in per_frame.items() if kps}
        return np.array(sorted(frames), dtype=np.int64)

    def instance(self, frame: int, track: int,
                 coordinates: Coordinates = Coordinates.RAW) -> Instance | None:
        """One track's instance in ``frame`` as drawn, or None if it is absent there."""
        arrays = self.tracks.get(track)
        i = arrays.row(frame) if arrays else None
        if i is None:
            return None
        xy = arrays.raw[i, :, :2].astype(np.float64)
        if coordinates is Coordinates.SMOOTHED:
            smooth = arrays.smooth[i, :, :2]
            xy = np.where(np.isfinite(smooth), smooth, xy)
        conf = arrays.raw[i, :, 2].astype(np.float64)
        k = self.keypoints.num_keypoints
        corrected, hidden = np.zeros(k, bool), np.zeros(k, bool)
        for kp, c in self._corrections.get(track, {}).get(frame, {}).items():
            corrected[kp] = True
            if c.visible:
                xy[kp], conf[kp] = (c.x, c.y), 1.0
            else:
                hidden[kp] = True
        return Instance(track, arrays.boxes[i].astype(np.float64), xy, conf, corrected, hidden)

    def instances(self, frame: int,
                  coordinates: Coordinates = Coordinates.RAW) -> list[Instance]:
        """Every instance in ``frame``, by track id."""
        found = (self.instance(frame, t, coordinates) for t in self.track_ids)
        return [i for i in found if i is not None]

    # ---------------------------------------------------------------------- whole tracks
    def corrected_positions(self, track: int) -> tuple[np.ndarray, np.ndarray]:
        """A track's raw keypoints with the corrections applied.

        Returns:
            ``xy`` (T, K, 2) float32 (NaN where marked occluded) and ``confidence`` (T, K)
            (1 where corrected and visible, 0 where marked occluded).
        """
        arrays = self.tracks[track]
        xy = arrays.raw[..., :2].copy()
        conf = arrays.raw[..., 2].copy()
        for frame, kps in self._corrections.get(track, {}).items():
            i = arrays.row(frame)
            if i is None:
                continue
            for kp, c in kps.items():
                xy[i, kp] = (c.x, c.y) if c.visible else (np.nan, np.nan)
                conf[i, kp] = 1.0 if c.visible else 0.0
        return xy, conf

    def mean_confidence(self, track: int) -> np.ndarray:
        """(T,) mean keypoint confidence of each of a track's instances (corrections count 1)."""
        _, conf = self.corrected_positions(track)
        return conf.mean(axis=1) if conf.size else np.zeros(len(conf))

    def shared_frames(self, a: int, b: int) -> int:
        """Number of frames in which tracks ``a`` and ``b`` are both present."""
        return len(np.intersect1d(self.tracks[a].frames, self.tracks[b].frames))

    def stats(self) -> list[TrackStats]:
        """One :class:`TrackStats` per track, by id."""
        out = []
        for track in self.track_ids:
            arrays = self.tracks[track]
            out.append(TrackStats(
                track=track,
                frames=len(arrays.frames),
                first=int(arrays.frames[0]) if len(arrays.frames) else 0,
                last=int(arrays.frames[-1]) if len(arrays.frames) else 0,
                mean_confidence=arrays.mean_confidence,
                corrected_frames=len(np.intersect1d(self.corrected_frames(track),
                                                    arrays.frames)),
            ))
        return out


def _load_track(store, track: int) -> TrackArrays:
    a = store.track(track)
    return TrackArrays(track, a["frames"], a["boxes"], a["raw"], a["smooth"])


# ------------------------------------------------------------------------ adding an animal
def place_instance(data: ReviewData, frame: int, track: int, at: tuple[float, float] | None,
                   frame_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints and box for an animal the detector missed, for the user to adjust.

    The shape is copied from the nearest frame in which the animal (``track``) is present, or,
    for a new animal, from the instance of any animal nearest in time; with no instance at
    all, the keypoints lie on an ellipse. Copied positions are kept when the animal's own
    instance is copied and ``at`` is None (a missed frame between two detections); otherwise
    the shape is centred on ``at`` (default: the frame's centre). Keypoints marked occluded in
    the copy go to the shape's centre.

    Args:
        data: The results.
        frame: The frame the animal is added to.
        track: Its track id (existing or new).
        at: Where the user wants it, frame pixels.
        frame_size: ``(width, height)``; the result is kept inside.

    Returns:
        ``(xy, box)``: (K, 2) float32 keypoints and (4,) float32 ``x1, y1, x2, y2``.
    """
    width, height = frame_size
    source = _nearest_instance(data, frame, [track]) if track in data.tracks else None
    keep_place = source is not None and at is None
    if source is None:
        source = _nearest_instance(data, frame, data.track_ids)
    k = data.keypoints.num_keypoints
    if source is None:
        angle = 2 * np.pi * np.arange(k) / max(k, 1)
        xy = np.stack([np.cos(angle) * width / 8, np.sin(angle) * height / 8], axis=1)
    else:
        xy = np.where(source.hidden[:, None] | ~np.isfinite(source.xy), np.nan, source.xy)
        if not np.isfinite(xy).any():
            xy = np.zeros((k, 2))
    centre = np.nanmean(xy, axis=0)
    xy = np.where(np.isfinite(xy), xy, centre)
    if not keep_place:
        xy = xy - centre + np.asarray(at if at is not None else (width / 2, height / 2))
    xy = np.clip(xy, 0, [width - 1, height - 1]).astype(np.float32)
    return xy, added_instance_box(xy, (width, height))


def _nearest_instance(data: ReviewData, frame: int, tracks: Iterable[int]) -> Instance | None:
    """The instance of one of ``tracks`` nearest in time to ``frame`` (earlier ones first)."""
    best, best_key = None, None
    for track in tracks:
        frames = data.tracks[track].frames
        if not len(frames):
            continue
        i = int(np.searchsorted(frames, frame))
        for j in (i - 1, i):  # the nearest before and at-or-after
            if 0 <= j < len(frames):
                key = (abs(int(frames[j]) - frame), int(frames[j]) > frame)
                if best_key is None or key < best_key:
                    best, best_key = (track, int(frames[j])), key
    return None if best is None else data.instance(best[1], best[0])


# ------------------------------------------------------------------------ gaps
#: Longest gap (frames without the animal) that :func:`gap_proposals` fills.
MAX_GAP = 30


@dataclass(frozen=True)
class GapProposal:
    """Keypoints proposed for frames where an animal is missing between two of its frames.

    Attributes:
        track: The animal.
        before: The frame before the gap where it is present (its positions as corrected).
        after: The frame after the gap where it is present.
        frames: (N,) the missing frames, ascending.
        xy: (N, K, 2) float32 positions, linear in time between ``before`` and ``after``.
    """

    track: int
    before: int
    after: int
    frames: np.ndarray
    xy: np.ndarray


def gap_proposals(data: ReviewData, track: int, frame: int,
                  max_gap: int = MAX_GAP) -> GapProposal | None:
    """Interpolate ``track`` across the gap at (or next to) ``frame``.

    The gap is the run of frames without the animal that contains ``frame`` or, when the
    animal is present at ``frame``, the one that starts right after it (or ends right
    before it). Its two ends are the nearest frames where the animal is present, with the
    user's corrections applied (labelled frames, where the user labelled them). A keypoint
    marked occluded at one end takes the other end's position; occluded at both, the centre
    of the interpolated animal.

    Returns:
        The proposal, or None if there is no such gap of at most ``max_gap`` frames.
    """
    arrays = data.tracks.get(track)
    if arrays is None or len(arrays.frames) < 2:
        return None
    frames = arrays.frames
    i = int(np.searchsorted(frames, frame))
    if i < len(frames) and frames[i] == frame:  # present: the gap just after, else before
        if i + 1 < len(frames) and frames[i + 1] > frame + 1:
            i += 1
        elif i > 0 and frames[i - 1] < frame - 1:
            pass
        else:
            return None
    if i == 0 or i >= len(frames):
        return None
    a, b = int(frames[i - 1]), int(frames[i])
    if not 1 <= b - a - 1 <= max_gap:
        return None
    xy, _ = data.corrected_positions(track)
    start, end = xy[i - 1].astype(np.float64), xy[i].astype(np.float64)
    start = np.where(np.isfinite(start), start, end)
    end = np.where(np.isfinite(end), end, start)
    gap = np.arange(a + 1, b)
    w = ((gap - a) / (b - a))[:, None, None]
    out = (1 - w) * start[None] + w * end[None]  # (N, K, 2)
    centre = np.nanmean(out, axis=1, keepdims=True) if np.isfinite(out).any() else \
        np.zeros((len(gap), 1, 2))
    out = np.where(np.isfinite(out), out, centre)
    return GapProposal(track, a, b, gap.astype(np.int64), out.astype(np.float32))


def is_proposal(data: ReviewData, frame: int, track: int) -> bool:
    """Whether ``track``'s instance in ``frame`` was placed, not predicted, and not labelled yet.

    Instances added by hand or proposed across a gap are stored with confidence 0 (see
    :meth:`ResultStore.add_instance`); the user's corrections make them labels.
    """
    arrays = data.tracks.get(track)
    i = arrays.row(frame) if arrays is not None else None
    if i is None:
        return False
    return bool(np.all(arrays.raw[i, :, 2] == 0)) and \
        not data._corrections.get(track, {}).get(frame)
