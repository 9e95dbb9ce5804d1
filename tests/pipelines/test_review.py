"""Review data (tracks + corrections in memory) and the review queue, without Qt."""

from __future__ import annotations

import numpy as np
import pytest

from clamp_track.io.store import ResultStore, store_path
from clamp_track.pipelines.qc import QCConfig, Reason, ReviewQueue, find_suspects
from clamp_track.pipelines.review import (
    Coordinates,
    Correction,
    ReviewData,
    TrackArrays,
    place_instance,
)
from clamp_track.skeleton import from_names
from clamp_track.types import PosePredictions, VideoInfo

KPS = from_names(["snout", "leftear", "rightear", "tailbase"])  # flip pair (1, 2)
OFFSETS = np.array([[80.0, 50.0], [60.0, 30.0], [60.0, 70.0], [10.0, 50.0]])  # inside the box


def _track(track, frames, start_x=0.0, y=0.0, conf=0.9):
    """A 100x100 box moving right 1 px per frame, keypoints at fixed offsets in it."""
    frames = np.asarray(frames)
    x = start_x + frames - frames[0]
    boxes = np.stack([x, np.full_like(x, y), x + 100, np.full_like(x, y + 100)], 1)
    xy = boxes[:, None, :2] + OFFSETS[None]
    raw = np.concatenate([xy, np.full((len(frames), 4, 1), conf)], -1)
    smooth = np.concatenate([xy + 0.5, np.full((len(frames), 4, 1), 2.0)], -1)
    return TrackArrays(track, frames.astype(np.int64), boxes.astype(np.float32),
                       raw.astype(np.float32), smooth.astype(np.float32))


@pytest.fixture
def planted():
    """Track 1 with a planted jump, a low-confidence stretch and a left/right swap; track 2
    crossing it; track 4 continuing track 3 after a gap."""
    t1 = _track(1, range(100))
    t1.raw[40, 0, 0] += 60  # snout jumps out at 40 and back at 41 (0.42 box diagonals)
    t1.raw[60:70, :, 2] = 0.1  # low confidence
    t1.raw[80:, [1, 2]] = t1.raw[80:, [2, 1]]  # ears exchanged from frame 80 on
    t2 = _track(2, range(15, 31), start_x=10.0, y=5.0)  # overlaps track 1 (IoU ~0.8)
    t3 = _track(3, range(0, 30), start_x=400.0, y=300.0)
    t4 = _track(4, range(35, 60), start_x=435.0, y=300.0)
    return ReviewData(KPS, 100, [t1, t2, t3, t4])


def _find(suspects, reason, track=None):
    return [s for s in suspects if s.reason is reason and (track is None or s.track == track)]


def test_planted_problems_become_single_events(planted):
    suspects = find_suspects(planted)
    jumps = _find(suspects, Reason.JUMP)
    assert [(s.frame, s.end, s.track, s.keypoint) for s in jumps] == [(40, 41, 1, 0)]
    assert jumps[0].score == pytest.approx(61 / np.hypot(100, 100) / 0.3 * 0.95, rel=1e-3)
    assert "snout moved 0.43" in jumps[0].detail  # 60 px + 1 px of motion
    low = _find(suspects, Reason.LOW_CONFIDENCE)
    assert [(s.frame, s.end, s.track) for s in low] == [(60, 69, 1)]
    swaps = _find(suspects, Reason.LEFT_RIGHT_SWAP)
    assert [(s.frame, s.track) for s in swaps] == [(80, 1)]
    assert "leftear and rightear may be exchanged" == swaps[0].detail
    switches = _find(suspects, Reason.ID_SWITCH)
    assert {(s.frame, s.end, s.track, s.other) for s in switches} == {(15, 30, 1, 2),
                                                                     (35, 35, 4, 3)}
    # ranked: highest score first, every score past its threshold
    assert [s.score for s in suspects] == sorted((s.score for s in suspects), reverse=True)
    assert all(1.0 <= s.score <= 10.0 for s in suspects)


def test_a_clean_track_has_nothing_to_review():
    assert find_suspects(ReviewData(KPS, 50, [_track(1, range(50))])) == []


def test_correcting_the_jump_clears_it(planted):
    x, y = planted.tracks[1].raw[39, 0, :2] + (1, 0)
    planted.set_correction(40, 1, 0, Correction(float(x), float(y)))
    assert _find(find_suspects(planted), Reason.JUMP) == []
    planted.set_correction(40, 1, 0, None)
    assert len(_find(find_suspects(planted), Reason.JUMP)) == 1


def test_thresholds_are_configurable(planted):
    assert _find(find_suspects(planted, QCConfig(jump=0.5)), Reason.JUMP) == []
    assert _find(find_suspects(planted, QCConfig(low_confidence=0.05)),
                 Reason.LOW_CONFIDENCE) == []


def test_queue_navigation(planted):
    queue = ReviewQueue(find_suspects(planted))
    assert queue.previous() is None
    first, second = queue.next(), queue.next()
    assert first.score >= second.score and queue.previous() is first
    assert queue.next_in_time(41).frame == 60 and queue.next_in_time(99) is None
    assert queue.previous_in_time(60).frame == 40
    jumps = ReviewQueue(find_suspects(planted), reasons={Reason.JUMP})
    assert [s.frame for s in jumps.items] == [40] and jumps.next().frame == 40
    assert jumps.next() is None and jumps.is_visited(0)
    assert jumps.visited == {(40, 1, Reason.JUMP)}
    assert {40, 41, 60, 69, 80}.issubset(set(queue.flagged_frames().tolist()))


def test_instances_apply_corrections_and_coordinates(planted):
    planted.set_correction(10, 1, 0, Correction(5.0, 6.0))
    planted.set_correction(10, 1, 3, Correction.hidden())
    inst = planted.instance(10, 1)
    assert inst.xy[0].tolist() == [5.0, 6.0] and inst.confidence[0] == 1.0
    assert inst.corrected.tolist() == [True, False, False, True]
    assert inst.hidden.tolist() == [False, False, False, True]
    np.testing.assert_allclose(inst.xy[3], planted.tracks[1].raw[10, 3, :2])
    smooth = planted.instance(10, 1, Coordinates.SMOOTHED)
    np.testing.assert_allclose(smooth.xy[1], planted.tracks[1].smooth[10, 1, :2])
    assert smooth.xy[0].tolist() == [5.0, 6.0]  # a correction wins in either view
    planted.tracks[1].smooth[11] = np.nan
    np.testing.assert_allclose(planted.instance(11, 1, Coordinates.SMOOTHED).xy,
                               planted.tracks[1].raw[11, :, :2])  # raw where not smoothed
    assert [i.track for i in planted.instances(20)] == [1, 2, 3] and planted.tracks_at(32) == [1]
    assert planted.instance(99, 2) is None
    xy, conf = planted.corrected_positions(1)
    assert np.isnan(xy[10, 3]).all() and conf[10, 3] == 0.0 and conf[10, 0] == 1.0
    assert planted.corrected_frames().tolist() == [10]
    planted.set_correction(10, 1, 0, None)
    planted.set_correction(10, 1, 3, None)
    assert planted.corrected_frames().tolist() == []


def test_stats(planted):
    planted.set_correction(3, 2, 0, Correction(1.0, 1.0))
    stats = {s.track: s for s in planted.stats()}
    assert (stats[2].frames, stats[2].first, stats[2].last) == (16, 15, 30)
    assert stats[2].corrected_frames == 0  # track 2 is not in frame 3
    planted.set_correction(20, 2, 0, Correction(1.0, 1.0))
    assert {s.track: s for s in planted.stats()}[2].corrected_frames == 1
    assert stats[1].mean_confidence == pytest.approx((90 * 0.9 + 10 * 0.1) / 100, rel=1e-5)
    assert planted.shared_frames(1, 2) == 16 and planted.shared_frames(2, 4) == 0


def _pose(frame, tracks):
    n = len(tracks)
    kp = np.tile(OFFSETS[None], (n, 1, 1)).astype(np.float32) + frame
    boxes = np.tile(np.array([0, 0, 100, 100], np.float32), (n, 1)) + frame
    return PosePredictions(frame, tracks, boxes, kp, np.full((n, 4), 0.5), np.full(n, 0.9))


def test_load_and_reload_from_a_store(tmp_path):
    video = VideoInfo(str(tmp_path / "v.mp4"), 640, 480, 25.0, 30, "h264")
    with ResultStore.create(store_path(tmp_path / "v.mp4"), {
            "keypoints": KPS.to_dict(), "video": video.__dict__}) as store:
        store.write_chunk([(f, f / 25, True) for f in range(10)],
                          [_pose(f, [1, 2]) for f in range(10)])
        store.set_correction(3, 2, 1, 7.0, 8.0)
        data = ReviewData.from_store(store)
        assert data.n_frames == 30 and data.track_ids == [1, 2]
        assert data.correction(3, 2, 1) == Correction(7.0, 8.0, True)
        store.swap_tracks(1, 2, from_frame=0)
        store.delete_track(1, from_frame=5)
        data.reload(store, [1, 2])
        assert data.correction(3, 1, 1) == Correction(7.0, 8.0, True)
        assert data.tracks[1].frames.tolist() == [0, 1, 2, 3, 4]
        store.delete_track(1)
        data.reload(store)
        assert data.track_ids == [2]


def test_a_missed_animal_is_placed_from_its_nearest_instance(planted):
    # track 4 is absent at 60: its shape (with corrections) comes from 59, where it stood
    planted.set_correction(59, 4, 0, Correction(500.0, 320.0))
    xy, box = place_instance(planted, 60, 4, None, (640, 480))
    expected = planted.instance(59, 4).xy
    np.testing.assert_allclose(xy, expected)
    assert xy[0].tolist() == [500.0, 320.0]
    np.testing.assert_allclose(box, [*expected.min(0) - 10, *expected.max(0) + 10])
    # ... or is centred where the user asked
    xy, _ = place_instance(planted, 60, 4, (200.0, 100.0), (640, 480))
    np.testing.assert_allclose(xy.mean(0), [200.0, 100.0], atol=1e-4)
    np.testing.assert_allclose(xy - xy.mean(0), expected - expected.mean(0), atol=1e-4)


def test_a_new_animal_copies_the_nearest_instance_of_any_animal(planted):
    planted.set_correction(29, 3, 3, Correction.hidden())  # goes to the shape's centre
    for track in (1, 2):
        del planted.tracks[track]
    xy, _ = place_instance(planted, 32, 9, (300.0, 200.0), (640, 480))
    source = planted.instance(29, 3).xy  # 3 frames before vs 3 after (35): earlier wins
    source[3] = source[:3].mean(0)
    np.testing.assert_allclose(xy - xy.mean(0), source - source.mean(0), atol=1e-4)
    xy, _ = place_instance(planted, 34, 9, (300.0, 200.0), (640, 480))  # track 4 at 35
    shape = planted.instance(35, 4).xy
    np.testing.assert_allclose(xy - xy.mean(0), shape - shape.mean(0), atol=1e-4)


def test_with_no_animal_at_all_the_keypoints_lie_in_the_frame(planted):
    planted.tracks.clear()
    xy, box = place_instance(planted, 0, 1, None, (640, 480))
    np.testing.assert_allclose(xy.mean(0), [320, 240], atol=1e-3)
    assert len(np.unique(xy, axis=0)) == 4  # distinct, so each can be dragged
    xy, box = place_instance(planted, 0, 1, (5.0, 470.0), (640, 480))  # near a corner
    assert (xy >= 0).all() and (xy[:, 0] <= 639).all() and (xy[:, 1] <= 479).all()
    assert (box >= 0).all() and box[2] <= 640 and box[3] <= 480


def test_smoothed_positions_follow_a_fix_as_the_export_does_and_undo_exactly():
    from clamp_track.pipelines.smoother import SmootherConfig, smooth_track

    cfg = SmootherConfig()
    track = _track(1, range(200))
    times = np.arange(200) / 25.0
    xy, var = smooth_track(times, track.raw[..., :2], track.raw[..., 2], cfg)
    track.smooth = np.concatenate([xy, var[..., None]], -1).astype(np.float32)
    stored = track.smooth.copy()
    data = ReviewData(KPS, 200, [track], times=times, smoother=cfg)
    data.set_correction(100, 1, 0, Correction(400.0, 20.0))  # far from the prediction
    raw = track.raw[..., :2].astype(np.float64)
    conf = track.raw[..., 2].astype(np.float64)
    raw[100, 0], conf[100, 0] = (400.0, 20.0), 1.0
    full, _ = smooth_track(times, raw, conf, cfg)  # what the exports compute for the track
    shown = data.tracks[1].smooth
    near = slice(100 - 25, 100 + 26)  # within FOLLOW_S = 1 s
    np.testing.assert_allclose(shown[near, 0, :2], full[near, 0], atol=1e-3)
    assert abs(shown[101, 0, 0] - stored[101, 0, 0]) > 10  # the neighbours followed the fix
    np.testing.assert_array_equal(shown[:70], stored[:70])  # far away: untouched
    np.testing.assert_array_equal(shown[:, 1:], stored[:, 1:])  # other keypoints: untouched
    assert data.instance(100, 1, Coordinates.SMOOTHED).xy[0].tolist() == [400.0, 20.0]
    data.set_correction(100, 1, 0, None)  # undo
    np.testing.assert_array_equal(data.tracks[1].smooth, stored)
