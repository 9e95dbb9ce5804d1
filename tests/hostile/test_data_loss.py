"""A finished run is never destroyed: every way of re-running over it keeps it byte for byte.

Issue 16, items 1-4: ``--resume`` on a finished run, a re-run that fails its checks, is
interrupted, or meets a store with corrections or a store another process works on.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from clamp_track.io.store import ResultStore, partial_path, store_lock

STORE = "cows.mp4.clamp.sqlite"


def _visible(snap: dict) -> dict:
    return {k: v for k, v in snap.items() if not k.startswith(".")}


def test_finished_run_is_one_whole_file(done, snapshot, tmp_path):
    assert not [name for name in snapshot(done) if name.endswith(("-wal", "-shm", ".lock"))]
    alone = tmp_path / "alone" / STORE
    alone.parent.mkdir()
    shutil.copy(done / STORE, alone)  # the one file a user sees and copies
    with ResultStore.open(alone, readonly=True) as a, \
            ResultStore.open(done / STORE, readonly=True) as b:
        assert a.complete and len(a.frame_times()[0]) == 24
        pd.testing.assert_frame_equal(a.tidy(), b.tidy())


def test_resume_on_a_finished_run_changes_nothing(done, cli, run_args, snapshot):
    before = snapshot(done)
    status, err = cli(run_args(done, "--resume"))
    assert status == 0, err
    assert snapshot(done) == before


def test_resume_after_an_export_was_lost_writes_it_and_keeps_the_rest(done, cli, run_args,
                                                                      snapshot):
    with ResultStore.open(done / STORE, readonly=True) as store:
        tidy = store.tidy()
    h5 = next(done.glob("*DLC*.h5"))
    h5.unlink()  # as if killed while writing it
    before = snapshot(done)
    status, err = cli(run_args(done, "--resume"))
    assert status == 0, err
    after = snapshot(done)
    assert h5.is_file()
    assert after["cows.clamp.csv"] == before["cows.clamp.csv"]
    with ResultStore.open(done / STORE, readonly=True) as store:
        pd.testing.assert_frame_equal(store.tidy(), tidy)
        assert store.track_ids() == sorted(t for t in store.track_ids() if t >= 1)
    frame = pd.read_hdf(h5)
    assert frame.notna().any(axis=1).sum() == 24  # data in every frame, not in 1 of them


RERUNS = {
    "boxes typo": (["--boxes", "typo.txt"], "typo.txt"),
    "batch size 0": (["--batch-size", "0"], "batch"),
    "batch size -1": (["--batch-size", "-1"], "batch"),
    "unknown device": (["--device", "gpu7"], "gpu7"),
    "score threshold 2": (["--set", "detect.score_threshold=2"], "score_threshold"),
    "missing weights": (["--pose-weights", "missing.pt"], "missing.pt"),
}


@pytest.mark.parametrize("case", sorted(RERUNS))
def test_a_rerun_that_fails_its_checks_keeps_the_finished_run(case, done, cli, run_args,
                                                              snapshot, one_line):
    extra, named = RERUNS[case]
    before = snapshot(done)
    line = one_line(*cli(run_args(done, *extra)))
    assert named in line
    assert snapshot(done) == before


def test_default_detector_offline_fails_before_anything_is_touched(done, cli, run_args,
                                                                   snapshot, one_line):
    from torchvision.models import get_model_weights

    from clamp_track.pipelines.detectors import cached_weights_path

    name = "fasterrcnn_resnet50_fpn_v2"
    if cached_weights_path(get_model_weights(name).DEFAULT.url).is_file():
        pytest.skip(f"{name} weights are cached here: the offline case cannot happen")
    before = snapshot(done)
    args = run_args(done, "--detector", "torchvision", "--detector-model", name)
    args.remove("--boxes")
    args.remove(str(args[args.index("--pose-weights") + 2]))
    line = one_line(*cli(args))
    assert "offline" in line
    assert snapshot(done) == before


def test_ctrl_c_during_a_rerun_keeps_the_finished_run_and_resume_continues(
        done, cli, run_args, snapshot, monkeypatch, one_line):
    from clamp_track.commands import run as command

    with ResultStore.open(done / STORE, readonly=True) as store:
        tidy = store.tidy()
    before = snapshot(done)

    def interrupt(self, progress):
        raise KeyboardInterrupt

    monkeypatch.setattr(command._ProgressBar, "update", interrupt)  # after the first chunk
    line = one_line(*cli(run_args(done)), expect=130)
    assert "--resume" in line
    assert _visible(snapshot(done)) == _visible(before)
    with ResultStore.open(partial_path(done / STORE), readonly=True) as work:
        assert work.last_frame() == 7 and not work.complete
    monkeypatch.undo()
    status, err = cli(run_args(done, "--resume"))
    assert status == 0, err
    assert not partial_path(done / STORE).exists()
    with ResultStore.open(done / STORE, readonly=True) as store:
        pd.testing.assert_frame_equal(store.tidy(), tidy)


def test_a_rerun_never_replaces_corrections(done, cli, run_args, snapshot, one_line):
    with ResultStore.open(done / STORE) as store:
        store.set_correction(3, store.track_ids()[0], 0, 10.0, 20.0)
    before = snapshot(done)
    line = one_line(*cli(run_args(done)))
    assert "corrections" in line and "--overwrite" in line
    assert snapshot(done) == before


def test_a_second_run_of_the_same_video_waits_for_none_and_touches_nothing(
        done, cli, run_args, snapshot, one_line):
    before = snapshot(done)
    with store_lock(done / STORE):
        line = one_line(*cli(run_args(done, "--overwrite")))
    assert "another clamp-track" in line
    after = snapshot(done)
    assert after == before


def _batch_task(clip, run_args, out):
    from clamp_track.cli import build_parser
    from clamp_track.commands.run import build_config
    from clamp_track.pipelines.batch import VideoTask

    cfg = build_config(build_parser().parse_args(run_args(out)))
    return VideoTask(clip[0], cfg, out)


def test_batch_reruns_a_video_whose_export_is_missing(done, clip, run_args, snapshot):
    from clamp_track.pipelines.batch import process_video, store_state

    task = _batch_task(clip, run_args, done)
    h5 = next(done.glob("*DLC*.h5"))
    h5.unlink()  # the export failed or was lost
    before = snapshot(done)
    assert store_state(done / STORE, task.cfg)[0] == "unexported"
    result = process_video(task)
    assert result.status == "done" and h5.is_file(), result
    after = snapshot(done)
    assert after["cows.clamp.csv"] == before["cows.clamp.csv"]  # only the missing file written
    assert store_state(done / STORE, task.cfg)[0] == "complete"
    assert process_video(task).status == "skipped"


def test_batch_keeps_reporting_an_export_that_fails(done, clip, run_args, snapshot):
    from clamp_track.pipelines.batch import process_video

    task = _batch_task(clip, run_args, done)
    h5 = next(done.glob("*DLC*.h5"))
    h5.unlink()
    h5.mkdir()  # in the way: the export cannot be written
    for _ in range(2):  # a rerun fails again, with its error, instead of "skipped"
        result = process_video(task)
        assert result.status == "failed" and h5.name in result.error, result
    with ResultStore.open(done / STORE, readonly=True) as store:
        assert store.complete


def _crash_left_wal(done, folder):
    """``folder`` holding the store as a crash leaves it: a correction only in its -wal."""
    import sqlite3

    db = sqlite3.connect(done / STORE, isolation_level=None)
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("INSERT INTO corrections VALUES (3, 1, 0, 11.0, 22.0, 1, 0)")
    folder.mkdir()
    for suffix in ("", "-wal"):  # copied while the writer is still alive: it never closed
        shutil.copy(str(done / STORE) + suffix, str(folder / STORE) + suffix)
    db.close()
    assert Path(str(folder / STORE) + "-wal").stat().st_size > 0


def _file_alone_has_the_correction(store_file, tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir(parents=True)
    shutil.copy(store_file, alone / STORE)  # the one file a user sees and copies
    with ResultStore.open(alone / STORE, readonly=True) as store:
        return (3, 1, 0, 11.0, 22.0, 1) in store.corrections(3)


def test_export_leaves_the_store_whole_in_one_file(done, cli, tmp_path):
    crashed = tmp_path / "crashed"
    _crash_left_wal(done, crashed)
    assert not _file_alone_has_the_correction(crashed / STORE, tmp_path / "before")
    status, err = cli(["export", crashed / STORE, "--format", "csv"])
    assert status == 0, err
    assert not Path(str(crashed / STORE) + "-wal").exists()
    assert _file_alone_has_the_correction(crashed / STORE, tmp_path)


_GUI_EDIT_AND_CLOSE = """
import sys
from pathlib import Path

from PyQt6.QtGui import QUndoStack

from clamp_track.gui.app import application
from clamp_track.gui.editor import Editor
from clamp_track.gui.state import ReviewState

store = Path(sys.argv[1])
application(offscreen=True)
state = ReviewState()
state.open_store(store)
state.set_frame(3)
editor = Editor(state, QUndoStack(), lambda *a: None, lambda *a: None)
assert editor.move_keypoint(1, 0, 11.0, 22.0)
assert Path(str(store) + "-wal").stat().st_size > 0, "the edit is not in the WAL"
state.close()
"""


def test_gui_close_leaves_the_edits_in_the_one_file(done, tmp_path):
    """The GUI's editing path, in a process of its own (its Qt objects stay out of the GUI
    tests' application)."""
    pytest.importorskip("PyQt6")
    import subprocess
    import sys

    work = tmp_path / "gui"
    shutil.copytree(done, work)
    run = subprocess.run([sys.executable, "-c", _GUI_EDIT_AND_CLOSE, str(work / STORE)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert run.returncode == 0, run.stderr
    assert not Path(str(work / STORE) + "-wal").exists()
    assert _file_alone_has_the_correction(work / STORE, tmp_path / "check")
