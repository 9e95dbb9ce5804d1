"""Background work from the GUI: running the pipeline (with Cancel and Resume), exporting,
and the fine-tuning integration point."""

from __future__ import annotations

import os
import shutil
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PyQt6.QtCore import QTimer

from clamp_track.gui.workers import ExportRequest, RunRequest
from clamp_track.io.store import ResultStore
from clamp_track.pipelines.review import Coordinates

pytestmark = pytest.mark.usefixtures("qapp")


@pytest.fixture
def fresh_video(cows_boxes, tmp_path):
    """The cows video alone in a folder (no results yet)."""
    video = tmp_path / "cows.mp4"
    shutil.copy(cows_boxes[0], video)
    return video


def test_run_from_the_gui_keeps_the_window_live_and_opens_the_results(qtbot, window, wait_task,
                                                                      fresh_video, cows_boxes,
                                                                      settings):
    assert window.open_paths(fresh_video) and window.state.store is None
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(worker.isRunning()))
    timer.start(50)
    worker = window.start_run(RunRequest(fresh_video, settings(cows_boxes[1], end=16)))
    progress = []
    worker.progressed.connect(lambda done, total, _: progress.append((done, total)))
    assert wait_task(window, worker)[0] == "succeeded"
    timer.stop()
    assert sum(ticks) >= 3  # the event loop kept running during the run
    assert (16, 16) in progress and window.task_panel.bar.value() == 16
    qtbot.waitUntil(lambda: window.state.store is not None)
    assert window.state.store.path == fresh_video.parent / "cows.mp4.clamp.sqlite"
    assert window.state.data.track_ids == [1, 2] and not window.banner.isVisible()


def test_cancel_then_resume(window, wait_task, fresh_video, cows_boxes, settings, messages,
                            monkeypatch):
    from clamp_track.gui import dialogs

    monkeypatch.setattr(dialogs, "ask", lambda *args: True)  # "Stop the run now?" Yes
    window.open_paths(fresh_video)
    request = RunRequest(fresh_video, settings(cows_boxes[1], end=32))
    worker = window.start_run(request)
    worker.progressed.connect(lambda done, total, _: done >= 8
                              and window.task_panel.cancel_button.click())
    signal, message = wait_task(window, worker)
    assert signal == "cancelled" and "cancelled at frame" in message and messages == []
    store_file = fresh_video.parent / "cows.mp4.clamp.sqlite"
    with ResultStore.open(store_file, readonly=True) as partial:
        assert not partial.complete and partial.last_frame() < 31
    assert window.open_paths(fresh_video)  # the partial results can be looked at already
    assert "stopped before the end" in window.banner.text()
    window.state.set_coordinates(Coordinates.SMOOTHED)  # not smoothed yet: raw is shown
    track = window.state.data.tracks_at(4)[0]
    inst = window.state.data.instance(4, track, Coordinates.SMOOTHED)
    assert np.isfinite(inst.xy).all()
    worker = window.start_export(ExportRequest(store_file, ("csv",)))
    signal, message = wait_task(window, worker)
    assert signal == "failed" and "did not finish" in message
    assert messages == [("error", "Export", message)]
    messages.clear()
    worker = window.start_run(RunRequest(fresh_video, request.settings, resume=True))
    signal, summary = wait_task(window, worker)
    assert signal == "succeeded" and summary.resumed_from is not None
    with ResultStore.open(store_file, readonly=True) as store:
        assert store.complete and store.last_frame() == 31 and store.track_ids() == [1, 2]


def test_a_failed_run_is_one_message(window, wait_task, fresh_video, messages, settings,
                                     tmp_path):
    bad = settings(tmp_path / "no-such-boxes.txt", end=8)
    worker = window.start_run(RunRequest(fresh_video, bad))
    assert wait_task(window, worker)[0] == "failed"
    (kind, title, text), = messages
    assert kind == "error" and title == "Run pipeline" and "no-such-boxes.txt" in text
    assert "\n" not in text and "Traceback" not in text


def test_export_writes_the_corrections(window, wait_task, results, wait_image, tmp_path):
    window.open_paths(results.video, results.store)
    wait_image(window)
    window.view.keypointMoved.emit(1, 2, 123.25, 234.5)
    worker = window.start_export(ExportRequest(results.store, ("csv", "dlc"), tmp_path / "out"))
    signal, paths = wait_task(window, worker)
    assert signal == "succeeded"
    names = sorted(p.name for p in paths)
    assert names[0] == "cows.clamp.csv" and any(n.endswith(".h5") for n in names)
    table = pd.read_csv(tmp_path / "out" / "cows.clamp.csv")
    nose = window.state.data.keypoints.source_names[2]
    row = table[(table.frame == 0) & (table.track == 1) & (table.keypoint == nose)].iloc[0]
    assert (row.x, row.y, row.confidence, row.corrected) == (123.25, 234.5, 1.0, True)


def test_finetune_in_a_worker_then_rerun_with_the_new_weights(qtbot, window, results, messages,
                                                             monkeypatch, tmp_path):
    """The Fine-tune action trains in a worker (the training itself is tested in
    tests/engine/test_finetune.py; here it is replaced to keep the GUI test short), then the
    real re-run with the new weights opens its results, corrections carried over."""
    import clamp_track.engine.finetune as engine
    from clamp_track.gui import dialogs
    from clamp_track.models import create_model, save_checkpoint

    weights = save_checkpoint(create_model("clamp_tiny_rn50"), tmp_path / "tuned.pt")
    calls = []

    def finetune(stores, cfg, progress=None, cancel=None):
        progress(1, 2)
        calls.append((stores, type(cfg).__name__, cancel()))
        return types.SimpleNamespace(weights=str(weights))

    monkeypatch.setattr(engine, "finetune", finetune)
    monkeypatch.setattr(dialogs, "ask", lambda *args: True)
    window.open_paths(results.video, results.store)
    window.act_finetune.trigger()
    assert "correct some keypoints first" in messages[-1][2] and not calls
    window.view.keypointMoved.emit(1, 0, 10.0, 10.0)
    window.act_finetune.trigger()
    new_store = results.store.parent / "tuned" / results.store.name
    qtbot.waitUntil(lambda: window.state.store is not None
                    and window.state.store.path == new_store and not window.tasks,
                    timeout=120000)
    assert calls == [([results.store], "FinetuneConfig", False)]
    assert len(window.state.store.corrections()) == 1  # the dragged keypoint came along
    # issue 11.2: the window says it shows new results, what moved, and offers to go back
    assert "NEW results" in window.windowTitle()
    assert window.rerun_banner.isVisible() and "Showing NEW results" in window.rerun_label.text()
    assert "keypoints moved more than 5 px" in window.rerun_label.text()
    shots = os.environ.get("CLAMP_TRACK_SHOTS")
    if shots:
        window.wait_for_frame()
        window.save_screenshot(Path(shots) / "rerun_banner.png")
    window.go_back_button.click()
    assert window.state.store.path == results.store and not window.rerun_banner.isVisible()
    assert "NEW results" not in window.windowTitle()


def test_the_dialogs_build_the_requests(qapp, tmp_path):
    from clamp_track.gui.dialogs import ExportDialog, RunDialog

    run = RunDialog(tmp_path / "v.mp4", resumable=True)
    run.detector.setCurrentText("file")
    run.boxes.setText("det.txt")
    run.weights.setText("clamp_rn50_ap10k")
    run.detect_every.setValue(3)
    run.flip_test.setChecked(False)
    run.extra.setText("tracker.min_track_length=20 chunk=16")
    request = run.request()
    assert request.video == tmp_path / "v.mp4" and request.resume and not request.overwrite
    assert request.settings == {
        "pose_model": "clamp_rn50", "pose_weights": "clamp_rn50_ap10k", "chunk": 16,
        "detect": {"name": "file", "every": 3, "boxes": "det.txt"},
        "pose": {"device": "auto", "batch_size": 16, "flip_test": False},
        "tracker": {"min_track_length": 20},
    }
    from clamp_track.config import from_dict
    from clamp_track.pipelines.run import RunConfig

    assert from_dict(RunConfig, request.settings).detect.every == 3  # a valid config
    run.extra.setText("oops")
    with pytest.raises(Exception, match="key=value"):
        run.request()
    export = ExportDialog(tmp_path / "v.mp4.clamp.sqlite", tmp_path / "v.mp4")
    export.checks["plot"].setChecked(True)
    request = export.request()
    assert request.formats == ("csv", "dlc", "plot") and request.out_dir == tmp_path


def test_the_run_dialog_offers_the_megadetector_variants(qapp, tmp_path):
    from clamp_track.config import from_dict
    from clamp_track.gui.dialogs import RunDialog
    from clamp_track.pipelines.run import RunConfig

    run = RunDialog(tmp_path / "v.mp4")
    model = run.detector_model
    assert [model.itemText(i) for i in range(model.count())] == ["fast", "accurate"]
    run.detector.setCurrentText("megadetector")
    offered = [model.itemText(i) for i in range(model.count())]
    assert offered == ["MDV6-mit-yolov9-c", "MDV6-mit-yolov9-e", "MDV6-apa-rtdetr-c",
                       "MDV6-apa-rtdetr-e", "MDv5a"]
    assert model.isEnabled() and model.currentText() == "MDV6-mit-yolov9-c"  # the default
    for chosen in ("MDv5a", "MDV6-apa-rtdetr-e"):
        model.setCurrentText(chosen)
        detect = from_dict(RunConfig, run.request().settings).detect
        assert (detect.name, detect.model) == ("megadetector", chosen)
        options = detect.backend_options(tmp_path / "v.mp4", "cpu")
        assert options["model"] == chosen
    run.detector.setCurrentText("motion")  # no model to choose
    assert not model.isEnabled() and "model" not in run.request().settings["detect"]


def _blocking_task(started, release, polls):
    """A task that runs until ``release`` is set or it sees the cancel flag."""

    def task(reporter):
        started.set()
        while not release.is_set():
            polls.append(reporter.cancelled)
            if reporter.cancelled:
                from clamp_track.errors import ClampTrackError

                raise ClampTrackError("cancelled")
            reporter.report(len(polls), 0, "working")
            release.wait(0.02)
        return "done"

    return task


def test_enter_and_esc_do_not_cancel_a_running_task_and_cancel_asks(qtbot, window, results,
                                                                     monkeypatch):
    """Issue 11.3: the modal progress dialog cancelled a fine-tune on Esc or Enter."""
    import threading

    from PyQt6.QtCore import Qt
    from PyQt6.QtTest import QTest
    from PyQt6.QtWidgets import QApplication

    from clamp_track.gui import dialogs
    from clamp_track.gui.workers import TaskWorker

    window.open_paths(results.video, results.store)
    started, release, polls = threading.Event(), threading.Event(), []
    worker = TaskWorker(_blocking_task(started, release, polls))
    panel = window._start_task(worker, "Fine-tune", lambda result: None)
    qtbot.waitUntil(started.is_set)
    for key in (Qt.Key.Key_Escape, Qt.Key.Key_Return, Qt.Key.Key_Enter):
        QTest.keyClick(QApplication.focusWidget() or window, key)
    qtbot.wait(100)
    assert worker.isRunning() and not worker.cancel_requested
    asked = []
    monkeypatch.setattr(dialogs, "ask", lambda parent, title, text: asked.append(text) or False)
    panel.cancel_button.click()  # "Stop fine-tune now?" No
    assert asked and "best weights so far are kept" in asked[0]
    assert worker.isRunning() and not worker.cancel_requested
    monkeypatch.setattr(dialogs, "ask", lambda *args: True)
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: worker.outcome is not None and worker not in window.tasks)
    assert worker.outcome[0] == "cancelled"
    release.set()


def test_an_export_says_it_cannot_be_cancelled(window, results, wait_task, tmp_path):
    window.open_paths(results.video, results.store)
    worker = window.start_export(ExportRequest(results.store, ("csv",), tmp_path / "out"))
    panel = window.task_panel
    assert not panel.cancel_button.isEnabled() and panel.cancel_button.text() == "Cannot cancel"
    assert not panel.cancel()
    assert wait_task(window, worker)[0] == "succeeded"


_CLOSE_DURING_EXPORT = r"""
import sys, time
from pathlib import Path
from PyQt6.QtCore import QTimer
from clamp_track.gui.app import application
from clamp_track.gui import dialogs
from clamp_track.gui.main_window import MainWindow
from clamp_track.gui.workers import ExportRequest

app = application(offscreen=True)
dialogs.ask = lambda *args: print("asked:", args[1], flush=True) or True
window = MainWindow(interactive=True)
window.show()
video, store, out = map(Path, sys.argv[1:4])
window.open_paths(video, store)
worker = window.start_export(ExportRequest(store, ("video", "csv"), out))
worker.progressed.connect(lambda *a: QTimer.singleShot(300, window.close))
print("exec", flush=True)
app.exec()
print("event loop ended", flush=True)
time.sleep(60)  # a process that does not end by itself would be killed by the test's timeout
"""


def test_closing_during_an_export_asks_and_leaves_no_process(results, tmp_path):
    """Issue 11.4: closing the window during an export left a windowless process."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "QT_QPA_PLATFORM": "offscreen"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _CLOSE_DURING_EXPORT, str(results.video),
                           str(results.store), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "asked: Quit" in done.stdout and "event loop ended" not in done.stdout
    assert time.monotonic() - started < 50
    assert not list((tmp_path / "out").glob("*.clamp.mp4"))  # the export was dropped, whole
