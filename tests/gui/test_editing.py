"""Fixing results in the GUI: real mouse and key events, checked in the store on disk."""

from __future__ import annotations

import numpy as np
import pytest
from PyQt6.QtCore import QPointF, Qt
from PyQt6.QtGui import QContextMenuEvent
from PyQt6.QtTest import QTest

from clamp_track.gui.state import Selection
from clamp_track.io.store import ResultStore
from clamp_track.pipelines.qc import Reason, find_suspects
from clamp_track.pipelines.review import place_instance

pytestmark = pytest.mark.usefixtures("qapp")

CTRL, SHIFT = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier


def _on_disk(path):
    """A second, read-only connection: what another process (or a restart) would see."""
    return ResultStore.open(path, readonly=True)


def _key(window, key, modifiers=Qt.KeyboardModifier.NoModifier):
    QTest.keyClick(window.view, key, modifiers)


def _open(window, results, wait_image, frame=0):
    assert window.open_paths(results.video, results.store)
    window.state.set_frame(frame)
    wait_image(window)


def _drag(view, start: QPointF, end: QPointF) -> None:
    """Press, move and release the left button on the view's viewport."""
    port = view.viewport()
    a, b = view.mapFromScene(start), view.mapFromScene(end)
    QTest.mousePress(port, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a)
    QTest.mouseMove(port, (a + b) / 2)
    QTest.mouseMove(port, b)
    QTest.mouseRelease(port, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, b)


def test_drag_a_keypoint_saves_it_and_undo_redo_follow(window, results, wait_image,
                                                       free_keypoint):
    _open(window, results, wait_image, frame=10)
    window.state.select([1])
    nose = free_keypoint(window.view, 1)
    name = window.state.data.keypoints.source_names[nose]
    item = window.view.keypoint_items[(1, nose)]
    start = item.pos()
    target = QPointF(min(start.x() + 40, 800), max(start.y() - 30, 10))
    _drag(window.view, start, target)

    scale = 1 / window.view.transform().m11()  # frame pixels per screen pixel
    with _on_disk(results.store) as disk:
        x, y, visible = disk.correction(10, 1, nose)
        assert visible and abs(x - target.x()) <= scale and abs(y - target.y()) <= scale
        assert disk.corrected_frames() == [10]
    inst = window.state.data.instance(10, 1)
    assert inst.corrected[nose] and window.state.selection == Selection((1,), nose)
    assert window.undo_stack.count() == 1 and name in window.undo_stack.undoText()
    moved = window.view.keypoint_items[(1, nose)].pos()  # redrawn where it was dropped
    assert abs(moved.x() - x) < 1e-3 and abs(moved.y() - y) < 1e-3

    _key(window, Qt.Key.Key_Z, CTRL)  # undo
    with _on_disk(results.store) as disk:
        assert disk.correction(10, 1, nose) is None and disk.corrected_frames() == []
    assert window.view.keypoint_items[(1, nose)].pos() == start
    _key(window, Qt.Key.Key_Z, CTRL | SHIFT)  # redo
    with _on_disk(results.store) as disk:
        assert disk.correction(10, 1, nose) == (x, y, True)
    _key(window, Qt.Key.Key_Z, CTRL)
    _key(window, Qt.Key.Key_Y, CTRL)  # the other redo shortcut
    with _on_disk(results.store) as disk:
        assert disk.correction(10, 1, nose) == (x, y, True)


def test_a_click_without_moving_is_no_edit_and_panning_moves_no_keypoint(window, results,
                                                                         wait_image,
                                                                         free_keypoint):
    _open(window, results, wait_image, frame=3)
    k = free_keypoint(window.view, 2)
    point = window.view.mapFromScene(window.view.keypoint_items[(2, k)].pos())
    QTest.mouseClick(window.view.viewport(), Qt.MouseButton.LeftButton,
                     Qt.KeyboardModifier.NoModifier, point)
    assert window.state.selection.tracks == (2,) and window.state.selection.keypoint == k
    assert window.undo_stack.count() == 0
    _drag(window.view, QPointF(840, 20), QPointF(700, 60))  # background: pans
    assert window.undo_stack.count() == 0
    with _on_disk(results.store) as disk:
        assert disk.corrections() == []


def test_mark_occluded_then_visible_then_reset(window, results, wait_image):
    _open(window, results, wait_image, frame=5)
    window.state.select([1], 4)
    _key(window, Qt.Key.Key_O)
    with _on_disk(results.store) as disk:
        assert disk.correction(5, 1, 4) == (None, None, False)
    assert window.state.data.instance(5, 1).hidden[4]
    assert window.keypoint_panel.model.data(window.keypoint_panel.model.index(4, 4)) == \
        "occluded"
    _key(window, Qt.Key.Key_O)  # visible again: back to the prediction
    with _on_disk(results.store) as disk:
        assert disk.correction(5, 1, 4) is None
    window.state.select([1], 6)
    window.view.keypointMoved.emit(1, 6, 100.0, 120.0)  # as a finished drag reports it
    _key(window, Qt.Key.Key_R)
    with _on_disk(results.store) as disk:
        assert disk.corrections() == []
    assert window.undo_stack.count() == 4
    for _ in range(4):
        window.undo_stack.undo()
    with _on_disk(results.store) as disk:
        assert disk.corrections() == []


def test_swap_two_animals_from_this_frame_on(window, results, wait_image):
    with _on_disk(results.store) as disk:
        before = {t: disk.track(t) for t in (1, 2)}
    _open(window, results, wait_image, frame=12)
    window.track_panel.view.selectAll()  # both animals, as a user ctrl-clicks them
    assert set(window.state.selection.tracks) == {1, 2}
    _key(window, Qt.Key.Key_T, CTRL)
    with _on_disk(results.store) as disk:
        one, two = disk.track(1), disk.track(2)
    np.testing.assert_array_equal(one["boxes"][:12], before[1]["boxes"][:12])
    np.testing.assert_array_equal(one["boxes"][12:], before[2]["boxes"][12:])
    np.testing.assert_array_equal(two["raw"][12:], before[1]["raw"][12:])
    np.testing.assert_array_equal(two["raw"][:12], before[2]["raw"][:12])
    assert window.state.data.tracks[1].boxes[20].tolist() == before[2]["boxes"][20].tolist()
    _key(window, Qt.Key.Key_Z, CTRL)
    with _on_disk(results.store) as disk:
        for t in (1, 2):
            np.testing.assert_array_equal(disk.track(t)["raw"], before[t]["raw"])


def test_merge_a_broken_track_and_delete_a_false_one_with_undo(window, results, wait_image):
    with ResultStore.open(results.store) as store:  # break the decoy's track in two
        store.reassign([(f, 2, 3) for f in range(16, 32)])
        store.set_correction(20, 3, 0, 50.0, 60.0)
        before = store.snapshot(2), store.snapshot(3)
    _open(window, results, wait_image, frame=20)
    window.state.select([2, 3])
    _key(window, Qt.Key.Key_M, CTRL)
    with _on_disk(results.store) as disk:
        assert disk.track_ids() == [1, 2] and disk.track(2)["frames"].tolist() == list(range(32))
        assert disk.correction(20, 2, 0) == (50.0, 60.0, True)  # corrections follow
    window.undo_stack.undo()
    with _on_disk(results.store) as disk:
        assert (disk.snapshot(2), disk.snapshot(3)) == before
    assert window.state.suspects == find_suspects(window.state.data)  # incremental == full

    window.state.select([2])
    _key(window, Qt.Key.Key_Delete, SHIFT)  # the whole (false) track
    with _on_disk(results.store) as disk:
        assert disk.track_ids() == [1, 3]
    assert window.state.selection.tracks == () and 2 not in window.state.data.tracks
    window.undo_stack.undo()
    with _on_disk(results.store) as disk:
        assert disk.snapshot(2) == before[0]
    window.state.select([3])
    _key(window, Qt.Key.Key_Delete)  # only this frame
    with _on_disk(results.store) as disk:
        assert 20 not in disk.track(3)["frames"].tolist() and len(disk.track(3)["frames"]) == 15
        assert disk.correction(20, 3, 0) is None
    window.undo_stack.undo()
    with _on_disk(results.store) as disk:
        assert disk.snapshot(3) == before[1]


def test_merging_animals_seen_together_is_refused_with_a_message(window, results, wait_image,
                                                                 messages):
    _open(window, results, wait_image)
    window.state.select([1, 2])
    _key(window, Qt.Key.Key_M, CTRL)
    assert messages and messages[-1][0] == "error" and "both present in 32 frames" in \
        messages[-1][2]
    assert window.undo_stack.count() == 0


def test_add_a_missed_animal_then_drag_its_keypoints(window, results, wait_image, messages):
    """Ctrl+I fills a frame the detector missed inside the current animal's track (its shape
    from the frame before); right-click → Add animal here adds a new animal there. Only the
    keypoints the user drags become labels; undo removes the animal again."""
    with ResultStore.open(results.store) as store:
        store.delete_track(1, 10, 10)  # a missed detection
        before = store.track(1)
    _open(window, results, wait_image, frame=10)
    window.state.select([1])
    assert window.state.data.instance(10, 1) is None
    _key(window, Qt.Key.Key_I, CTRL)
    previous = window.state.data.instance(9, 1)
    with _on_disk(results.store) as disk:
        added = disk.track(1)
        assert added["frames"].tolist() == list(range(32)) and disk.corrections() == []
        info = window.state.video_info  # the shape of frame 9, kept inside the frame
        np.testing.assert_allclose(added["raw"][10, :, :2], np.clip(
            previous.xy, 0, [info.width - 1, info.height - 1]), atol=1e-3)
        assert (added["raw"][10, :, 2] == 0).all()  # not a prediction: no confidence
    assert window.state.data.instance(10, 1) is not None
    assert (1, 0) in window.view.keypoint_items  # drawn, draggable
    window.undo_stack.undo()
    with _on_disk(results.store) as disk:
        assert disk.track(1)["frames"].tolist() == before["frames"].tolist()
    window.undo_stack.redo()

    window.view.fit()
    window.view.backgroundMenuRequested.disconnect()  # the menu's action, without the menu:
    window.view.backgroundMenuRequested.connect(lambda x, y, _: window.add_instance((x, y)))
    corner = QPointF(60.0, 40.0)  # a right click off any animal
    info = window.state.video_info
    expected, _ = place_instance(window.state.data, 10, 3, (corner.x(), corner.y()),
                                 (info.width, info.height))
    window.view.contextMenuEvent(QContextMenuEvent(
        QContextMenuEvent.Reason.Mouse, window.view.mapFromScene(corner)))
    assert max(window.state.data.track_ids) == 3 and window.state.selection.track == 3
    scale = 1 / window.view.transform().m11()  # the click is rounded to screen pixels
    np.testing.assert_allclose(window.state.data.instance(10, 3).xy, expected,
                               atol=scale + 1e-3)
    model = window.keypoint_panel.model
    assert model.data(model.index(0, 4)) == "placed"
    assert "drag it" in model.data(model.index(0, 4), Qt.ItemDataRole.ToolTipRole)
    # its keypoints may lie on top of each other (a shape kept inside the frame): the
    # selected one is dragged, the others are not offered in a list
    window.state.select([3], 0)
    item = window.view.keypoint_items[(3, 0)]
    assert item.selected
    target = QPointF(item.pos().x() + 25, item.pos().y() + 15)
    _drag(window.view, item.pos(), target)
    assert model.data(model.index(0, 4)) == "corrected"
    assert model.data(model.index(1, 4)) == "placed"
    with _on_disk(results.store) as disk:
        assert disk.track_ids() == [1, 2, 3] and [c[:3] for c in disk.corrections()] == [
            (10, 3, 0)]
    assert messages == []
    for _ in range(2):
        window.undo_stack.undo()
    with _on_disk(results.store) as disk:
        assert disk.track_ids() == [1, 2] and disk.corrections() == []


def test_accept_an_animals_keypoints_as_labels_in_one_undo_step(window, results, wait_image):
    from clamp_track.pipelines.review import Coordinates

    _open(window, results, wait_image, frame=12)
    window.state.select([1], 0)
    window.editor.move_keypoint(1, 0, 30.0, 40.0)
    window.state.select([1], 3)
    _key(window, Qt.Key.Key_O)  # occluded
    window.state.set_coordinates(Coordinates.SMOOTHED)  # accept what is shown
    shown = window.state.data.instance(12, 1, Coordinates.SMOOTHED).xy.copy()
    _key(window, Qt.Key.Key_A)
    k = window.state.data.keypoints.num_keypoints
    with _on_disk(results.store) as disk:
        rows = {c[2]: c[3:] for c in disk.corrections(12)}
    assert sorted(rows) == list(range(k))
    assert rows[0] == (30.0, 40.0, 1) and rows[3] == (None, None, 0)  # kept as they were
    for kp in set(range(k)) - {0, 3}:
        assert rows[kp] == (pytest.approx(shown[kp, 0]), pytest.approx(shown[kp, 1]), 1)
    assert f"Accept {k - 2} keypoints" in window.undo_stack.undoText()
    _key(window, Qt.Key.Key_Z, CTRL)  # one step
    with _on_disk(results.store) as disk:
        assert [c[2] for c in disk.corrections(12)] == [0, 3]


def test_adding_to_an_unprocessed_frame_or_an_unfinished_run_is_refused(window, results,
                                                                         wait_image, messages):
    with ResultStore.open(results.store) as store:
        store._db.execute("DELETE FROM frames WHERE frame = 5")
        store._db.commit()
    _open(window, results, wait_image, frame=5)
    window.state.select([])
    assert window.add_instance() is None
    assert "frame 5 was not processed" in messages[-1][2] and window.undo_stack.count() == 0
    window.close_session()
    with ResultStore.open(results.store) as store:
        store.set_meta(status="running")
    _open(window, results, wait_image, frame=6)
    assert window.add_instance() is None
    assert "resume the run first" in messages[-1][2] and window.undo_stack.count() == 0


def test_close_and_reopen_loses_nothing(qtbot, window, results, wait_image, messages):
    from clamp_track.gui.main_window import MainWindow

    _open(window, results, wait_image, frame=7)
    window.view.keypointMoved.emit(1, 0, 111.5, 222.5)
    window.state.select([1], 3)
    _key(window, Qt.Key.Key_O)
    window.state.select([2])
    _key(window, Qt.Key.Key_Delete, CTRL)  # track 2 from frame 7 on
    window.close()
    again = MainWindow()
    qtbot.addWidget(again)
    assert again.open_paths(results.video, results.store)
    again.state.set_frame(7)
    inst = again.state.data.instance(7, 1)
    assert inst.xy[0].tolist() == [111.5, 222.5] and inst.hidden[3]
    assert again.state.data.tracks[2].frames.tolist() == list(range(7))
    assert again.state.data.stats()[0].corrected_frames == 1
    again.close()


def _smooth_tracks_with_a_planted_jump(path, frame: int) -> None:
    """Make every track's keypoints its smoothed trajectory (confident), then move animal 1's
    keypoints 0.6 box diagonals away in one frame."""
    with ResultStore.open(path) as store:
        for t in store.track_ids():
            a = store.track(t)
            raw = a["smooth"].copy()
            raw[..., 2] = 0.9
            if t == 1:
                box = a["boxes"][frame]
                raw[frame, :, 0] += 0.6 * np.hypot(box[2] - box[0], box[3] - box[1])
            store._db.executemany(
                "UPDATE instances SET raw = ? WHERE frame = ? AND track = ?",
                [(r.astype(np.float32).tobytes(), int(f), t) for f, r in zip(a["frames"], raw)])


def test_the_review_queue_visits_a_planted_jump(window, results, wait_image):
    _smooth_tracks_with_a_planted_jump(results.store, 17)
    _open(window, results, wait_image)
    jumps = [s for s in window.state.queue.items if s.reason is Reason.JUMP]
    assert [(s.frame, s.end, s.track) for s in jumps] == [(17, 18, 1)]
    assert {17, 18}.issubset(set(window.timeline.flagged.tolist()))
    visited = []
    for _ in range(len(window.state.queue)):
        _key(window, Qt.Key.Key_N)
        visited.append((window.state.frame, window.state.selection.track))
    assert (17, 1) in visited
    assert window.queue_panel.model.rowCount() == len(window.state.queue)
    # fixing the frame (putting the keypoints back) empties the queue of that jump
    window.state.set_frame(17)
    for k, xy in enumerate(window.state.data.tracks[1].smooth[17, :, :2]):
        window.view.keypointMoved.emit(1, k, float(xy[0]), float(xy[1]))
    assert not [s for s in window.state.queue.items if s.reason is Reason.JUMP]
    assert window.state.suspects == find_suspects(window.state.data)  # incremental == full
    window.queue_panel.kind.setCurrentIndex(list(Reason).index(Reason.JUMP) + 1)
    assert len(window.state.queue) == 0
