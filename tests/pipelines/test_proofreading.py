"""Review-queue suggestions, item status, marks kept in the store, and gap proposals (no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

from clamp_track.io.queue_marks import read_marks, write_marks
from clamp_track.io.store import ResultStore
from clamp_track.pipelines.qc import (
    Action,
    Reason,
    ReviewQueue,
    Status,
    Suspect,
    corrected_in,
    find_suspects,
    pair_name,
    suggest,
)
from clamp_track.pipelines.review import Correction, ReviewData, TrackArrays, gap_proposals
from clamp_track.skeleton import from_names

KPS = from_names(["snout", "left_ear", "right_ear", "tailbase"])  # flip pair (1, 2)
OFFSETS = np.array([[80.0, 50.0], [60.0, 30.0], [60.0, 70.0], [10.0, 50.0]])


def _track(track, frames, start_x=0.0, y=0.0, conf=0.9):
    """A 100x100 box moving right 1 px per frame, keypoints at fixed offsets in it."""
    frames = np.asarray(frames)
    x = start_x + frames - frames[0]
    boxes = np.stack([x, np.full_like(x, y), x + 100, np.full_like(x, y + 100)], 1)
    xy = boxes[:, None, :2] + OFFSETS[None]
    raw = np.concatenate([xy, np.full((len(frames), 4, 1), conf)], -1)
    return TrackArrays(track, frames.astype(np.int64), boxes.astype(np.float32),
                       raw.astype(np.float32), np.full_like(raw, np.nan, dtype=np.float32))


@pytest.fixture
def planted():
    """Track 1: a jump at 40, ears exchanged on 80–89; track 4 continues track 3."""
    t1 = _track(1, range(100))
    t1.raw[40, 0, 0] += 60
    t1.raw[80:90, [1, 2]] = t1.raw[80:90, [2, 1]]
    t3 = _track(3, range(0, 30), start_x=400.0, y=300.0)
    t4 = _track(4, range(35, 60), start_x=435.0, y=300.0)
    return ReviewData(KPS, 100, [t1, t3, t4])


def _one(suspects, reason, track=None, frame=None):
    found = [s for s in suspects if s.reason is reason and (track is None or s.track == track)
             and (frame is None or s.frame == frame)]
    assert len(found) == 1, found
    return found[0]


def test_each_kind_of_item_offers_one_action(planted):
    suspects = find_suspects(planted)
    merge = suggest(planted, _one(suspects, Reason.ID_SWITCH, 4), suspects)
    assert (merge.action, merge.label, merge.track, merge.other) == (
        Action.MERGE, "Merge 4 → 3", 3, 4)
    swap = _one(suspects, Reason.LEFT_RIGHT_SWAP, 1, 80)
    pair = suggest(planted, swap, suspects)  # until the swap back flagged at 90
    assert (pair.action, pair.label) == (Action.SWAP_PAIR,
                                         "Swap left/right ear on frames 80–89")
    assert (pair.keypoint, pair.partner, pair.first, pair.last) == (1, 2, 80, 89)
    jump = _one(suspects, Reason.JUMP, 1)
    fix = suggest(planted, jump, suspects)
    assert (fix.action, fix.keypoint) == (Action.FIX_KEYPOINT, 0)
    assert fix.label == "Fix snout on frames 40–41"
    assert "from frame 39 to 40" in jump.detail  # the item names its frames


def test_pair_names():
    assert pair_name("left eye", "right eye") == "left/right eye"
    assert pair_name("left_front_paw", "right_front_paw") == "left/right front paw"
    assert pair_name("nose", "tail") == "nose/tail"


def test_an_item_is_fixed_by_correcting_its_keypoint(planted):
    jump = _one(find_suspects(planted), Reason.JUMP, 1)
    assert not corrected_in(planted, jump)
    planted.set_correction(41, 1, 3, Correction(1.0, 1.0))  # another keypoint: not fixed
    assert not corrected_in(planted, jump)
    planted.set_correction(41, 1, 0, Correction(1.0, 1.0))
    assert corrected_in(planted, jump)


def test_queue_counts_reviewed_items_and_skips_them(planted):
    suspects = find_suspects(planted)
    statuses = {ReviewQueue.key(suspects[0]): Status.LOOKS_RIGHT}
    gone = Suspect(5, 5, 9, Reason.JUMP, 2.0, "fixed earlier")
    queue = ReviewQueue(suspects, statuses=statuses, done=[(gone, Status.FIXED)])
    assert (queue.reviewed, queue.total) == (2, len(suspects) + 1)
    assert queue.next() is suspects[1]  # the first one is reviewed already
    assert queue.next_open() is suspects[2]
    only = ReviewQueue(suspects[:1], statuses=statuses)
    assert only.next_open() is None and len(only.flagged_frames()) == 0


def test_marks_are_kept_in_the_store(tmp_path):
    from clamp_track.types import VideoInfo

    info = VideoInfo(path="v.mp4", width=640, height=480, fps=25.0, n_frames=10)
    path = tmp_path / "v.mp4.clamp.sqlite"
    store = ResultStore.create(path, {"keypoints": KPS.to_dict(), "video": info.__dict__})
    s = Suspect(3, 5, 1, Reason.JUMP, 2.5, "snout moved", keypoint=0)
    assert read_marks(store) == {}
    write_marks(store, {ReviewQueue.key(s): (s, Status.LOOKS_RIGHT)})
    store.close()
    with ResultStore.open(path, readonly=True) as again:
        assert read_marks(again) == {(3, 1, Reason.JUMP): (s, Status.LOOKS_RIGHT)}
    with ResultStore.open(path) as again:
        write_marks(again, {ReviewQueue.key(s): None})
        assert read_marks(again) == {}


def test_gap_proposals_interpolate_between_the_frames_around(planted):
    t1 = planted.tracks[1]
    keep = (t1.frames < 20) | (t1.frames > 23)  # animal 1 missing on 20–23
    planted.tracks[1] = TrackArrays(1, t1.frames[keep], t1.boxes[keep], t1.raw[keep],
                                    t1.smooth[keep])
    planted.set_correction(24, 1, 0, Correction(200.0, 50.0))  # a labelled end
    planted.set_correction(19, 1, 3, Correction.hidden())  # occluded at one end
    for frame in (21, 19, 24):  # inside the gap, or present next to it
        p = gap_proposals(planted, 1, frame)
        assert (p.before, p.after, p.frames.tolist()) == (19, 24, [20, 21, 22, 23])
    start, end = planted.tracks[1].raw[19, 0, :2], np.array([200.0, 50.0])
    np.testing.assert_allclose(p.xy[:, 0], [start + (end - start) * w
                                            for w in (0.2, 0.4, 0.6, 0.8)], rtol=1e-5)
    np.testing.assert_allclose(p.xy[:, 3], np.repeat(planted.tracks[1].raw[None, 20, 3, :2],
                                                     4, 0))  # the other end's position
    assert gap_proposals(planted, 1, 50) is None  # no gap there
    assert gap_proposals(planted, 1, 21, max_gap=3) is None  # too long


def test_the_swap_back_item_swaps_the_stretch_before_it(planted):
    suspects = find_suspects(planted)
    back = suggest(planted, _one(suspects, Reason.LEFT_RIGHT_SWAP, 1, 90), suspects)
    assert (back.first, back.last) == (80, 89)


def test_a_keypoint_not_found_is_no_jump(planted):
    planted.tracks[1].raw[40, 0, 2] = 0.0  # the jumping snout was not found there
    assert not [s for s in find_suspects(planted) if s.reason is Reason.JUMP]
