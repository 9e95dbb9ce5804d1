"""Every bad input is one clear line, exit 2, and nothing written (issue 16, last section)."""

from __future__ import annotations

import sqlite3

import pytest

from clamp_track.io.store import ResultStore

STORE = "cows.mp4.clamp.sqlite"


def _no_files(folder) -> bool:
    return not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))


def _binary(path):
    path.write_bytes(bytes(range(256)) * 8)
    return path


RUN_CASES = {
    # name: (extra arguments (tmp_path -> list), text the error line must hold)
    "unknown device": (lambda t: ["--device", "gpu7"], "gpu7"),
    "batch size 0": (lambda t: ["--batch-size", "0"], "batch"),
    "batch size -1": (lambda t: ["--batch-size", "-1"], "batch"),
    "binary boxes": (lambda t: ["--boxes", _binary(t / "boxes.txt")], "boxes.txt"),
    "score threshold 2": (lambda t: ["--set", "detect.score_threshold=2"], "score_threshold"),
    "NaN gap": (lambda t: ["--set", "smoother.max_gap_s=nan"], "max_gap_s"),
    "detect every 0": (lambda t: ["--detect-every", "0"], "every"),
    "empty frame range": (lambda t: ["--start", "50", "--end", "10"], "start"),
    "missing weights": (lambda t: ["--pose-weights", t / "nope.pt"], "nope.pt"),
    "random .pt": (lambda t: ["--pose-weights", _binary(t / "random.pt")], "random.pt"),
    "output is a file": (lambda t: ["-o", _binary(t / "file")], "file"),
}


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_bad_run_options_are_one_line(case, cli, run_args, tmp_path, one_line):
    extra, named = RUN_CASES[case]
    out = tmp_path / "out"
    line = one_line(*cli(run_args(out, *extra(tmp_path))))
    assert named in line
    if case == "random .pt":
        assert "--trust" not in line  # random bytes are no checkpoint, trusted or not
    if case == "unknown device":
        assert "devices: cpu" in line  # what torch sees here is listed
    assert _no_files(out)


def test_cuda_without_a_gpu_is_one_line(cli, run_args, tmp_path, one_line):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = one_line(*cli(run_args(tmp_path / "out", "--device", "cuda")))
    assert "--device cuda" in line and "cpu" in line
    assert _no_files(tmp_path / "out")


@pytest.mark.parametrize("content", ["missing", "text"])
def test_bad_videos_are_one_line(content, cli, run_args, clip, tmp_path, one_line):
    video = tmp_path / "notes.mp4"
    if content == "text":
        video.write_text("field notes, not a video\n")
    args = run_args(tmp_path / "out")
    args[args.index(str(clip[0]))] = str(video)
    line = one_line(*cli(args))
    assert "notes.mp4" in line
    assert _no_files(tmp_path / "out")


def test_dlc_csv_with_a_non_numeric_cell_is_one_line(shared_data, cli, tmp_path, one_line):
    source = (shared_data / "deeplabcut-examples" / "openfield-Pranav-2018-10-30" /
              "labeled-data" / "m4s1" / "CollectedData_Pranav.csv")
    lines = source.read_text().splitlines()
    cells = lines[5].split(",")
    cells[-1] = "twelve"
    lines[5] = ",".join(cells)
    bad = tmp_path / "CollectedData_Pranav.csv"
    bad.write_text("\n".join(lines) + "\n")
    line = one_line(*cli(["labels", "convert", bad, "--to", "coco", "-o", tmp_path / "coco"]))
    assert "twelve" in line and bad.name in line
    assert not (tmp_path / "coco").exists()


def _damage(sql: str):
    def apply(store):
        db = sqlite3.connect(store)
        db.execute(sql)
        db.commit()
        db.close()
    return apply


def _corrupt_pages(store):
    data = bytearray(store.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data) - page, page):  # leave the header and meta pages
        data[offset + 8:offset + 200] = bytes(range(192))
    store.write_bytes(bytes(data))


DAMAGE = {
    "malformed meta JSON": (_damage("UPDATE meta SET value = '{broken' WHERE key = 'video'"),
                            "metadata"),
    "missing video meta": (_damage("DELETE FROM meta WHERE key = 'video'"), "video"),
    "missing keypoint meta": (_damage("DELETE FROM meta WHERE key = 'keypoints'"), "keypoints"),
    "wrong blob size": (_damage("UPDATE instances SET raw = x'0000'"), "keypoints"),
    "keypoint index 99": (_damage("INSERT INTO corrections VALUES (3, 1, 99, 1, 2, 1, 0)"),
                          "keypoint 99"),
    "corrupt pages": (_corrupt_pages, "corrupt"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_stores_are_one_line_and_export_nothing(case, done, cli, snapshot, one_line):
    damage, named = DAMAGE[case]
    damage(done / STORE)
    before = snapshot(done)
    line = one_line(*cli(["export", done / STORE, "--format", "csv,dlc"]))
    assert named in line and STORE in line
    assert snapshot(done) == before  # the earlier exports are left alone


def test_database_locked_is_one_line(done, cli, run_args, monkeypatch, one_line):
    """Another program holding a write transaction: after SQLite's wait, one line."""
    from clamp_track.commands import run as command

    def interrupt(self, progress):
        raise KeyboardInterrupt

    out = done.parent / "partial"
    with monkeypatch.context() as patch:
        patch.setattr(command._ProgressBar, "update", interrupt)
        assert cli(run_args(out))[0] == 130
    monkeypatch.setattr(sqlite3, "connect", _short_timeout(sqlite3.connect))
    holder = sqlite3.connect(out / STORE, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        line = one_line(*cli(run_args(out, "--resume")))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "locked" in line and "try again" in line
    with ResultStore.open(out / STORE, readonly=True) as store:
        assert store.last_frame() == 7  # nothing lost


def _short_timeout(connect):
    def short(*args, **kwargs):
        kwargs.setdefault("timeout", 0.2)
        return connect(*args, **kwargs)
    return short


def test_interrupt_message_names_resume(done, cli, run_args, monkeypatch, one_line):
    from clamp_track.commands import run as command

    monkeypatch.setattr(command._ProgressBar, "update",
                        lambda self, p: (_ for _ in ()).throw(KeyboardInterrupt))
    line = one_line(*cli(run_args(done.parent / "fresh")), expect=130)
    assert "--resume" in line


def test_kill_guard_lock_is_released_by_the_os(done, cli, run_args, tmp_path):
    """A lock file left by a killed run does not block the next run (flock dies with it)."""
    (done / f".{STORE}.lock").write_text("999999")
    status, err = cli(run_args(done, "--resume"))
    assert status == 0, err
    assert not (done / f".{STORE}.lock").exists()

