"""Carry a reviewer's work from one run of a video to a re-run of it (after fine-tuning).

Track ids of a re-run mean other animals, so nothing is copied by id. What the reviewer did is
kept as *rules* (see :meth:`ResultStore.rules`): delete a track from frame a to b, merge two
tracks, swap two tracks from frame f; each rule holds the boxes of the tracks it concerned when
it was made. Replaying a rule finds the re-run's tracks whose boxes overlap those (mean IoU over
the rule's frames) and applies the same edit to them; a rule that finds no track, or finds the
re-run already right, is reported, never guessed. Then keypoint corrections (positions and
occluded marks alike) go to the re-run's instance whose box overlaps the corrected one in the
same frame (an animal the reviewer added is added again), and track names go to the
overlapping tracks. The re-run store records a :class:`CarryReport` (meta ``carried_from``)
that the GUI shows in its banner.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from clamp_track.data.transforms import box_iou
from clamp_track.errors import InputError

log = logging.getLogger(__name__)

# A re-run track is the same animal when its boxes overlap the rule's by this mean IoU.
MIN_OVERLAP = 0.5
# An instance of the re-run takes a correction when its box overlaps the corrected one by this.
MIN_INSTANCE_IOU = 0.3
# Keypoints that moved more than this (pixels) between the runs are counted in the report.
MOVED_PX = 5.0


@dataclass
class CarryReport:
    """What carrying the review work over to a re-run did.

    Attributes:
        source: The first run's store.
        rules: Rules replayed onto the re-run.
        unplaced: One line per rule that could not be placed (and why).
        corrections: Corrected keypoints carried over (occluded marks included).
        corrections_total: Corrected keypoints in the first run.
        names: Track names carried over.
        moved: Keypoints (corrected coordinates) that moved more than :data:`MOVED_PX` pixels.
        compared: Keypoints compared for ``moved`` (present in both runs).
    """

    source: str
    rules: int = 0
    unplaced: list[str] = field(default_factory=list)
    corrections: int = 0
    corrections_total: int = 0
    names: int = 0
    moved: int = 0
    compared: int = 0

    def line(self) -> str:
        """One line for the terminal and the GUI banner."""
        text = (f"carried {self.corrections} of {self.corrections_total} corrected keypoints, "
                f"{_count(self.rules, 'identity edit')} and {_count(self.names, 'track name')} "
                f"over; {self.moved} of {self.compared} keypoints moved more than "
                f"{MOVED_PX:g} px")
        if self.unplaced:
            text += (f"; {_count(len(self.unplaced), 'edit')} could not be placed")
        return text


def _count(n: int, noun: str) -> str:
    """``1 track name``, ``2 track names``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def overlaps(store, signature: dict) -> dict[int, float]:
    """Mean IoU of each track of ``store`` with a rule's boxes (``{frame: box}``)."""
    if not signature:
        return {}
    wanted = {int(f): np.asarray(b, np.float64) for f, b in signature.items()}
    total: dict[int, float] = defaultdict(float)
    for frame, track, *box in store.boxes_in(wanted):
        total[int(track)] += float(box_iou(wanted[int(frame)], box))
    return {t: v / len(wanted) for t, v in total.items()}


def match_track(store, signature: dict) -> int | None:
    """The track of ``store`` that is the animal of ``signature`` (None: none overlaps enough)."""
    scores = overlaps(store, signature)
    if not scores:
        return None
    track, score = max(scores.items(), key=lambda kv: kv[1])
    return track if score >= MIN_OVERLAP else None


def replay_rules(rules: list[dict], store) -> tuple[int, list[str]]:
    """Apply a first run's rules to a re-run's store, in the order they were made.

    Each applied rule is recorded again in ``store`` (with the re-run's boxes), so a further
    re-run carries it too.

    Returns:
        ``(applied, unplaced)``: how many rules were applied, and one line per rule that was
        not (no overlapping track, or the re-run already has the animals apart / together).
    """
    applied, unplaced = 0, []
    for rule in rules:
        try:
            why = _REPLAY[rule["kind"]](rule, store)
        except InputError as exc:
            why = str(exc)
        if why is None:
            applied += 1
        else:
            unplaced.append(f"{describe(rule)}: {why}")
    return applied, unplaced


def describe(rule: dict) -> str:
    """A rule in words, e.g. ``delete track 2 (frames 10-40)``."""
    kind = rule["kind"]
    if kind == "delete":
        last = "end" if rule["to_frame"] is None else rule["to_frame"]
        return f"delete track {rule['track']} (frames {rule['from_frame']}-{last})"
    if kind == "merge":
        return f"merge track {rule['other']} into {rule['keep']}"
    return f"swap tracks {rule['a']} and {rule['b']} from frame {rule['from_frame']}"


def _replay_delete(rule: dict, store) -> str | None:
    track = match_track(store, rule["boxes"])
    if track is None:
        return "no track of the re-run is there"
    store.delete_track(track, rule["from_frame"], rule["to_frame"])
    return None


def _replay_merge(rule: dict, store) -> str | None:
    keep, other = match_track(store, rule["keep_boxes"]), match_track(store, rule["other_boxes"])
    if keep is None or other is None:
        return "no track of the re-run is there"
    if keep == other:
        return "the re-run already has them as one track"
    store.merge_tracks(keep, other)
    return None


def _replay_swap(rule: dict, store) -> str | None:
    first = rule["from_frame"]
    a_then, b_then = match_track(store, rule["before_a"]), match_track(store, rule["before_b"])
    a_on, b_on = match_track(store, rule["after_a"]), match_track(store, rule["after_b"])
    if not rule["before_a"] and not rule["before_b"]:  # tracks starting there: just relabel
        a_then, b_then = a_on, b_on
    if None in (a_then, b_then, a_on, b_on):
        return "the re-run has no tracks there"
    if (a_then, b_then) == (b_on, a_on) and a_then != b_then:
        return "the re-run already follows the animals correctly there"
    if (a_then, b_then) != (a_on, b_on) or a_then == b_then:
        return "the re-run's tracks there do not match the edited ones"
    store.swap_tracks(a_then, b_then, first)
    return None


_REPLAY = {"delete": _replay_delete, "merge": _replay_merge, "swap": _replay_swap}


def carry_corrections(old, new) -> tuple[int, int]:
    """Copy every correction of ``old`` (positions and occluded marks) onto ``new``.

    In each corrected frame, the corrected instances of ``old`` are paired with instances of
    ``new`` by box overlap (greedy, highest IoU first); one with no partner is added to
    ``new`` as an animal of its own (the reviewer added it, or the re-run missed it), on the
    track that the old track's other frames went to when that track is free there.

    Returns:
        ``(carried, total)`` corrected keypoints.
    """
    rows = old.corrections()
    by_instance: dict[tuple[int, int], dict] = defaultdict(dict)
    for frame, track, keypoint, x, y, visible in rows:
        by_instance[(frame, track)][keypoint] = (x, y, bool(visible))
    track_map = {t: match_track(new, old.track_signature(t)) for t in {t for _, t in by_instance}}
    next_track = max(new.track_ids(), default=0) + 1
    carried = 0
    for frame in sorted({f for f, _ in by_instance}):
        if not new.has_frame(frame):
            continue
        before, after = old.frame_instances(frame), new.frame_instances(frame)
        mine = [int(t) for t in before["tracks"] if (frame, int(t)) in by_instance]
        pairs = _pair(before, after, mine)
        taken = {int(t) for t in after["tracks"]}
        for track in mine:
            target = pairs.get(track)
            if target is None:  # not in the re-run: add the animal as it was
                i = int(np.flatnonzero(before["tracks"] == track)[0])
                target = track_map.get(track)
                if target is None or target in taken:
                    target, next_track = next_track, next_track + 1
                new.add_instance(frame, target, before["boxes"][i], before["raw"][i][:, :2])
                taken.add(target)
            fixes = by_instance[(frame, track)]
            new.set_corrections(frame, target, fixes)
            carried += len(fixes)
    return carried, len(rows)


def _pair(before: dict, after: dict, tracks: list[int]) -> dict[int, int]:
    """Greedy IoU pairing of ``tracks`` of ``before`` with the instances of ``after``."""
    if not tracks or not len(after["tracks"]):
        return {}
    rows = [int(np.flatnonzero(before["tracks"] == t)[0]) for t in tracks]
    iou = box_iou(before["boxes"][rows][:, None], after["boxes"])
    pairs: dict[int, int] = {}
    while iou.size and iou.max() >= MIN_INSTANCE_IOU:
        i, j = np.unravel_index(int(iou.argmax()), iou.shape)
        pairs[tracks[i]] = int(after["tracks"][j])
        iou[i, :], iou[:, j] = -1, -1
    return pairs


def carry_names(old, new) -> int:
    """Give ``new``'s tracks the names of the ``old`` tracks they overlap; returns how many."""
    done = 0
    for track, name in old.track_names().items():
        target = match_track(new, old.track_signature(track))
        if target is not None:
            new.set_track_name(target, name)
            done += 1
    return done


def moved_keypoints(old, new, px: float = MOVED_PX) -> tuple[int, int]:
    """Keypoints (as corrected, where they were) that moved more than ``px`` between two runs.

    Instances are paired per frame by box overlap; a keypoint is compared where both runs
    have a position for it.

    Returns:
        ``(moved, compared)``.
    """
    old_t, new_t = old.tidy(), new.tidy()
    if old_t.empty or new_t.empty:
        return 0, 0
    old_boxes, new_boxes = old.boxes(), new.boxes()
    pairs = []
    for frame, a in old_boxes.groupby("frame"):
        b = new_boxes[new_boxes["frame"] == frame]
        if b.empty:
            continue
        iou = box_iou(a[["x1", "y1", "x2", "y2"]].to_numpy()[:, None],
                      b[["x1", "y1", "x2", "y2"]].to_numpy())
        while iou.size and iou.max() >= MIN_INSTANCE_IOU:
            i, j = np.unravel_index(int(iou.argmax()), iou.shape)
            pairs.append((int(frame), int(a["track"].iloc[i]), int(b["track"].iloc[j])))
            iou[i, :], iou[:, j] = -1, -1
    if not pairs:
        return 0, 0
    import pandas as pd

    key = pd.DataFrame(pairs, columns=["frame", "track", "new_track"])
    left = old_t.merge(key, on=["frame", "track"])
    both = left.merge(new_t, left_on=["frame", "new_track", "keypoint"],
                      right_on=["frame", "track", "keypoint"], suffixes=("", "_new"))
    dist = np.hypot(both["x"] - both["x_new"], both["y"] - both["y_new"]).to_numpy()
    finite = np.isfinite(dist)
    return int((dist[finite] > px).sum()), int(finite.sum())


def carry_review(old, new) -> CarryReport:
    """Replay rules, carry corrections and names from ``old`` onto ``new``; record the report.

    Args:
        old: The first run's store (read-only is enough).
        new: The re-run's store (writable).

    Returns:
        The :class:`CarryReport`, also stored in ``new`` (meta ``carried_from``).
    """
    report = CarryReport(str(Path(old.path).resolve()))
    report.rules, report.unplaced = replay_rules(old.rules(), new)
    report.corrections, report.corrections_total = carry_corrections(old, new)
    report.names = carry_names(old, new)
    report.moved, report.compared = moved_keypoints(old, new)
    for line in report.unplaced:
        log.warning("%s: %s", new.path, line)
    new.set_meta(carried_from=asdict(report))
    return report


def stored_report(store) -> CarryReport | None:
    """The :class:`CarryReport` a re-run's store holds (None: not a re-run)."""
    data = store.meta("carried_from")
    return CarryReport(**data) if data else None
