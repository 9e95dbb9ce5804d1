"""A finished run is never destroyed: every way of re-running over it keeps it byte for byte.

Issue 16, items 1-4: ``--resume`` on a finished run, a re-run that fails its checks, is
interrupted, or meets a store with corrections or a store another process works on.
"""

from __future__ import annotations

import shutil

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
