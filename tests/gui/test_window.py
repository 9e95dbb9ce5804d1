"""Opening things (or failing to, kindly), navigating, and rendering the window."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PyQt6.QtCore import QPointF, Qt
from PyQt6.QtGui import QColor, QImage
from PyQt6.QtTest import QTest
from PyQt6.QtWidgets import QDialog, QTableWidget

from clamp_track.gui.style import confidence_color, track_color
from clamp_track.io.store import ResultStore
from clamp_track.pipelines.review import Coordinates

pytestmark = pytest.mark.usefixtures("qapp")

REPO = Path(__file__).resolve().parents[2]


def _env(**extra) -> dict:
    """The environment of a child process that imports this checkout's clamp_track."""
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def test_opens_a_video_and_its_pipeline_store(window, cows_results, wait_image):
    assert window.pages.currentIndex() == 0  # empty state first
    assert window.open_paths(cows_results.video)  # finds <video>.clamp.sqlite beside it
    assert window.pages.currentIndex() == 1 and window.state.store.path == cows_results.store
    wait_image(window)
    assert window.state.data.track_ids == [1, 2] and window.state.n_frames == 104
    assert len(window.view.keypoint_items) == 2 * 17
    assert window.track_panel.model.rowCount() == 2
    assert [r.track for r in window.timeline.rows] == [1, 2]
    assert not window.banner.isVisible()  # a complete store with its video: nothing to say
    assert "cows.mp4" in window.windowTitle()
    stats = window.track_panel.model.rows[0]
    assert (stats.frames, stats.first, stats.last, stats.corrected_frames) == (32, 0, 31, 0)
    window.state.set_frame(40)  # beyond the results: the video still plays, no animals
    wait_image(window)
    assert window.view.keypoint_items == {}


def test_starts_empty_with_a_hint(window, qtbot):
    assert window.pages.currentIndex() == 0
    assert "Open a video" in window.empty_hint.text()
    window.resize(1280, 720)
    qtbot.waitUntil(lambda: window.height() == 720)
    hint = window.empty_hint  # the welcome text is not cut off: all its lines fit
    assert hint.height() >= hint.heightForWidth(hint.width())
    assert hint.rect().translated(hint.mapTo(window, hint.rect().topLeft())).bottom() < \
        window.height()
    assert not window.act_export.isEnabled()
    QTest.keyClick(window, Qt.Key.Key_Right)  # shortcuts are harmless with nothing open
    QTest.keyClick(window, Qt.Key.Key_Space)
    assert window.state.frame == 0 and not window.play_timer.isActive()


def test_a_video_without_results_shows_frames_and_suggests_a_run(window, tmp_path,
                                                                  cows_results, wait_image):
    video = tmp_path / "fresh.mp4"
    shutil.copy(cows_results.video, video)
    assert window.open_paths(video)
    wait_image(window)
    assert window.state.store is None and window.state.n_frames == 104
    assert window.banner.isVisible() and "Run the pipeline" in window.banner.text()


def _moved(results, tmp_path):
    with ResultStore.open(results.store) as store:
        ref = dict(store.meta("video_ref"), absolute=str(tmp_path / "gone" / "cows.mp4"),
                   relative="gone/cows.mp4")
        store.set_meta(video_ref=ref)
    return results.store


def test_a_store_whose_video_moved_asks_for_it(window, results, tmp_path, wait_image,
                                               monkeypatch):
    asked = []
    monkeypatch.setattr(window, "locate_video", lambda missing: asked.append(missing)
                        or results.video)
    assert window.open_paths(store=_moved(results, tmp_path))
    assert asked == [tmp_path / "gone" / "cows.mp4"]
    wait_image(window)
    assert window.state.video_path == results.video and not window.banner.isVisible()


def test_without_the_moved_video_results_show_on_a_blank_frame(window, results, tmp_path,
                                                                monkeypatch):
    monkeypatch.setattr(window, "locate_video", lambda missing: None)
    assert window.open_paths(store=_moved(results, tmp_path))
    assert window.loader is None and "video not found" in window.banner.text()
    assert "Locate video" in window.banner.text()
    assert len(window.view.keypoint_items) == 34  # still reviewable and editable
    window.view.keypointMoved.emit(1, 0, 10.0, 20.0)
    assert window.state.data.instance(0, 1).corrected[0]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_store_gives_a_clear_message_and_no_crash(window, results, messages, damage):
    bad = results.store
    if damage == "garbage":
        bad.write_bytes(b"these are field notes, not results\n" * 200)
    else:
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 3])
    assert not window.open_paths(store=bad)
    (kind, title, text), = messages
    assert kind == "error" and str(bad) in text and "\n" not in text
    assert "re-run the video" in text
    assert window.pages.currentIndex() == 0 and window.state.store is None


def test_a_missing_video_is_one_message(window, tmp_path, messages):
    assert not window.open_paths(tmp_path / "nope.mp4")
    assert messages == [("error", "Video not found",
                         f"{tmp_path / 'nope.mp4'}: video file not found; check the path")]


def test_navigation_shortcuts_and_playback(qtbot, window, cows_results, wait_image):
    window.open_paths(cows_results.video, cows_results.store)
    wait_image(window)
    view = window.view
    QTest.keyClick(view, Qt.Key.Key_Right)
    assert window.state.frame == 1
    QTest.keyClick(view, Qt.Key.Key_Right, Qt.KeyboardModifier.ShiftModifier)
    assert window.state.frame == 11
    QTest.keyClick(view, Qt.Key.Key_Left)
    QTest.keyClick(view, Qt.Key.Key_Left, Qt.KeyboardModifier.ShiftModifier)
    assert window.state.frame == 0
    QTest.keyClick(view, Qt.Key.Key_End)
    assert window.state.frame == 103 and window.frame_box.value() == 103
    QTest.keyClick(view, Qt.Key.Key_Home)
    QTest.keyClick(view, Qt.Key.Key_BracketRight)
    assert window.speed_box.currentText() == "2×"
    QTest.keyClick(view, Qt.Key.Key_Space)
    assert window.play_timer.isActive()
    qtbot.waitUntil(lambda: window.state.frame >= 4, timeout=20000)
    QTest.keyClick(view, Qt.Key.Key_Space)
    assert not window.play_timer.isActive()
    QTest.keyClick(view, Qt.Key.Key_S)
    assert window.state.coordinates is Coordinates.SMOOTHED
    assert window.coords_box.currentIndex() == 1
    QTest.keyClick(view, Qt.Key.Key_Tab)
    assert window.state.selection.track == 1
    QTest.keyClick(view, Qt.Key.Key_Tab)
    assert window.state.selection.track == 2
    window.frame_box.setValue(25)
    assert window.state.frame == 25


def test_help_lists_every_shortcut_from_the_menus(qtbot, window):
    rows = window.shortcut_rows()
    table = {action: keys for _, action, keys in rows}
    assert table["Add animal in this frame"] == "Ctrl+I"
    assert table["Accept animal's keypoints as labels"] == "A"
    assert table["Play / pause"] == "Space" and table["Keyboard shortcuts"] == "F1, ?"
    assert len({keys for _, _, keys in rows}) == len(rows)  # no key does two things
    QTest.keyClick(window.view, Qt.Key.Key_F1)
    shown = [w for w in window.findChildren(QDialog) if w.windowTitle() == "Keyboard shortcuts"]
    assert shown and shown[0].isVisible()
    assert shown[0].findChild(QTableWidget).rowCount() == len(rows)


def test_timeline_click_seeks_and_panels_select(window, cows_results, wait_image):
    window.open_paths(cows_results.video, cows_results.store)
    wait_image(window)
    tl = window.timeline
    x = int(round(tl.x_of(30)))
    QTest.mouseClick(tl, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     tl.rect().center().__class__(x, tl.height() // 2))
    assert window.state.frame == 30
    window.track_panel.view.selectRow(1)
    assert window.state.selection.tracks == (2,)
    window.keypoint_panel.view.selectRow(5)
    assert window.state.selection.keypoint == 5
    assert window.keypoint_panel.model.rowCount() == 17
    item = window.view.keypoint_items[(2, 5)]
    assert item.rect().width() > window.view.keypoint_items[(2, 4)].rect().width()  # selected


def test_zoom_keeps_markers_the_same_size_on_screen(window, cows_results, wait_image):
    window.open_paths(cows_results.video, cows_results.store)
    wait_image(window)
    view = window.view
    before = view.transform().m11()

    def on_screen():
        item = view.keypoint_items[(1, 0)]
        return item.deviceTransform(view.viewportTransform()).mapRect(item.boundingRect())

    size, centre = on_screen().width(), on_screen().center()
    QTest.keyClick(view, Qt.Key.Key_Plus)
    assert view.transform().m11() == pytest.approx(before * 1.25)
    assert on_screen().width() == pytest.approx(size)  # markers keep their size...
    assert on_screen().center() != centre  # ...while the frame under them grows
    QTest.keyClick(view, Qt.Key.Key_0)
    assert view.transform().m11() == pytest.approx(before)


def _near(image: QImage, x: int, y: int, color: QColor, radius: int = 3, tol: int = 40) -> bool:
    """Whether a pixel within ``radius`` of (x, y) has ``color`` (per-channel tolerance)."""
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            c = image.pixelColor(x + dx, y + dy)
            if max(abs(c.red() - color.red()), abs(c.green() - color.green()),
                   abs(c.blue() - color.blue())) <= tol:
                return True
    return False


def test_screenshot_shows_the_frame_and_the_overlays(window, cows_results, wait_image,
                                                     tmp_path):
    window.open_paths(cows_results.video, cows_results.store)
    window.state.set_frame(5)
    wait_image(window)
    path = window.save_screenshot(tmp_path / "shot.png")
    image = QImage(str(path))
    assert image.width() == window.width() and image.height() == window.height()
    pixels = np.array([[image.pixelColor(x, y).lightness() for x in range(0, image.width(), 7)]
                       for y in range(0, image.height(), 7)])
    assert pixels.std() > 20  # a real picture, not a blank window
    view, inst = window.view, window.state.data.instance(5, 1)
    on_top = [k for k in range(17) if view.itemAt(view.mapFromScene(QPointF(*inst.xy[k])))
              is view.keypoint_items[(1, k)]]
    assert len(on_top) >= 8
    for k in on_top:  # keypoints are drawn where they are, in their confidence colour
        p = view.viewport().mapTo(window, view.mapFromScene(QPointF(*inst.xy[k])))
        assert _near(image, p.x(), p.y(), confidence_color(inst.confidence[k])), k
    x1, y1, x2, y2 = window.state.data.instance(5, 2).box
    corner = window.view.viewport().mapTo(window, window.view.mapFromScene(QPointF(x2, y2)))
    assert _near(image, corner.x(), corner.y(), track_color(2), radius=2)  # the decoy's box


def test_review_screenshot_command_with_cv2_imported_first(cows_results, tmp_path):
    """``clamp-track review --screenshot`` in a fresh process that imported OpenCV first.

    opencv-python points Qt at its own Qt 5 plugins on import; the GUI must undo that (shown by
    Qt's plugin log: OpenCV's folder is never searched) and still render.
    """
    out = tmp_path / "shot.png"
    code = ("import cv2, sys; from clamp_track.cli import main; rc = main(sys.argv[1:]); "
            "print('torch imported:', 'torch' in sys.modules); sys.exit(rc)")
    env = _env(QT_DEBUG_PLUGINS="1")
    args = ["-v", "review", str(cows_results.video), "--store", str(cows_results.store),
            "--frame", "12", "--screenshot", str(out)]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cv2/qt/plugins" not in done.stderr and "libqoffscreen.so" in done.stderr
    assert "torch imported: False" in done.stdout  # the GUI never needs the model stack
    image = QImage(str(out))
    assert (image.width(), image.height()) == (1440, 900)
    colors = {}
    for y in range(0, 900, 2):
        for x in range(0, 1440, 2):
            rgb = image.pixelColor(x, y).name()
            colors[rgb] = colors.get(rgb, 0) + 1
    assert len(colors) > 1000  # the video frame
    assert colors.get(confidence_color(0.0).name(), 0) > 50  # keypoints (low confidence: red)
    assert colors.get(track_color(1).name(), 0) > 50  # animal 1's box, label and skeleton


def test_screenshot_of_a_corrupt_store_is_a_one_line_error(tmp_path, cows_results):
    bad = tmp_path / "bad.clamp.sqlite"
    bad.write_text("nope" * 100)
    done = subprocess.run([sys.executable, "-m", "clamp_track", "review", str(cows_results.video),
                           "--store", str(bad), "--screenshot", str(tmp_path / "x.png")],
                          capture_output=True, text=True, timeout=120, env=_env(),
                          cwd=str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "not a clamp-track result store" in \
        done.stderr


def test_prefer_pyqt_plugins_only_undoes_opencv(monkeypatch):
    from clamp_track.gui.app import prefer_pyqt_plugins

    cv2_dir = os.path.join(os.sep, "venv", "site-packages", "cv2", "qt", "plugins")
    monkeypatch.setenv("QT_QPA_PLATFORM_PLUGIN_PATH", cv2_dir)
    monkeypatch.setenv("QT_QPA_FONTDIR", "/usr/share/fonts")
    assert prefer_pyqt_plugins() == ["QT_QPA_PLATFORM_PLUGIN_PATH"]
    assert "QT_QPA_PLATFORM_PLUGIN_PATH" not in os.environ
    assert os.environ["QT_QPA_FONTDIR"] == "/usr/share/fonts"  # the user's own: kept


def test_cli_registers_review_and_gui():
    from clamp_track.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["review", "v.mp4", "--frame", "3", "--screenshot", "o.png"])
    assert (args.video, args.frame, args.screenshot, args.store) == ("v.mp4", 3, "o.png", None)
    assert parser.parse_args(["gui"]).func.__name__ == "main_gui"


def test_clamp_track_gui_starts_empty(qapp, monkeypatch):
    from PyQt6.QtWidgets import QApplication

    from clamp_track.cli import main
    from clamp_track.gui.main_window import MainWindow

    seen = []

    def exec_(app):
        seen.extend(w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow)
                    and w.isVisible())
        return 0

    monkeypatch.setattr(type(qapp), "exec", exec_)
    assert main(["gui"]) == 0
    (window,) = seen
    assert window.pages.currentIndex() == 0 and window.state.store is None
    window.close()


def test_an_unreadable_video_keeps_the_results_reviewable(qtbot, window, results, tmp_path,
                                                          messages):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 4096)
    assert window.open_paths(broken, results.store)
    qtbot.waitUntil(lambda: window.loader is None and bool(messages))
    assert messages[0][:2] == ("error", "Cannot read the video") and "broken.mp4" in \
        messages[0][2]
    assert "cannot be read" in window.banner.text() and len(window.view.keypoint_items) == 34


def test_without_pyqt6_the_command_says_what_to_install(monkeypatch, capsys):
    from clamp_track.cli import main

    monkeypatch.setitem(sys.modules, "PyQt6.QtWidgets", None)  # as if not installed
    assert main(["review", "video.mp4"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'clamp-track[gui]'" in err and err.count("\n") == 1
