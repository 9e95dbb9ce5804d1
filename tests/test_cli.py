from __future__ import annotations

import subprocess
import sys

from clamp_track import __version__


def test_version_and_help_run_without_heavy_imports():
    out = subprocess.run([sys.executable, "-m", "clamp_track", "--version"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"clamp-track {__version__}"
    code = ("import sys, clamp_track.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'PyQt6', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    out = subprocess.run([sys.executable, "-m", "clamp_track", "--help"],
                         capture_output=True, text=True, check=True)
    assert "weights" in out.stdout


def test_user_errors_are_one_line_without_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "clamp_track", "weights", "convert", str(tmp_path / "nope.pth"),
         "-o", str(tmp_path / "x.pt")],
        capture_output=True, text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "nope.pth: weights file not found" in out.stderr
    assert "Traceback" not in out.stderr


def test_only_the_compute_commands_tune_the_allocator(monkeypatch, tmp_path, capsys):
    import clamp_track.runtime
    from clamp_track.cli import main

    calls = []
    monkeypatch.setattr(clamp_track.runtime, "tune_allocator", lambda: calls.append(1))
    assert main(["weights", "convert", str(tmp_path / "nope.pth"), "-o",
                 str(tmp_path / "x.pt")]) == 2 and calls == []
    assert main(["run", str(tmp_path / "nope.mp4"), "--pose-weights", "none"]) == 2
    assert calls == [1] and "nope.mp4" in capsys.readouterr().err


def test_doctor_checks_by_doing_and_fails_on_a_broken_device(capsys):
    from clamp_track.cli import main

    assert main(["doctor", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "ok  pose on cpu" in out and "crops/s" in out
    assert "ok  video" in out and "frame-exact" in out
    assert "ok  PyQt6" in out and "ok  sleap_io" in out  # the dev install has the extras
    assert main(["doctor", "--device", "cpu", "--device", "no-such-device"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  pose on no-such-device" in out and "ok  pose on cpu" in out
