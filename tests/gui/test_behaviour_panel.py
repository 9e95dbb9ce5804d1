"""The behaviour strip under the timeline, on the synthetic store with known motion."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("movement")

from PyQt6.QtGui import QColor  # noqa: E402

from clamp_track.pipelines.behaviour import STATE_COLORS  # noqa: E402


@pytest.fixture
def store(behaviour_store, tmp_path):
    path = tmp_path / behaviour_store.name
    shutil.copy(behaviour_store, path)
    return path


def _open(window, store, qtbot):
    window.locate_video = lambda missing: None  # the synthetic store has no video: no dialog
    assert window.open_paths(None, store)
    qtbot.waitUntil(lambda: window.state.data is not None)
    return window.behaviour


def test_compute_then_follow_frame_and_animal(window, store, qtbot, wait_task):
    panel = _open(window, store, qtbot)
    assert panel.table is None and "not measured yet" in panel.text()
    outcome = wait_task(window, panel.compute())
    assert outcome[0] == "succeeded", outcome
    # the files clamp-track behaviour writes are written beside the store
    assert (store.parent / "walk.behaviour.csv").is_file()
    assert (store.parent / "walk.behaviour_ethogram.png").is_file()
    window.state.select((1,))
    window.state.set_frame(10)
    assert panel.text().startswith("animal 1 · 50 px/s · walking · heading 0° · 20 px travelled")
    window.state.set_frame(70)
    assert panel.text().startswith("animal 1 · 0 px/s · resting")
    # the strip shows the selected animal over the whole video, cursor on the frame
    assert panel.strip.frame == 70 and len(panel.strip.frames) == 100
    assert (panel.strip.states[:50] == 2).all() and (panel.strip.states[50:] == 1).all()
    np.testing.assert_allclose(panel.strip.speed[:49], 50.0, atol=1e-6)
    # the bands fill the timeline's columns even when frames are fewer than pixels
    panel.strip.resize(600, 46)
    image = panel.strip._render()
    width = image.width()
    assert width > 2 * 100
    band = [image.pixelColor(x, 10).name() for x in range(width)]
    walking, resting = (QColor(STATE_COLORS[s]).darker(170).name() for s in ("walking",
                                                                               "resting"))
    assert set(band[:width // 2 - 2]) == {walking} and set(band[width // 2 + 2:]) == {resting}
    window.state.select((2,))
    assert panel.strip.states[5] == 3  # running
    window.state.set_frame(25)  # animal 2's low-confidence stretch
    assert "no speed here (low confidence or a gap)" in panel.text()
    panel.strip.resize(600, 46)
    assert not panel.strip.grab().isNull()


def test_measures_written_by_the_command_show_at_once(window, store, qtbot, capsys):
    from clamp_track import cli

    assert cli.main(["behaviour", str(store), "--no-plots"]) == 0
    panel = _open(window, store, qtbot)
    window.state.select((2,))
    window.state.set_frame(5)
    assert panel.text() == ("animal 2 · 250 px/s · running · heading 90° · 50 px travelled "
                            "(walk.behaviour.csv)")
    # an edit makes them out of date
    window.state.select((1,))
    window.state.set_frame(60)
    window._keypoint_moved(1, 2, 500.0, 100.0)
    assert "out of date, recompute" in panel.text()


def test_scale_from_two_points_gives_metres(window, store, qtbot, wait_task):
    from PyQt6.QtWidgets import QMenu

    panel = _open(window, store, qtbot)
    menu = QMenu()
    panel.add_scale_actions(menu, 100.0, 100.0)
    first = menu.actions()[-1]
    assert first.text() == "Scale: first point here"
    first.trigger()
    menu = QMenu()
    panel.add_scale_actions(menu, 400.0, 500.0)
    assert menu.actions()[-1].text().startswith("Scale: second point here (500.0 px")
    panel.set_scale_from_points(500.0, metres=2.0)  # the dialog's answer
    assert panel.px_per_m() == 250.0
    assert wait_task(window, panel.compute())[0] == "succeeded"
    window.state.select((1,))
    window.state.set_frame(10)
    assert panel.text().startswith("animal 1 · 0.2 m/s · walking · heading 0° · 0.08 m")
