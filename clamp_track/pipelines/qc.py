"""The review queue: where in a video a person should look, most suspicious first.

Four kinds of trouble are flagged per track, on the keypoints with the user's corrections
applied (so fixing a frame clears its flag):

* **low confidence**: the instance's mean keypoint confidence is below a threshold (DeepLabCut's
  ``uncertain`` outlier frames, SLEAP's prediction-score suggestions);
* **jump**: a keypoint moves further between consecutive frames than a fraction of the box
  diagonal (DeepLabCut's ``jump`` outliers, SLEAP's velocity suggestions); the diagonal makes
  it independent of the animal's size in pixels, and confident keypoints weigh more (a
  keypoint of confidence 0, not found or placed by hand, does not count);
* **left/right swap**: for a flip pair (left/right eye, paws...), exchanging the two points
  explains the motion from the previous frame much better than keeping them (SLEAP's label QC
  flags likely L/R swaps);
* **possible ID switch**: two tracks' boxes overlap strongly (animals crossing: where trackers
  swap identities), a track's box jumps, or a track starts shortly after another ended nearby
  (a broken track that may need merging).

Flagged frames of one track and kind that are close together form one :class:`Suspect` event,
so a 300-frame stretch of low confidence is one item, not 300. Each event's ``score`` is how far
past its threshold it went (1 = at the threshold, capped at :data:`MAX_SCORE`); the queue is
sorted by score, then by frame. Everything is vectorised numpy on
:class:`~clamp_track.pipelines.review.ReviewData`; no Qt.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from clamp_track.data.transforms import box_iou
from clamp_track.pipelines.review import ReviewData

#: Scores are capped here so one absurd value does not hide every other kind of problem.
MAX_SCORE = 10.0


class Reason(enum.Enum):
    """Why a frame is in the review queue."""

    LOW_CONFIDENCE = "low confidence"
    JUMP = "jump"
    LEFT_RIGHT_SWAP = "left/right swap"
    ID_SWITCH = "possible ID switch"


@dataclass(frozen=True)
class QCConfig:
    """Thresholds of the review queue.

    Attributes:
        low_confidence: An instance whose mean keypoint confidence is below this is flagged.
        jump: A keypoint moving more than this many box diagonals between consecutive frames is
            flagged (weighted by confidence: a point the model is unsure of counts half).
        swap_gain: A flip pair is flagged when exchanging its points lowers their summed
            frame-to-frame motion by this fraction or more.
        min_pair_separation: ... while the two points are at least this many box diagonals
            apart (close points exchange by noise).
        box_jump: A box centre moving more than this many box diagonals between consecutive
            frames is flagged as a possible ID switch.
        crossing_iou: Two tracks whose boxes overlap with at least this IoU are flagged.
        respawn_gap: A track starting within this many frames after another ended, within
            one box diagonal of where it ended, is flagged.
        merge_gap: Flagged frames of one track and kind at most this many frames apart form
            one event.
    """

    low_confidence: float = 0.3
    jump: float = 0.3
    swap_gain: float = 0.5
    min_pair_separation: float = 0.05
    box_jump: float = 0.5
    crossing_iou: float = 0.5
    respawn_gap: int = 30
    merge_gap: int = 3


@dataclass(frozen=True)
class Suspect:
    """One event in the review queue.

    Attributes:
        frame: The frame to look at: where the event starts.
        end: Its last frame.
        track: The track it concerns.
        reason: What is suspicious.
        score: Severity, >= 1 (how far past the threshold), at most :data:`MAX_SCORE`.
        detail: A short human description, e.g. ``"nose moved 0.8 box diagonals"``.
        keypoint: The keypoint concerned, if one.
        other: The other track concerned (ID switches), if one.
    """

    frame: int
    end: int
    track: int
    reason: Reason
    score: float
    detail: str
    keypoint: int | None = None
    other: int | None = None


@dataclass(frozen=True)
class _Flags:
    """Flagged frames of one track and kind: parallel arrays plus the event's fixed fields."""

    frames: np.ndarray  # (N,) int
    scores: np.ndarray  # (N,) float, >= 1
    details: list[str]
    keypoints: list[int | None]
    track: int
    reason: Reason
    other: int | None = None


def find_suspects(data: ReviewData, cfg: QCConfig = QCConfig()) -> list[Suspect]:
    """Score a whole video's tracks.

    Args:
        data: The tracks and corrections.
        cfg: Thresholds.

    Returns:
        Events sorted by score (highest first), then frame.
    """
    events = [e for track in data.track_ids for e in track_suspects(data, track, cfg)]
    return rank(events + pair_suspects(data, cfg))


def track_suspects(data: ReviewData, track: int, cfg: QCConfig = QCConfig()) -> list[Suspect]:
    """The events of one track on its own (low confidence, jumps, swaps, box jumps).

    They depend only on that track's arrays and corrections, so after an edit of one track only
    its events need recomputing.
    """
    return [e for f in _track_flags(data, track, cfg) for e in _events(f, cfg.merge_gap)]


def pair_suspects(data: ReviewData, cfg: QCConfig = QCConfig()) -> list[Suspect]:
    """The events between tracks (overlapping boxes, a track continuing another).

    They depend only on the boxes, which keypoint corrections do not change.
    """
    flags = _crossings(data, cfg) + _respawns(data, cfg)
    return [e for f in flags for e in _events(f, cfg.merge_gap)]


def rank(events: list[Suspect]) -> list[Suspect]:
    """Most suspicious first, then by frame and track."""
    return sorted(events, key=lambda e: (-e.score, e.frame, e.track))


def _track_flags(data: ReviewData, track: int, cfg: QCConfig) -> list[_Flags]:
    arrays = data.tracks[track]
    if not len(arrays.frames):
        return []
    xy, conf = data.corrected_positions(track)  # (T, K, 2), (T, K)
    diag = _diagonals(arrays.boxes)  # (T,)
    return [
        _low_confidence(arrays.frames, conf, track, cfg),
        _jumps(data, arrays.frames, xy, conf, diag, track, cfg),
        _swaps(data, arrays.frames, xy, diag, track, cfg),
        _box_jumps(arrays.frames, arrays.boxes, diag, track, cfg),
    ]


def _diagonals(boxes: np.ndarray) -> np.ndarray:
    """(T,) box diagonals in pixels, at least 1."""
    wh = boxes[:, 2:] - boxes[:, :2]
    return np.maximum(np.hypot(wh[:, 0], wh[:, 1]), np.float32(1.0))


def _low_confidence(frames, conf, track: int, cfg: QCConfig) -> _Flags:
    mean = conf.mean(axis=1) if conf.shape[1] else np.ones(len(frames))
    mean = np.nan_to_num(mean, nan=0.0)
    low = mean < cfg.low_confidence
    scores = 1.0 + (cfg.low_confidence - mean[low]) / max(cfg.low_confidence, 1e-9)
    details = [f"mean confidence {m:.2f}" for m in mean[low]]
    return _Flags(frames[low], scores, details, [None] * int(low.sum()), track,
                  Reason.LOW_CONFIDENCE)


def _steps(frames: np.ndarray) -> np.ndarray:
    """(T,) bool: the row follows the previous row's frame directly (the first row: False)."""
    step = np.zeros(len(frames), bool)
    step[1:] = np.diff(frames) == 1
    return step


def _jumps(data, frames, xy, conf, diag, track: int, cfg: QCConfig) -> _Flags:
    step = _steps(frames)
    moved = np.zeros(conf.shape, np.float32)  # (T, K) displacement from the previous frame
    moved[1:] = _dist(xy[1:], xy[:-1]) / diag[1:, None]
    weight = np.ones(conf.shape, np.float32)
    low = np.clip(np.minimum(conf[1:], conf[:-1]), 0.0, 1.0)
    # confidence 0: not found (a placeholder position, e.g. 0, 0) or placed, not a jump
    weight[1:] = np.where(low > 0, 0.5 + 0.5 * low, 0.0)
    score = moved * weight * step[:, None] / cfg.jump  # (T, K)
    score = np.nan_to_num(score, nan=0.0)
    worst = score.argmax(axis=1) if score.shape[1] else np.zeros(len(frames), int)
    best = score[np.arange(len(frames)), worst] if score.shape[1] else np.zeros(len(frames))
    hit = best >= 1.0
    names = data.keypoints.source_names
    details = [f"{names[k]} moved {moved[i, k]:.2f} box diagonals from frame "
               f"{frames[i] - 1} to {frames[i]}" for i, k in zip(np.flatnonzero(hit), worst[hit])]
    return _Flags(frames[hit], best[hit], details, [int(k) for k in worst[hit]], track,
                  Reason.JUMP)


def _swaps(data, frames, xy, diag, track: int, cfg: QCConfig) -> _Flags:
    pairs = data.keypoints.flip_pairs
    empty = _Flags(np.zeros(0, np.int64), np.zeros(0), [], [], track, Reason.LEFT_RIGHT_SWAP)
    if not pairs or len(frames) < 2:
        return empty
    left = xy[:, [a for a, _ in pairs]]  # (T, P, 2)
    right = xy[:, [b for _, b in pairs]]
    d = diag[1:, None]
    kept = (_dist(left[1:], left[:-1]) + _dist(right[1:], right[:-1])) / d  # (T-1, P)
    swapped = (_dist(left[1:], right[:-1]) + _dist(right[1:], left[:-1])) / d
    apart = _dist(left[:-1], right[:-1]) / d >= cfg.min_pair_separation
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = 1.0 - swapped / kept  # fraction of the motion the exchange explains away
    ok = apart & _steps(frames)[1:, None] & (kept > 0.5 * cfg.jump) & np.isfinite(gain)
    score = np.where(ok, gain / cfg.swap_gain, 0.0)
    worst = score.argmax(axis=1)
    best = score[np.arange(len(score)), worst]
    hit = np.flatnonzero(best >= 1.0)
    names = data.keypoints.source_names
    details = [f"{names[pairs[p][0]]} and {names[pairs[p][1]]} may be exchanged"
               for p in worst[hit]]
    return _Flags(frames[hit + 1], best[hit], details, [pairs[p][0] for p in worst[hit]],
                  track, Reason.LEFT_RIGHT_SWAP)


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance over the last axis (of size 2)."""
    d = a - b
    return np.hypot(d[..., 0], d[..., 1])


def _box_jumps(frames, boxes, diag, track: int, cfg: QCConfig) -> _Flags:
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    moved = np.zeros(len(frames))
    moved[1:] = _dist(centres[1:], centres[:-1]) / np.maximum(diag[1:], diag[:-1])
    score = np.where(_steps(frames), moved / cfg.box_jump, 0.0)
    hit = score >= 1.0
    details = [f"box moved {m:.2f} diagonals" for m in moved[hit]]
    return _Flags(frames[hit], score[hit], details, [None] * int(hit.sum()), track,
                  Reason.ID_SWITCH)


def _crossings(data: ReviewData, cfg: QCConfig) -> list[_Flags]:
    out = []
    ids = data.track_ids
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            ta, tb = data.tracks[a], data.tracks[b]
            if not _overlap_in_time(ta.frames, tb.frames):
                continue
            frames, ia, ib = np.intersect1d(ta.frames, tb.frames, return_indices=True)
            if not len(frames):
                continue
            iou = box_iou(ta.boxes[ia], tb.boxes[ib])
            hit = iou >= cfg.crossing_iou
            if hit.any():
                details = [f"tracks {a} and {b} overlap (IoU {v:.2f})" for v in iou[hit]]
                out.append(_Flags(frames[hit], iou[hit] / cfg.crossing_iou, details,
                                  [None] * int(hit.sum()), a, Reason.ID_SWITCH, other=b))
    return out


def _overlap_in_time(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two sorted frame lists have overlapping ranges (a cheap pre-check)."""
    return bool(len(a) and len(b) and a[0] <= b[-1] and b[0] <= a[-1])


def _respawns(data: ReviewData, cfg: QCConfig) -> list[_Flags]:
    """A track starting soon after another ended, close to where it ended."""
    out = []
    tracks = [data.tracks[t] for t in data.track_ids if len(data.tracks[t].frames)]
    for new in tracks:
        start = int(new.frames[0])
        best = None
        for old in tracks:
            end = int(old.frames[-1])
            gap = start - end
            if old is new or not 1 <= gap <= cfg.respawn_gap:
                continue
            a, b = old.boxes[-1], new.boxes[0]
            distance = _dist((a[:2] + a[2:]) / 2, (b[:2] + b[2:]) / 2) / _diagonals(a[None])[0]
            if distance <= 1.0 and (best is None or gap < best[0]):
                best = (gap, old.track)
        if best is not None:
            gap, old = best
            score = 1.0 + 1.0 - gap / (cfg.respawn_gap + 1)
            out.append(_Flags(np.array([start]), np.array([score]),
                              [f"starts {gap} frames after track {old} ended nearby"], [None],
                              new.track, Reason.ID_SWITCH, other=old))
    return out


def _events(flags: _Flags, merge_gap: int) -> list[Suspect]:
    """Group flagged frames closer than ``merge_gap`` into events."""
    if not len(flags.frames):
        return []
    order = np.argsort(flags.frames, kind="stable")
    frames = flags.frames[order]
    breaks = np.flatnonzero(np.diff(frames) > merge_gap) + 1
    events = []
    for group in np.split(np.arange(len(frames)), breaks):
        rows = order[group]
        worst = rows[int(np.argmax(flags.scores[rows]))]
        events.append(Suspect(
            frame=int(frames[group[0]]), end=int(frames[group[-1]]), track=flags.track,
            reason=flags.reason, score=float(min(flags.scores[worst], MAX_SCORE)),
            detail=flags.details[worst], keypoint=flags.keypoints[worst], other=flags.other,
        ))
    return events


class Status(enum.Enum):
    """Where a review-queue item stands (kept in the store: :mod:`clamp_track.io.queue_marks`)."""

    OPEN = "open"
    FIXED = "fixed"
    LOOKS_RIGHT = "looks right"


class Action(enum.Enum):
    """What a review-queue item suggests doing about it (:func:`suggest`)."""

    MERGE = "merge"  # give ``other``'s frames ``keep``'s id (a broken track)
    SWAP_TRACKS = "swap tracks"  # exchange two animals' ids from a frame on
    SWAP_PAIR = "swap pair"  # exchange a left/right keypoint pair over some frames
    FIX_KEYPOINT = "fix keypoint"  # place one keypoint by hand
    CHECK = "check"  # look; Enter if it looks right


@dataclass(frozen=True)
class Suggestion:
    """One item's suggested fix, offered as one action.

    Attributes:
        action: What to do.
        label: The button's text, e.g. ``"Merge 5 → 4"``, ``"Fix right shoulder"``.
        track: The animal the action changes (the id kept, for a merge).
        other: The second animal (merge: the id that goes; swap: the other animal).
        keypoint: The keypoint to place (FIX_KEYPOINT) or the left one of the pair (SWAP_PAIR).
        partner: The right keypoint of the pair (SWAP_PAIR).
        first: The first frame concerned.
        last: The last frame concerned.
    """

    action: Action
    label: str
    track: int
    other: int | None = None
    keypoint: int | None = None
    partner: int | None = None
    first: int = 0
    last: int = 0


def frames_text(first: int, last: int) -> str:
    """``"frame 12"`` or ``"frames 49–52"``."""
    return f"frame {first}" if last <= first else f"frames {first}–{last}"


def pair_name(a: str, b: str) -> str:
    """``"left eye", "right eye"`` -> ``"left/right eye"`` (else ``"a/b"``)."""
    ta, tb = a.replace("_", " ").split(" "), b.replace("_", " ").split(" ")
    if len(ta) == len(tb) and len(ta) > 1 and ta[1:] == tb[1:]:
        return f"{ta[0]}/{tb[0]} {' '.join(ta[1:])}"
    return f"{a}/{b}"


def suggest(data: ReviewData, suspect: Suspect, suspects: list[Suspect] = ()) -> Suggestion:
    """The one action that most likely fixes ``suspect``.

    * a track that starts where another ended: merge them, keeping the lower id;
    * two animals' boxes overlapping: swap their ids from the event's frame on;
    * a left/right swap: exchange the pair on the stretch between this event and the nearest
      other left/right event of the same pair and animal (in ``suspects``), the later one
      if it is as near (this event starts the stretch), else the earlier one (this event is
      the swap back); with none, on the event's frames;
    * a jump: place the keypoint that jumped; low confidence: place the least confident one;
    * a box that jumps: look at it.

    Args:
        data: The results (for names, and the least confident keypoint).
        suspect: The item.
        suspects: Every item (for the end of a left/right swap).
    """
    s, names = suspect, data.keypoints.source_names
    where = frames_text(s.frame, s.end)
    if s.reason is Reason.ID_SWITCH and s.other is not None and s.frame == s.end and \
            s.other in data.tracks and s.track in data.tracks and \
            data.shared_frames(s.track, s.other) == 0:
        keep, gone = min(s.track, s.other), max(s.track, s.other)
        return Suggestion(Action.MERGE, f"Merge {gone} → {keep}", keep, other=gone,
                          first=s.frame, last=s.end)
    if s.reason is Reason.ID_SWITCH and s.other is not None:
        return Suggestion(Action.SWAP_TRACKS, f"Swap animals {s.track} and {s.other} from "
                          f"frame {s.frame}", s.track, other=s.other, first=s.frame,
                          last=s.end)
    if s.reason is Reason.LEFT_RIGHT_SWAP and s.keypoint is not None:
        partner = dict(data.keypoints.flip_pairs).get(s.keypoint)
        if partner is not None:
            first, last = s.frame, s.end
            same = [o for o in suspects if o.reason is Reason.LEFT_RIGHT_SWAP and
                    o.track == s.track and o.keypoint == s.keypoint]
            later = min((o.frame for o in same if o.frame > s.end), default=None)
            earlier = max((o.frame for o in same if o.end < s.frame), default=None)
            if later is not None and (earlier is None or later - s.frame <= s.frame - earlier):
                last = later - 1
            elif earlier is not None:
                first, last = earlier, s.frame - 1
            name = pair_name(names[s.keypoint], names[partner])
            return Suggestion(Action.SWAP_PAIR, f"Swap {name} on {frames_text(first, last)}",
                              s.track, keypoint=s.keypoint, partner=partner, first=first,
                              last=last)
    if s.reason is Reason.JUMP and s.keypoint is not None:
        return Suggestion(Action.FIX_KEYPOINT, f"Fix {names[s.keypoint]} on {where}", s.track,
                          keypoint=s.keypoint, first=s.frame, last=s.end)
    if s.reason is Reason.LOW_CONFIDENCE and s.track in data.tracks:
        inst = data.instance(s.frame, s.track)
        if inst is not None and len(inst.confidence):
            k = int(np.argmin(np.where(inst.corrected, np.inf, inst.confidence)))
            return Suggestion(Action.FIX_KEYPOINT, f"Fix {names[k]} on {where}", s.track,
                              keypoint=k, first=s.frame, last=s.end)
    return Suggestion(Action.CHECK, f"Check animal {s.track} on {where}", s.track,
                      first=s.frame, last=s.end)


def corrected_in(data: ReviewData, suspect: Suspect) -> bool:
    """Whether the user corrected what ``suspect`` is about, within its frames.

    A jump or left/right item is about its keypoint (and the pair's partner); a
    low-confidence item about any keypoint of its animal; identity items are not fixed by
    keypoint corrections (their fix changes the tracks, which removes the item).
    """
    if suspect.reason is Reason.ID_SWITCH or suspect.track not in data.tracks:
        return False
    kps = None
    if suspect.keypoint is not None:
        kps = {suspect.keypoint}
        partner = dict(data.keypoints.flip_pairs + tuple(
            (b, a) for a, b in data.keypoints.flip_pairs)).get(suspect.keypoint)
        if suspect.reason is Reason.LEFT_RIGHT_SWAP and partner is not None:
            kps.add(partner)
    for frame in range(suspect.frame, suspect.end + 1):
        for k in range(data.keypoints.num_keypoints) if kps is None else kps:
            if data.correction(frame, suspect.track, k) is not None:
                return True
    return False


class ReviewQueue:
    """The ranked events with a cursor, for "next / previous suspicious frame".

    Items that were fixed (and so left the list of events) stay countable in ``done``, so
    the queue can say how much of it is reviewed: ``reviewed / total``.

    Args:
        suspects: Events, most suspicious first (as :func:`find_suspects` returns them).
        reasons: Only keep these kinds (None: all).
        visited: Keys (:meth:`key`) of events already looked at; shared, so the marks survive
            a recomputation after an edit.
        statuses: Status of each event by key (missing: open).
        done: Events resolved earlier that are no longer flagged, with their status.
    """

    def __init__(self, suspects: list[Suspect], reasons: set[Reason] | None = None,
                 visited: set[tuple] | None = None,
                 statuses: dict[tuple, Status] | None = None,
                 done: list[tuple[Suspect, Status]] = ()):
        self.items = [s for s in suspects if reasons is None or s.reason in reasons]
        self.done = [(s, st) for s, st in done if reasons is None or s.reason in reasons]
        self.cursor = -1  # index of the item shown last; -1 before the first
        self.visited: set[tuple] = set() if visited is None else visited
        self.statuses = {} if statuses is None else statuses

    @staticmethod
    def key(suspect: Suspect) -> tuple:
        """What identifies an event across recomputations (for the visited marks)."""
        return suspect.frame, suspect.track, suspect.reason

    def is_visited(self, index: int) -> bool:
        """Whether the user has been to item ``index``."""
        return self.key(self.items[index]) in self.visited

    def status(self, index: int) -> Status:
        """Where item ``index`` stands."""
        return self.statuses.get(self.key(self.items[index]), Status.OPEN)

    @property
    def total(self) -> int:
        """Items flagged now plus those fixed away earlier."""
        return len(self.items) + len(self.done)

    @property
    def reviewed(self) -> int:
        """Items fixed or marked as looking right."""
        return len(self.done) + sum(self.status(i) is not Status.OPEN
                                    for i in range(len(self.items)))

    def __len__(self) -> int:
        return len(self.items)

    def go(self, index: int) -> Suspect | None:
        """Make item ``index`` current and return it (None if out of range)."""
        if not 0 <= index < len(self.items):
            return None
        self.cursor = index
        self.visited.add(self.key(self.items[index]))
        return self.items[index]

    def next(self) -> Suspect | None:
        """The next open item in rank order (None after the last)."""
        for i in range(self.cursor + 1, len(self.items)):
            if self.status(i) is Status.OPEN:
                return self.go(i)
        return None

    def next_open(self) -> Suspect | None:
        """The next open item after the cursor, wrapping round (None when all are reviewed)."""
        n = len(self.items)
        for step in range(1, n + 1):
            i = (self.cursor + step) % n
            if self.status(i) is Status.OPEN:
                return self.go(i)
        return None

    def previous(self) -> Suspect | None:
        """The previous item in rank order (None before the first)."""
        return self.go(self.cursor - 1)

    def next_in_time(self, frame: int) -> Suspect | None:
        """The first item starting after ``frame`` (None if there is none)."""
        later = [i for i, s in enumerate(self.items) if s.frame > frame]
        return self.go(min(later, key=lambda i: (self.items[i].frame, i))) if later else None

    def previous_in_time(self, frame: int) -> Suspect | None:
        """The last item starting before ``frame`` (None if there is none)."""
        earlier = [i for i, s in enumerate(self.items) if s.frame < frame]
        return self.go(max(earlier, key=lambda i: (self.items[i].frame, -i))) if earlier else None

    def flagged_frames(self) -> np.ndarray:
        """Sorted frames covered by any open item (for the timeline)."""
        items = [s for i, s in enumerate(self.items) if self.status(i) is Status.OPEN]
        if not items:
            return np.zeros(0, np.int64)
        return np.unique(np.concatenate([np.arange(s.frame, s.end + 1) for s in items]))
