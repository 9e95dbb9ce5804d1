"""Review work is never misapplied (issue 11): the wrong video is refused, a located video is
remembered, the post-re-run banner, focus after the frame box."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from PyQt6.QtCore import Qt
from PyQt6.QtTest import QTest
from PyQt6.QtWidgets import QApplication, QGraphicsSimpleTextItem

from clamp_track.io.store import ResultStore

SHOTS = os.environ.get("CLAMP_TRACK_SHOTS")  # folder for the screenshots, if set


def _shot(window, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        window.save_screenshot(Path(SHOTS) / name)


def _two_sites(results, shared_data, tmp_path) -> tuple[Path, Path]:
    """siteB/cows.mp4 + its store; siteB's video then replaced by another 854x480 clip."""
    site_a, site_b = tmp_path / "siteA", tmp_path / "siteB"
    site_a.mkdir()
    site_b.mkdir()
    shutil.copy(results.video, site_b / "cows.mp4")
    store = site_b / results.store.name
    shutil.copy(results.store, store)
    with ResultStore.open(store) as s:
        s.set_meta(video_ref=dict(s.meta("video_ref"), absolute=str(site_b / "cows.mp4")))
    camel = shared_data / "badja-davis" / "derived" / "camel_480p_24fps.mp4"
    shutil.copy(camel, site_a / "cows.mp4")
    return site_a, site_b


def test_a_different_video_is_refused_and_locate_is_offered(qtbot, window, results,
                                                            shared_data,
                                                            tmp_path, monkeypatch, messages,
                                                            wait_image):
    from clamp_track.gui import dialogs

    site_a, site_b = _two_sites(results, shared_data, tmp_path)
    shutil.copy(site_a / "cows.mp4", site_b / "cows.mp4")  # the same name, another video
    monkeypatch.chdir(site_a)
    offered = []
    monkeypatch.setattr(dialogs, "offer_locate", lambda p, t, m: offered.append(m) or False)
    assert window.open_paths(store=Path("..") / "siteB" / results.store.name)
    (line,) = offered
    assert "\n" not in line and str(site_b / "cows.mp4") in line
    assert "not the video of cows.mp4.clamp.sqlite" in line and "90 frames instead of 104" in line
    assert window.loader is None and window.state.video_path is None
    banner = window.banner.text()
    assert f"{site_b / 'cows.mp4'} is not the video these results were made from" in banner
    assert "90 frames instead of 104" in banner and "Locate video" in banner
    assert window.banner.toolTip() == line
    assert len(window.view.keypoint_items) == 34  # still reviewable, on a blank frame
    qtbot.wait(100)  # let the layout fit the banner before the screenshot
    _shot(window, "wrong_video_refused.png")
    if SHOTS:  # the refusal itself, as the user sees it before choosing
        box = dialogs.locate_box(window, "Different video", line)
        box.show()
        box.grab().save(str(Path(SHOTS) / "wrong_video_refusal_dialog.png"))
        box.close()

    # Locate… with the right video: checked, used, and remembered in the store
    monkeypatch.setattr(dialogs, "offer_locate", lambda p, t, m: True)
    monkeypatch.setattr(window, "locate_video", lambda missing, ask=True: results.video)
    assert window.open_paths(store=site_b / results.store.name)
    wait_image(window)
    assert window.state.video_path == results.video and not window.banner.isVisible()
    with ResultStore.open(site_b / results.store.name, readonly=True) as store:
        assert store.video_ref.absolute == str(results.video)


def test_from_another_folder_the_store_video_is_picked_by_fingerprint(window, results,
                                                                      shared_data, tmp_path,
                                                                      monkeypatch, wait_image):
    site_a, site_b = _two_sites(results, shared_data, tmp_path)
    monkeypatch.chdir(site_a)  # a cows.mp4 here too: not the store's
    assert window.open_paths(store=Path("..") / "siteB" / results.store.name)
    wait_image(window)
    assert window.state.video_path == site_b / "cows.mp4"


def test_naming_the_wrong_video_with_the_store_is_refused(window, results, shared_data,
                                                          tmp_path, messages):
    camel = shared_data / "badja-davis" / "derived" / "camel_480p_24fps.mp4"
    assert window.open_paths(camel, results.store)
    assert messages[0][:2] == ("error", "Different video") and window.loader is None


def test_focus_returns_to_the_frame_view_after_the_frame_box(qtbot, window, cows_results,
                                                             wait_image):
    window.open_paths(cows_results.video, cows_results.store)
    wait_image(window)
    window.frame_box.setFocus()
    window.frame_box.selectAll()
    QTest.keyClicks(window.frame_box, "12")
    QTest.keyClick(window.frame_box, Qt.Key.Key_Return)
    assert window.state.frame == 12
    focus = QApplication.focusWidget()
    assert focus in (window.view, window.view.viewport())
    QTest.keyClick(focus, Qt.Key.Key_Right)  # shortcuts work again at once
    assert window.state.frame == 13
    QTest.keyClick(focus, Qt.Key.Key_N)
    assert window.state.queue.cursor >= 0
    QTest.keyClick(focus, Qt.Key.Key_Space)
    assert window.play_timer.isActive()
    QTest.keyClick(focus, Qt.Key.Key_Space)
    assert not window.play_timer.isActive()


def test_undo_and_frame_keys_work_from_the_frame_box_and_the_panels(qtbot, window, results,
                                                                    wait_image):
    """Every shortcut works from every widget but a text field being typed in."""
    window.open_paths(results.video, results.store)
    wait_image(window)
    window.view.keypointMoved.emit(1, 0, 10.0, 10.0)
    assert len(window.state.store.corrections()) == 1
    window.frame_box.setFocus()
    QTest.keyClicks(window.frame_box, "5")
    QTest.keyClick(window.frame_box, Qt.Key.Key_Return)
    QTest.keyClick(QApplication.focusWidget(), Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.state.store.corrections() == []  # Ctrl+Z undid the edit, not the box
    table = window.track_panel.view
    table.setFocus()
    assert QApplication.focusWidget() is table
    frame = window.state.frame
    QTest.keyClick(table, Qt.Key.Key_Right)
    assert window.state.frame == frame + 1
    QTest.keyClick(table, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier
                   | Qt.KeyboardModifier.ShiftModifier)
    assert len(window.state.store.corrections()) == 1  # redo from the animals list


def test_naming_an_animal_reaches_the_store_and_the_title(window, results, monkeypatch):
    from PyQt6.QtWidgets import QInputDialog

    window.open_paths(results.video, results.store)
    window.state.select([2])
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("male", True))
    window.act_name.trigger()
    assert window.state.store.track_names() == {2: "male"} and "2: male" in window.windowTitle()
    model = window.track_panel.model
    shown = [model.cell(row, 0, Qt.ItemDataRole.DisplayRole) for row in model.rows]
    assert shown == ["1", "2: male"]
    labels = [item.text() for item in window.view.scene().items()
              if isinstance(item, QGraphicsSimpleTextItem)]
    assert " animal 2: male " in labels and " animal 1 " in labels


def test_a_store_from_before_fingerprints_opens_with_a_warning(window, results, wait_image):
    with ResultStore.open(results.store) as store:
        store._db.execute("DELETE FROM meta WHERE key = 'video_ref'")  # as written before
        store.set_meta(video=dict(store.meta("video"), path=str(results.video)))
    assert window.open_paths(store=results.store)
    wait_image(window)
    assert "fingerprint is new" in window.statusBar().currentMessage()
    with ResultStore.open(results.store, readonly=True) as store:
        assert not store.video_ref.legacy  # recorded on this first open
