"""Proofreading that ends: the review queue's state and actions, keypoints placed by name,
stacked keypoints, gap proposals and identity housekeeping (real events, the store on disk)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PyQt6.QtCore import QPointF, Qt
from PyQt6.QtTest import QTest
from PyQt6.QtWidgets import QMenu

from clamp_track.gui.state import Selection
from clamp_track.io.store import ResultStore
from clamp_track.pipelines.qc import Reason, Status
from clamp_track.pipelines.review import is_proposal

pytestmark = pytest.mark.usefixtures("qapp")

CTRL, SHIFT = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier
LEFT = Qt.MouseButton.LeftButton
NONE = Qt.KeyboardModifier.NoModifier


def _on_disk(path):
    return ResultStore.open(path, readonly=True)


def _key(window, key, modifiers=NONE):
    QTest.keyClick(window.view, key, modifiers)


def _open(window, results, wait_image, frame=0):
    assert window.open_paths(results.video, results.store)
    window.state.set_frame(frame)
    wait_image(window)


def _click_scene(view, point: QPointF) -> None:
    QTest.mouseClick(view.viewport(), LEFT, NONE, view.mapFromScene(point))


def _click_row(table, row: int) -> None:
    rect = table.visualRect(table.model().index(row, 1))
    QTest.mouseClick(table.viewport(), LEFT, NONE, rect.center())


def _break_track(path, at: int = 16) -> None:
    """Give animal 1's frames from ``at`` on the new id 3: one track broken in two."""
    with ResultStore.open(path) as store:
        store.reassign([(f, 1, 3) for f in range(at, 32)])


def test_queue_items_resolve_by_their_action_and_the_progress_is_kept(
        window, results, wait_image, qtbot):
    from clamp_track.gui.main_window import MainWindow

    _break_track(results.store)
    _open(window, results, wait_image)
    panel, queue = window.queue_panel, window.state.queue
    total = queue.total
    assert total >= 2 and panel.progress_label.text() == f"0 / {total} reviewed"
    broken = [i for i, s in enumerate(queue.items)
              if s.reason is Reason.ID_SWITCH and (s.track, s.other) == (3, 1)]
    assert len(broken) == 1
    _click_row(panel.view, broken[0])  # one click goes there
    assert window.state.frame == 16 and window.state.selection.tracks == (3, 1)
    assert panel.action_button.isVisible() and panel.action_button.text() == "Merge 3 → 1"
    _key(window, Qt.Key.Key_Return, CTRL)  # do it
    with _on_disk(results.store) as disk:
        assert disk.track_ids() == [1, 2] and len(disk.track(1)["frames"]) == 32
    queue = window.state.queue
    assert [(s.track, st) for s, st in queue.done if s.reason is Reason.ID_SWITCH] == [
        (3, Status.FIXED)]
    # the broken track's own items (low confidence...) live on in animal 1's: not counted
    assert queue.total <= total
    total = queue.total
    assert panel.progress_label.text() == f"1 / {total} reviewed"

    _key(window, Qt.Key.Key_Z, CTRL)  # undo: the tracks and the item come back
    assert window.state.data.track_ids == [1, 2, 3]
    assert window.state.queue.reviewed == 0
    assert any((s.track, s.other) == (3, 1) for s in window.state.queue.items)
    _key(window, Qt.Key.Key_Z, CTRL | SHIFT)
    assert window.state.data.track_ids == [1, 2] and window.state.queue.reviewed == 1

    # Enter: looks right, next open item
    window.go_to_suspect(0)
    first = window.state.queue.items[0]
    _key(window, Qt.Key.Key_Return)
    queue = window.state.queue
    assert queue.status(0) is Status.LOOKS_RIGHT and queue.cursor != 0
    assert queue.status(queue.cursor) is Status.OPEN
    assert panel.model.data(panel.model.index(0, 5)) == "✓ looks right"
    label = panel.progress_label.text()
    assert label == f"2 / {total} reviewed"
    _key(window, Qt.Key.Key_Z, CTRL)  # a mistaken Enter is undone like an edit
    assert window.state.queue.status(0) is Status.OPEN
    _key(window, Qt.Key.Key_Z, CTRL | SHIFT)
    assert window.state.queue.status(0) is Status.LOOKS_RIGHT

    again = MainWindow()  # a new session on the same file
    qtbot.addWidget(again)
    assert again.open_paths(results.video, results.store)
    assert again.queue_panel.progress_label.text() == label
    assert again.state.queue.items[0] == first and again.state.queue.status(0) is \
        Status.LOOKS_RIGHT
    again.close()


def test_an_item_resolves_when_its_keypoint_is_fixed(window, results, wait_image):
    _open(window, results, wait_image)
    queue = window.state.queue
    low = [i for i, s in enumerate(queue.items) if s.reason is Reason.LOW_CONFIDENCE]
    assert low, "random weights: every instance has low confidence"
    window.go_to_suspect(low[0])
    suggestion = window.queue_panel.suggestion
    assert window.queue_panel.action_button.text().startswith("Fix ")
    _key(window, Qt.Key.Key_Return, CTRL)  # arms placing the keypoint it names
    assert window.placing == (suggestion.track, suggestion.keypoint)
    _click_scene(window.view, QPointF(200.5, 150.5))
    assert window.state.queue.status(low[0]) is Status.FIXED
    assert window.state.queue.reviewed == 1
    _key(window, Qt.Key.Key_Z, CTRL)
    assert window.state.queue.status(low[0]) is Status.OPEN
    # Enter typed into the frame box goes to that frame; it marks nothing
    window.activateWindow()
    window.frame_box.setFocus()
    window.frame_box.lineEdit().selectAll()
    QTest.keyClicks(window.frame_box.lineEdit(), "12")
    QTest.keyClick(window.frame_box.lineEdit(), Qt.Key.Key_Return)
    assert window.state.frame == 12 and window.state.queue.reviewed == 0


def test_place_a_keypoint_by_its_number_or_its_row(window, results, wait_image):
    _open(window, results, wait_image, frame=5)
    window.state.select([1])
    _key(window, Qt.Key.Key_3)  # keypoint 3 (index 2)
    assert window.placing == (1, 2) and window.view.placing
    target = QPointF(300.25, 200.75)
    _click_scene(window.view, target)
    scale = 1 / window.view.transform().m11()
    with _on_disk(results.store) as disk:
        x, y, visible = disk.correction(5, 1, 2)
    assert visible and abs(x - target.x()) <= scale and abs(y - target.y()) <= scale
    assert window.placing is None and not window.view.placing
    assert window.state.selection == Selection((1,), 2)

    _click_row(window.keypoint_panel.view, 4)  # in the keypoint list
    assert window.placing == (1, 4)
    _key(window, Qt.Key.Key_Escape)  # cancel: a click pans again, places nothing
    assert window.placing is None
    _click_scene(window.view, QPointF(50.0, 60.0))
    with _on_disk(results.store) as disk:
        assert disk.correction(5, 1, 4) is None
    _click_row(window.keypoint_panel.view, 4)
    _click_scene(window.view, QPointF(50.0, 60.0))
    with _on_disk(results.store) as disk:
        assert disk.correction(5, 1, 4) is not None


def test_stacked_keypoints_offer_a_list(window, results, wait_image, qtbot, monkeypatch):
    _open(window, results, wait_image, frame=5)
    state = window.state
    xy = state.data.instance(5, 1).xy
    spot = (float(xy[0, 0]) + 30, float(xy[0, 1]) + 20)
    window.editor.move_keypoint(1, 0, *spot)
    window.editor.move_keypoint(1, 1, *spot)  # two keypoints on top of each other
    state.select([1])
    shown = []
    monkeypatch.setattr(QMenu, "exec", lambda menu, *a: shown.append(
        [act.text() for act in menu.actions()]))
    with qtbot.waitSignal(window.view.stackedPressed) as pressed:
        _click_scene(window.view, QPointF(*spot))
    stacked = pressed.args[0]
    assert {(1, 0), (1, 1)} <= set(stacked)
    names = state.data.keypoints.source_names
    assert f"{names[1]} (animal 1)" in shown[0] and f"{names[0]} (animal 1)" in shown[0]
    menu = window.stacked_menu(stacked)
    menu.actions()[stacked.index((1, 0))].trigger()
    assert state.selection == Selection((1,), 0)
    # the chosen one is on top now: a press drags it, the other stays
    port, a = window.view.viewport(), window.view.mapFromScene(QPointF(*spot))
    b = window.view.mapFromScene(QPointF(spot[0] + 40, spot[1]))
    QTest.mousePress(port, LEFT, NONE, a)
    QTest.mouseMove(port, b)
    QTest.mouseRelease(port, LEFT, NONE, b)
    with _on_disk(results.store) as disk:
        assert disk.correction(5, 1, 0)[0] > spot[0] + 20
        assert disk.correction(5, 1, 1)[:2] == pytest.approx(spot)


def test_a_gap_is_filled_with_proposals_the_user_accepts(window, results, wait_image):
    with ResultStore.open(results.store) as store:
        store.delete_track(1, 10, 12)
    _open(window, results, wait_image, frame=11)
    state = window.state
    state.select([1])
    before, after = (state.data.instance(f, 1).xy for f in (9, 13))
    _key(window, Qt.Key.Key_G, CTRL)
    assert "on 3 frames" in window.statusBar().currentMessage()  # and what to do next
    with _on_disk(results.store) as disk:
        track = disk.track(1)
        assert {10, 11, 12} <= set(track["frames"].tolist())
        rows = [track["frames"].tolist().index(f) for f in (10, 11, 12)]
        for w, row in zip((0.25, 0.5, 0.75), rows):
            np.testing.assert_allclose(track["raw"][row, :, :2], (1 - w) * before + w * after,
                                       atol=1e-3)
            assert (track["raw"][row, :, 2] == 0).all()  # proposals, not labels
        assert disk.corrected_frames() == []
    assert all(is_proposal(state.data, f, 1) for f in (10, 11, 12))
    assert window.keypoint_panel.model.data(window.keypoint_panel.model.index(0, 4)) \
        .startswith("placed")
    _key(window, Qt.Key.Key_A, CTRL | SHIFT)  # accept them all
    with _on_disk(results.store) as disk:
        assert disk.corrected_frames() == [10, 11, 12]
    _key(window, Qt.Key.Key_Z, CTRL)
    _key(window, Qt.Key.Key_Z, CTRL)
    with _on_disk(results.store) as disk:
        assert disk.corrected_frames() == []
        assert not {10, 11, 12} & set(disk.track(1)["frames"].tolist())


def test_identity_housekeeping(window, results, wait_image, messages, monkeypatch, tmp_path):
    import pandas as pd

    from clamp_track.gui import dialogs
    from clamp_track.pipelines.run import export

    _break_track(results.store)
    _open(window, results, wait_image, frame=20)
    state = window.state
    state.select([3, 1])
    _key(window, Qt.Key.Key_M, CTRL)  # the merged track keeps the lower id
    assert state.data.track_ids == [1, 2]
    _key(window, Qt.Key.Key_Z, CTRL)
    state.select([3, 1])
    _key(window, Qt.Key.Key_M, CTRL | SHIFT)  # ... or the current one's
    assert state.data.track_ids == [2, 3]
    _key(window, Qt.Key.Key_Z, CTRL)

    # swap until frame X: animals 1 and 2 exchanged on frames 5-8 only
    with _on_disk(results.store) as disk:
        old = {t: disk.track(t) for t in (1, 2)}
    state.set_frame(5)
    state.select([1, 2])
    window.editor.swap_tracks_until(8)
    with _on_disk(results.store) as disk:
        one = disk.track(1)
    assert np.array_equal(one["boxes"][5:9], old[2]["boxes"][5:9])
    assert np.array_equal(one["boxes"][:5], old[1]["boxes"][:5])
    assert np.array_equal(one["boxes"][9:16], old[1]["boxes"][9:16])
    _key(window, Qt.Key.Key_Z, CTRL)  # one undo step
    with _on_disk(results.store) as disk:
        assert np.array_equal(disk.track(1)["boxes"], old[1]["boxes"])

    # deleting an animal with corrections asks first
    window.editor.move_keypoint(2, 0, 10.0, 10.0)
    state.select([2])
    monkeypatch.setattr(dialogs, "ask", lambda p, t, q: messages.append(("ask", t, q)) or False)
    _key(window, Qt.Key.Key_Delete, SHIFT)
    assert 2 in state.data.track_ids and "corrections in 1 frame" in messages[-1][2]
    monkeypatch.setattr(dialogs, "ask", lambda p, t, q: True)
    _key(window, Qt.Key.Key_Delete, SHIFT)
    assert state.data.track_ids == [1, 3]

    # the exports name the animals animal1, animal2 without the gap left by the deleted one;
    # the tidy CSV keeps the ids the GUI shows
    with _on_disk(results.store) as disk:
        paths = export(disk, ("csv", "dlc"), tmp_path / "out")
        three = disk.track(3)["frames"].tolist()
    csv = pd.read_csv(next(p for p in paths if p.name.endswith(".clamp.csv")))
    assert sorted(csv["track"].unique()) == [1, 3]
    assert sorted(csv.loc[csv["track"] == 3, "frame"].unique()) == three
    dlc = pd.read_hdf(next(p for p in paths if p.suffix == ".h5" and "_filtered" not in p.name))
    assert list(dict.fromkeys(dlc.columns.get_level_values("individuals"))) == [
        "animal1", "animal2"]
    present = dlc.xs("animal2", axis=1, level="individuals").notna().any(axis=1)
    assert dlc.index[present].tolist() == three


def test_a_step_of_many_edits_is_scored_on_its_result(window, results, wait_image):
    """Swapping a left/right pair over frames 5–12 is one step: the queue counts no items
    that only existed halfway through it (half the stretch swapped); its undo is one step
    too, and the items the swap made go away with it rather than count as fixed."""
    from clamp_track.pipelines.qc import ReviewQueue

    _open(window, results, wait_image, frame=5)
    state = window.state
    left, right = state.data.keypoints.flip_pairs[0]
    before = {ReviewQueue.key(s) for s in state.queue.items}
    total, reviewed = state.queue.total, state.queue.reviewed
    seen = []  # the queue after each change it was told about
    state.queueChanged.connect(lambda: seen.append(state.queue.total))
    assert window.editor.swap_pair(1, left, right, 5, 12) == 8
    assert len(seen) == 1  # scored once, on the result
    assert all(ReviewQueue.key(s) in before for s, _ in state.queue.done)
    seen.clear()
    _key(window, Qt.Key.Key_Z, CTRL)
    assert len(seen) == 1
    assert (state.queue.total, state.queue.reviewed) == (total, reviewed)
    assert {ReviewQueue.key(s) for s in state.queue.items} == before


def test_left_right_key_and_the_view_follows(window, results, wait_image):
    _open(window, results, wait_image, frame=6)
    state = window.state
    left, right = state.data.keypoints.flip_pairs[0]
    state.select([1], left)
    shown = state.data.instance(6, 1).xy.copy()
    _key(window, Qt.Key.Key_X)  # this frame
    with _on_disk(results.store) as disk:
        assert disk.correction(6, 1, left)[:2] == pytest.approx(tuple(shown[right]), abs=1e-3)
        assert disk.correction(6, 1, right)[:2] == pytest.approx(tuple(shown[left]), abs=1e-3)
        assert disk.corrected_frames() == [6]
    state.set_frame(20)
    state.select([1], right)
    _key(window, Qt.Key.Key_X, SHIFT)  # from here on: to the end of the track (no swap back)
    with _on_disk(results.store) as disk:
        assert disk.corrected_frames() == [6, *range(20, 32)]

    # fit the animal; the queue pans to a flagged keypoint that is off screen
    _key(window, Qt.Key.Key_F, SHIFT)
    box = state.data.instance(20, 1).box
    seen = window.view.visible_rect()
    assert seen.contains(QPointF(box[0], box[1])) and seen.contains(QPointF(box[2], box[3]))
    assert seen.width() < 1.0 * window.state.video_info.width or \
        seen.height() < 1.0 * window.state.video_info.height
    window.view.fit()
    window.view.zoom(8.0)
    window.view.centerOn(0, 0)
    item = window.state.queue.items[0]
    inst = state.data.instance(item.frame, item.track)
    far = (inst.box[:2] + inst.box[2:]) / 2 if item.keypoint is None else inst.xy[item.keypoint]
    assert not window.view.visible_rect().contains(QPointF(*far))
    window.go_to_suspect(0)
    assert window.view.visible_rect().contains(QPointF(*far))


def test_at_1280x720_the_video_keeps_most_of_the_width_and_the_queue_explains_itself(
        window, results, wait_image, qtbot, tmp_path):
    from clamp_track.gui.panels import SCORE_TIP

    _break_track(results.store)
    window.resize(1280, 720)
    _open(window, results, wait_image)
    qtbot.waitUntil(lambda: window.width() == 1280)
    assert window.view.width() >= 0.6 * window.width()

    table, model = window.queue_panel.view, window.queue_panel.model
    assert model.headers[4] == "Score" and model.headerData(
        4, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole) == SCORE_TIP
    detail = model.data(model.index(0, 6))
    assert detail == window.state.queue.items[0].detail
    assert model.data(model.index(0, 6), Qt.ItemDataRole.ToolTipRole) == detail
    assert table.columnWidth(6) >= table.sizeHintForColumn(6)  # the whole text, scrolled to

    # keypoints are named in the GUI as in the exports; the export folder is absolute
    import pandas as pd

    from clamp_track.gui.dialogs import ExportDialog
    from clamp_track.pipelines.run import export

    state = window.state
    state.select([1])
    panel = window.keypoint_panel.model
    shown = [panel.data(panel.index(k, 0)) for k in range(panel.rowCount())]
    out = tmp_path / "out"
    paths = export(state.store, ("csv",), out)
    assert list(dict.fromkeys(pd.read_csv(paths[0])["keypoint"])) == shown
    dialog = ExportDialog(Path(results.store.name), None, window)
    assert Path(dialog.out_dir.text()).is_absolute()

    # the status bar speaks to users; decoding figures only in View → Decoding statistics
    for _ in range(3):
        _key(window, Qt.Key.Key_Right)
        wait_image(window)
    assert not window.decode_label.isVisible()
    assert "ms" not in window.statusBar().currentMessage()
    window.act_debug.trigger()
    assert window.decode_label.isVisible() and "ms/frame" in window.decode_label.text()
    window.act_debug.trigger()
    assert not window.decode_label.isVisible()


def test_the_run_dialog_starts_from_the_stores_settings(window, results, wait_image):
    from clamp_track.config import from_dict, to_dict
    from clamp_track.gui.dialogs import RunDialog
    from clamp_track.pipelines.run import RunConfig

    _open(window, results, wait_image)
    stored = window.state.store.meta("config")
    dialog = RunDialog(results.video, False, window)
    dialog.use_settings(stored)
    assert dialog.detector.currentText() == "file" and "pose_weights=null" in \
        dialog.extra.text()
    asked = dialog.request()
    assert to_dict(from_dict(RunConfig, asked.settings)) == stored  # the same run again
    assert Path(dialog.video.text()).is_absolute()


def test_playback_says_when_it_cannot_keep_up():
    from clamp_track.gui.main_window import keep_up_note

    def time_of(frame):
        return frame / 25.0

    kept = [(i / 50.0, i) for i in range(60)]  # 50 frames/s shown of a 25 fps video: 2x
    assert keep_up_note(kept, time_of, 2.0) == ""
    slow = [(i / 40.0, i) for i in range(60)]  # 1.6x when 4x was asked
    assert keep_up_note(slow, time_of, 4.0).startswith("Playing at 1.6×: decoding cannot "
                                                       "keep up with 4×")
    assert keep_up_note(slow[:10], time_of, 4.0) == ""  # too short to judge
