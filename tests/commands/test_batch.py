"""``clamp-track batch``: inputs, output folders, shared run options, the command end to end."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from clamp_track import cli
from clamp_track.commands import batch as batch_cmd
from clamp_track.commands import run as run_cmd


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_folders_keep_their_subfolders_under_the_output_folder(tmp_path):
    season = tmp_path / "season"
    a = _touch(season / "CAM01" / "IMAG0001.MP4")
    b = _touch(season / "CAM02" / "IMAG0001.MP4")
    single = _touch(tmp_path / "drone.mov")
    listed = [_touch(tmp_path / "list" / "x" / "c.avi"), _touch(tmp_path / "list" / "y" / "c.avi")]
    (tmp_path / "videos.txt").write_text("\n".join(map(str, listed)) + "\n")
    inputs = [str(season), str(single), str(tmp_path / "videos.txt")]

    out = tmp_path / "out"
    pairs = batch_cmd.collect(inputs, out)
    assert pairs == [(a, out / "CAM01"), (b, out / "CAM02"), (single, out),
                     (listed[0], out / "x"), (listed[1], out / "y")]
    assert [o for _, o in batch_cmd.collect(inputs, None)] == [None] * 5
    absolute = batch_cmd.collect([str(season)], "rel", absolute=True)  # for Dask workers
    assert all(v.is_absolute() and o.is_absolute() for v, o in absolute)


def _config(command: str, *flags):
    args = cli.build_parser().parse_args([command, "video.mp4", *flags])
    return (run_cmd if command == "run" else batch_cmd).build_config(args)


def test_batch_takes_the_run_options():
    flags = ["--pose-model", "clamp_tiny_rn50", "--detector", "motion", "--detect-every", "3",
             "--end", "40", "--no-flip-test", "--export", "csv", "--set", "seed=1",
             "tracker.min_track_length=7"]
    assert _config("batch", *flags) == _config("run", *flags)
    cfg = _config("batch", "--detector", "file")  # run would ask for --boxes
    assert cfg.detect.boxes == "{dir}/{stem}.det.txt"
    assert _config("batch", "--boxes", "md.json").detect.name == "file"


def test_user_errors_are_one_line(tmp_path, capsys):
    videos = [_touch(tmp_path / "a.mp4"), _touch(tmp_path / "b.mp4")]
    one = tmp_path / "a.det.txt"
    one.write_text("1,-1,0,0,10,10,0.9,-1,-1,-1\n")
    assert cli.main(["batch", *map(str, videos), "--boxes", str(one)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "a.det.txt: a MOT det.txt holds the boxes of one video" in err
    assert cli.main(["batch", str(videos[0]), "--dask", "10.0.0.5:8786"]) == 2
    assert "use 'local' or a scheduler address such as tcp://" in capsys.readouterr().err


@pytest.mark.slow
def test_command_end_to_end(shared_data, tmp_path):
    folder = tmp_path / "cam"
    folder.mkdir()
    camel = shared_data / "badja-davis" / "derived" / "camel_480p_24fps.mp4"
    shutil.copy(camel, folder / "camel.mp4")
    (folder / "camel.det.txt").write_text(
        "\n".join(f"{i},-1,250,60,420,380,0.9,-1,-1,-1" for i in range(1, 17)) + "\n")
    (folder / "broken.mp4").write_bytes(camel.read_bytes()[:5000])
    shutil.copy(folder / "camel.det.txt", folder / "broken.det.txt")
    cmd = [sys.executable, "-m", "clamp_track", "batch", str(folder), "-o", str(tmp_path / "o"),
           "--detector", "file", "--pose-model", "clamp_tiny_rn50", "--pose-weights", "none",
           "--end", "16",
           "--no-flip-test", "--workers", "2", "--combined-csv",
           "--set", "seed=0", "smoother.min_confidence=1e-12"]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 1, first.stderr  # one video failed
    assert "FAILED" in first.stdout and "broken.mp4: not a readable video" in first.stdout
    assert "2 videos: 1 done, 1 failed" in first.stdout
    summary = pd.read_csv(tmp_path / "o" / "batch_summary.csv", keep_default_na=False)
    assert summary.set_index("video").status.to_dict() == {
        str(folder / "broken.mp4"): "failed", str(folder / "camel.mp4"): "done"}
    assert (tmp_path / "o" / "camel.mp4.clamp.sqlite").is_file()
    assert (tmp_path / "o" / "camel.clamp.csv").is_file()
    keypoints = pd.read_csv(tmp_path / "o" / "batch_keypoints.csv")
    assert set(keypoints.video) == {str(folder / "camel.mp4")}
    assert sorted(keypoints.frame.unique()) == list(range(16))

    again = subprocess.run(cmd, capture_output=True, text=True)
    assert "2 videos: 1 skipped, 1 failed" in again.stdout, again.stderr
    assert again.returncode == 1
