from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from clamp_track.errors import InputError
from clamp_track.io.store import ResultStore, store_path
from clamp_track.skeleton import from_names
from clamp_track.types import PosePredictions, VideoInfo

KPS = from_names(["snout", "leftear", "rightear", "tailbase"])


def _pose(frame, tracks, offset=0.0):
    n = len(tracks)
    kp = np.arange(n * 4 * 2, dtype=np.float32).reshape(n, 4, 2) + frame + offset
    boxes = np.tile(np.array([0, 0, 50, 40], np.float32), (n, 1)) + frame
    return PosePredictions(frame, tracks, boxes, kp, np.full((n, 4), 0.5), np.full(n, 0.9))


@pytest.fixture
def store(tmp_path):
    video = VideoInfo(str(tmp_path / "v.mp4"), 640, 480, 25.0, 10, "h264")
    s = ResultStore.create(store_path(tmp_path / "v.mp4"), {
        "keypoints": KPS.to_dict(), "video": video.__dict__, "config": {"a": 1}})
    for start in (0, 5):
        frames = [(f, f / 25, f % 2 == 0) for f in range(start, start + 5)]
        s.write_chunk(frames, [_pose(f, [1, 2] if f < 7 else [1]) for f, _, _ in frames],
                      state={"resume": {"next": start + 5}})
    yield s
    s.close()


def test_round_trip_and_metadata(store, tmp_path):
    assert store.path.name == "v.mp4.clamp.sqlite" and store.last_frame() == 9
    assert store.keypoints == KPS and store.video_info.width == 640 and not store.complete
    assert store.meta("resume") == {"next": 10}
    frames, times = store.frame_times()
    assert frames.tolist() == list(range(10)) and np.allclose(times, frames / 25)
    t1 = store.track(1)
    assert t1["frames"].tolist() == list(range(10)) and t1["raw"].shape == (10, 4, 3)
    assert np.allclose(t1["raw"][3, :, :2], _pose(3, [1]).keypoints[0])
    assert np.isnan(t1["smooth"]).all()
    assert store.track(2)["frames"].tolist() == list(range(7))
    reopened = ResultStore.open(store.path, readonly=True)
    assert reopened.meta("config") == {"a": 1} and reopened.track_ids() == [1, 2]


def test_tidy_applies_corrections_and_smoothing(store):
    frames = store.track(1)["frames"]
    xy = np.ones((10, 4, 2), np.float32) * 7
    store.write_smoothed(1, frames, xy, np.full((10, 4), 0.25))
    store.set_correction(4, 1, 2, 100.0, 200.0)
    store.set_correction(4, 1, 3, None, None, visible=False)
    df = store.tidy()
    assert len(df) == (10 + 7) * 4
    assert list(df.columns[:4]) == ["frame", "time_s", "track", "keypoint"]
    row = df[(df.frame == 4) & (df.track == 1) & (df.keypoint == "rightear")].iloc[0]
    assert (row.x, row.y, row.confidence, row.corrected) == (100.0, 200.0, 1.0, True)
    hidden = df[(df.frame == 4) & (df.track == 1) & (df.keypoint == "tailbase")].iloc[0]
    assert np.isnan(hidden.x) and hidden.confidence == 0.0
    assert (df[df.track == 1].x_smooth == 7).all() and (df[df.track == 2].x_smooth.isna()).all()
    raw = store.tidy(corrected=False)
    assert raw.corrected.sum() == 0 and store.corrected_frames() == [4]
    store.clear_correction(4, 1, 2)
    assert len(store.corrections()) == 1


def test_identity_edits(store):
    before1, before2 = store.track(1), store.track(2)
    store.swap_tracks(1, 2, from_frame=3)
    t1, t2 = store.track(1), store.track(2)
    assert t1["frames"].tolist() == [0, 1, 2, 3, 4, 5, 6]  # 1 before 3, then old 2's frames
    assert np.array_equal(t1["raw"][5], before2["raw"][5]) and np.array_equal(t1["raw"][1],
                                                                               before1["raw"][1])
    assert t2["frames"].tolist() == list(range(10))  # its own 0-2, then old 1's 3-9
    store.swap_tracks(1, 2, from_frame=3)  # a swap is its own inverse
    assert np.array_equal(store.track(1)["raw"], before1["raw"])
    with pytest.raises(InputError, match="both present in 7 frames"):
        store.merge_tracks(1, 2)
    store.delete_track(2, from_frame=0, to_frame=6)
    assert store.track_ids() == [1]
    store.remap_tracks({1: 5})
    assert store.track_ids() == [5] and store.track(5)["frames"].tolist() == list(range(10))


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        ResultStore.open(tmp_path / "nope.clamp.sqlite")
    junk = tmp_path / "junk.clamp.sqlite"
    junk.write_text("not a database at all" * 100)
    with pytest.raises(InputError, match="not a clamp-track result store"):
        ResultStore.open(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE x (a)").connection.commit()
    with pytest.raises(InputError, match="not a clamp-track result store"):
        ResultStore.open(other)


def test_correction_lookup_for_undo(store):
    assert store.correction(4, 1, 2) is None
    store.set_correction(4, 1, 2, 10.5, 20.5)
    assert store.correction(4, 1, 2) == (10.5, 20.5, True)
    store.set_correction(4, 1, 2, None, None, visible=False)
    assert store.correction(4, 1, 2) == (None, None, False)


def test_snapshot_and_restore_undo_a_delete(store):
    store.write_smoothed(2, np.arange(7), np.ones((7, 4, 2), np.float32), np.ones((7, 4)))
    store.set_correction(3, 2, 0, 1.0, 2.0)
    store.set_correction(6, 2, 1, 3.0, 4.0)
    before, tidy = store.track(2), store.tidy()
    part = store.snapshot(2, from_frame=5)
    assert [r[0] for r in part.instances] == [5, 6] and [r[0] for r in part.corrections] == [6]
    store.delete_track(2, from_frame=5)
    assert store.track(2)["frames"].tolist() == [0, 1, 2, 3, 4]
    store.restore(part)
    whole = store.snapshot(2)
    store.delete_track(2)
    assert store.track_ids() == [1] and store.corrections() == []
    store.restore(whole)
    after = store.track(2)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    import pandas as pd

    pd.testing.assert_frame_equal(store.tidy(), tidy)
    assert store.corrections() == [(3, 2, 0, 1.0, 2.0, 1), (6, 2, 1, 3.0, 4.0, 1)]
    kinds = [r[0] for r in store._db.execute("SELECT kind FROM edits ORDER BY id")]
    assert kinds == ["delete", "restore", "delete", "restore"]


def test_add_a_missed_instance(store):
    xy = np.array([[10, 20], [30, 40], [50, 60], [70, 80]], np.float32)
    store.add_instance(8, 2, (5, 15, 75, 85), xy)  # track 2 ended at frame 6
    track = store.track(2)
    assert track["frames"].tolist() == [0, 1, 2, 3, 4, 5, 6, 8]
    np.testing.assert_array_equal(track["raw"][-1], np.c_[xy, np.zeros(4)])
    assert track["boxes"][-1].tolist() == [5, 15, 75, 85]
    assert store.boxes().query("frame == 8 and track == 2").score.tolist() == [0.0]
    with pytest.raises(InputError, match="animal 2 is already in frame 8"):
        store.add_instance(8, 2, (0, 0, 1, 1), xy)
    with pytest.raises(InputError, match="frame 10 was not processed"):
        store.add_instance(10, 3, (0, 0, 1, 1), xy)
    with pytest.raises(ValueError, match=r"\(4, 2\)"):
        store.add_instance(9, 3, (0, 0, 1, 1), xy[:3])
    assert store.track_ids() == [1, 2]


class _InterruptedAfterBegin:
    """The store's connection, where Ctrl+C lands just as ``BEGIN IMMEDIATE`` returns (as when
    it waited for the lock a reader's checkpoint held)."""

    def __init__(self, db):
        self._db = db

    def execute(self, sql, *args):
        cursor = self._db.execute(sql, *args)
        if sql == "BEGIN IMMEDIATE":
            raise KeyboardInterrupt
        return cursor

    def __getattr__(self, name):
        return getattr(self._db, name)


def test_ctrl_c_as_a_chunk_begins_leaves_the_committed_chunks_in_the_file_alone(store):
    store._db = _InterruptedAfterBegin(store._db)
    with pytest.raises(KeyboardInterrupt):
        store.write_chunk([(10, 0.4, True)], [_pose(10, [1])], state={"resume": {"next": 11}})
    store.close()  # no "database is locked": the half-begun transaction is rolled back
    wal = store.path.with_name(store.path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # folded in: the file alone is whole
    with ResultStore.open(store.path, readonly=True) as again:
        assert again.last_frame() == 9 and again.meta("resume") == {"next": 10}
