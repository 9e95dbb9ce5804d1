"""Faults that must keep passing: kills at any moment, then ``--resume``; a full disk.

A run killed with SIGKILL, SIGINT (Ctrl+C) or SIGTERM after its first committed chunk resumes
to exactly what an uninterrupted run gives; after a kill the store file alone (as a user
copies it) holds every committed chunk. On a full disk (a small tmpfs, where this machine lets
a test mount one) a re-run and an export fail in one line and leave the store and the earlier
exports as they were. The kill cases start a fresh process each and are in the slow set
(``pytest tests/hostile -m slow``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from clamp_track.io.store import ResultStore

STORE = "cows.mp4.clamp.sqlite"
FULL = "40"  # five chunks: long enough to be killed mid-way


@pytest.fixture(scope="module")
def reference(run_args, run_once, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    assert run_once(run_args(out, "--end", FULL)) == 0
    return out


def _wait_for_first_chunk(store, proc, limit: float = 240.0) -> None:
    deadline = time.time() + limit
    while time.time() < deadline and proc.poll() is None:
        if store.exists():
            try:
                db = ResultStore.open(store, readonly=True)
                try:
                    if (db.last_frame() or -1) >= 7:
                        return
                finally:
                    db.close()
            except Exception:  # noqa: BLE001, S110 - being created
                pass
        time.sleep(0.02)
    raise AssertionError(f"the run ended or stalled before its first chunk ({proc.poll()})")


@pytest.mark.slow  # a fresh process each (~30 s on 2 busy cores): run with -m slow
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT", "SIGTERM"])
def test_killed_run_resumes_identically(sig, reference, run_args, cli, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "clamp_track", *map(str, run_args(out, "--end", FULL))]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "HF_HUB_OFFLINE": "1",
                                 "OMP_NUM_THREADS": "1"})  # as torch runs in tests
    _wait_for_first_chunk(out / STORE, proc)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert "Traceback" not in err, err
    if sig == "SIGINT":
        assert proc.returncode == 130 and "--resume" in err.splitlines()[-1], err
    else:
        assert proc.returncode == -getattr(signal, sig), err
    alone = tmp_path / "alone"
    alone.mkdir()
    with ResultStore.open(out / STORE, readonly=True) as store:  # folds the WAL in
        committed = store.last_frame()
        assert not store.complete and 7 <= committed < 39
    shutil.copy(out / STORE, alone / STORE)  # the one file a user sees
    with ResultStore.open(alone / STORE, readonly=True) as copy:
        assert copy.last_frame() == committed
    status, err = cli(run_args(out, "--end", FULL, "--resume"))
    assert status == 0, err
    with ResultStore.open(out / STORE, readonly=True) as resumed, \
            ResultStore.open(reference / STORE, readonly=True) as full:
        pd.testing.assert_frame_equal(resumed.tidy(), full.tidy(), check_exact=True)
    assert (out / "cows.clamp.csv").read_bytes() == (reference / "cows.clamp.csv").read_bytes()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, mounted for the test (root with mount rights only)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                          capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk, leave: int) -> None:
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    (disk / "filler").write_bytes(b"\0" * max(free - leave, 0))


_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # sha256 of b""


def _visible(snap: dict) -> dict:
    """The user's files; SQLite's shared-memory index and an empty WAL hold no data (on a full
    disk the reader cannot tidy them away)."""
    return {k: v for k, v in snap.items() if not k.startswith(".") and k != "filler"
            and not k.endswith("-shm") and not (k.endswith("-wal") and v == _EMPTY)}


def test_full_disk_rerun_keeps_the_finished_run(small_disk, finished, cli, run_args, snapshot,
                                                one_line):
    done = shutil.copytree(finished, small_disk / "done")
    _fill(small_disk, 24 * 1024)
    before = snapshot(done)
    line = one_line(*cli(run_args(done, "--overwrite")))
    assert "disk" in line or "space" in line, line
    assert _visible(snapshot(done)) == _visible(before)
    with ResultStore.open(done / STORE, readonly=True) as store:
        assert store.complete


def test_full_disk_export_keeps_the_earlier_exports(small_disk, finished, cli, snapshot,
                                                    one_line):
    done = shutil.copytree(finished, small_disk / "done")
    _fill(small_disk, 8 * 1024)
    before = snapshot(done)
    one_line(*cli(["export", done / STORE, "--format", "csv,dlc"]))
    assert _visible(snapshot(done)) == _visible(before)


def test_motion_detector_resume_equals_an_uninterrupted_run(run_args, run_once, cli,
                                                            tmp_path, monkeypatch):
    """The background model is re-learnt over the frames before the resume point."""
    from clamp_track.commands import run as command

    motion = ("--end", "24", "--detector", "motion", "--set", "detect.options.history=12",
              "detect.options.min_area=0.02")
    assert run_once(run_args(tmp_path / "full", *motion)) == 0
    calls = []

    def stop_at_the_second_chunk(self, progress):
        calls.append(progress.done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(command._ProgressBar, "update", stop_at_the_second_chunk)
        assert cli(run_args(tmp_path / "cut", *motion))[0] == 130
    with ResultStore.open(tmp_path / "cut" / STORE, readonly=True) as cut:
        assert cut.last_frame() == 15
    status, err = cli(run_args(tmp_path / "cut", *motion, "--resume"))
    assert status == 0, err
    with ResultStore.open(tmp_path / "cut" / STORE, readonly=True) as resumed, \
            ResultStore.open(tmp_path / "full" / STORE, readonly=True) as full:
        boxes = full.boxes()
        assert (boxes["frame"] >= 16).any()  # the detector found something to compare
        pd.testing.assert_frame_equal(resumed.boxes(), full.boxes(), check_exact=True)
        pd.testing.assert_frame_equal(resumed.tidy(), full.tidy(), check_exact=True)


def test_temporary_files_of_a_killed_export_are_removed_by_the_next(done, cli, snapshot):
    """A kill while exporting leaves hidden temporary files; the next export removes them."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(gone.stdout)  # a process that has ended
    csv, h5 = "cows.clamp.csv", next(done.glob("*DLC*.h5")).name
    stale = [done / f".{csv}.{dead}.0a1b2c3d.tmp.csv",
             done / f".{h5}.{dead}.0a1b2c3d.tmp.h5",
             done / f".{csv}.k2j3_x9q.tmp.csv"]  # as an older clamp-track named them
    alive = done / f".{csv}.{os.getpid()}.0a1b2c3d.tmp.csv"  # a running writer's
    for path in (*stale, alive):
        path.write_bytes(b"half written")
    before = snapshot(done)
    status, err = cli(["export", done / STORE, "--format", "csv,dlc"])
    assert status == 0, err
    assert not [p for p in stale if p.exists()]
    assert alive.exists()
    after = snapshot(done)
    assert sorted(k for k in after if not k.startswith(".")) == \
        sorted(k for k in before if not k.startswith("."))  # the same exports again
    assert after[csv] == before[csv]
    umask = os.umask(0)
    os.umask(umask)
    assert (done / csv).stat().st_mode & 0o777 == 0o666 & ~umask  # the user's umask, not 0600
