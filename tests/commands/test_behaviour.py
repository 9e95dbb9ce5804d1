"""``clamp-track behaviour``: files, units, permissions and one-line errors."""

from __future__ import annotations

import os
import shutil
import stat
import sys

import pandas as pd
import pytest

pytest.importorskip("movement")

from clamp_track import cli  # noqa: E402
from clamp_track.pipelines.behaviour import FRAME_COLUMNS, SUMMARY_COLUMNS  # noqa: E402

NAMES = ("walk.behaviour.csv", "walk.behaviour_summary.csv", "walk.behaviour_speed.png",
         "walk.behaviour_trajectory.png", "walk.behaviour_ethogram.png")


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_writes_the_csvs_and_plots(behaviour_store, tmp_path, capsys, umask_027):
    out = tmp_path / "out"
    assert cli.main(["behaviour", str(behaviour_store), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert [line for line in printed.splitlines() if line.startswith(str(out))] == [
        str(out / n) for n in NAMES]
    assert "animal1: visible 4.0 s, distance 98 px, resting 2.0 s / walking 2.0 s" in printed
    for name in NAMES:
        path = out / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, name  # 0666 & ~umask, not 0600
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert sorted(p.name for p in out.iterdir()) == sorted(NAMES)  # no temporary files left
    frames = pd.read_csv(out / NAMES[0])
    assert list(frames.columns[:len(FRAME_COLUMNS)]) == list(FRAME_COLUMNS)
    assert "angle_left_elbow" in frames and len(frames) == 200
    summary = pd.read_csv(out / NAMES[1])
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert summary.time_visible_s.tolist() == [4.0, 3.6]  # written without float noise


def test_scale_centre_thresholds_and_video_argument(behaviour_store, tmp_path, capsys):
    folder = tmp_path / "v"
    folder.mkdir()
    shutil.copy(behaviour_store, folder / behaviour_store.name)
    assert cli.main(["behaviour", str(folder / "walk.mp4"), "--px-per-m", "200",
                     "--centre", "neck,tail root", "--rest-below", "0.1", "--run-above", "0.4",
                     "--no-plots"]) == 0
    assert "distance 0.49 m" in capsys.readouterr().out
    summary = pd.read_csv(folder / "walk.behaviour_summary.csv")
    assert summary.length_unit.tolist() == ["m", "m"] and summary.body_length[0] == 0.5
    assert summary.running_s[0] == pytest.approx(1.96)  # 49 frames at 0.5 body lengths / s
    assert not (folder / "walk.behaviour_speed.png").exists()


@pytest.mark.parametrize("args, message", [
    (["missing.clamp.sqlite"], "missing.clamp.sqlite"),
    (["STORE", "--centre", "tummy"], "'tummy' is not in set 'ap10k'"),
    (["STORE", "--px-per-m", "-3"], "--px-per-m must be a positive number"),
    (["STORE", "--rest-below", "5"], "activity thresholds need"),
])
def test_user_errors_are_one_line(behaviour_store, tmp_path, capsys, args, message):
    args = [str(behaviour_store) if a == "STORE" else str(tmp_path / a) if a.endswith(
        "sqlite") else a for a in args]
    assert cli.main(["behaviour", *args, "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clamp-track: error:") and "\n" not in err and message in err


def test_missing_movement_says_what_to_install(behaviour_store, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "movement.io", None)  # import movement.io fails
    assert cli.main(["behaviour", str(behaviour_store), "-o", str(tmp_path)]) == 2
    assert "pip install 'clamp-track[behaviour]'" in capsys.readouterr().err
