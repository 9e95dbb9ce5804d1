"""Fixtures of the hostile-input corpus: a short real clip, a tiny checkpoint, a finished run.

Every case runs the real command line in this process (``clamp_track.cli.main``), except the
kill cases, which need a process to kill.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

#: Frames of the clip every run processes (three chunks of 8).
FRAMES = 24


@pytest.fixture(scope="session")
def clip(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """``(video, boxes)``: the DAVIS cows clip and a MOTChallenge boxes file for it."""
    folder = tmp_path_factory.mktemp("clip")
    video = folder / "cows.mp4"
    shutil.copy(shared_data / "badja-davis" / "derived" / "cows_480p_24fps.mp4", video)
    boxes = folder / "det.txt"
    # one animal walking right: a box per frame, 1-based MOT frames
    boxes.write_text("".join(f"{i + 1},-1,{150 + 2 * i},180,200,150,0.95,-1,-1,-1\n"
                             for i in range(104)))
    return video, boxes


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    """A tiny random-weight checkpoint, so that separate processes run the same model."""
    import torch

    from clamp_track.models import create_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(create_model("clamp_tiny_rn50"),
                           tmp_path_factory.mktemp("weights") / "tiny.pt")


def _run_args(clip, weights, out, *extra) -> list[str]:
    video, boxes = clip
    return ["run", str(video), "--pose-weights", str(weights), "--boxes", str(boxes),
            "--end", str(FRAMES), "--export", "csv,dlc", "-o", str(out),
            "--set", "smoother.min_confidence=1e-12", "tracker.min_track_length=5", *extra]


@pytest.fixture(scope="session")
def run_args(clip, weights):
    """``run_args(out, *extra)``: the ``clamp-track run`` arguments of the corpus' run."""
    return lambda out, *extra: _run_args(clip, weights, out, *extra)


def run_in_one_thread(args) -> int:
    """``clamp-track ARGS`` here, with torch on one thread as in every test (and subprocess).

    Session fixtures run before the per-test one-thread fixture, and a different thread count
    changes the last bits of the model's output.
    """
    import torch

    from clamp_track.cli import main

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main([str(a) for a in args])
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def finished(clip, weights, tmp_path_factory) -> Path:
    """The folder of a finished run (store and exports); copy it before changing anything."""
    out = tmp_path_factory.mktemp("finished")
    assert run_in_one_thread(_run_args(clip, weights, out)) == 0
    return out


@pytest.fixture(scope="session")
def run_once():
    """:func:`run_in_one_thread`, as a fixture."""
    return run_in_one_thread


@pytest.fixture
def cli(capsys):
    """``cli(args) -> (exit status, stderr)`` of the real command line, in this process."""
    from clamp_track.cli import main

    def call(args):
        capsys.readouterr()
        status = main([str(a) for a in args])
        return status, capsys.readouterr().err

    return call


def one_line_error(status: int, err: str, *, expect: int = 2) -> str:
    """Check the exit status and that stderr holds exactly one error line, no traceback."""
    assert status == expect, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("clamp-track: ")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(scope="session")
def one_line():
    """:func:`one_line_error`, as a fixture."""
    return one_line_error


@pytest.fixture
def done(finished, tmp_path) -> Path:
    """A private copy of :func:`finished`."""
    return Path(shutil.copytree(finished, tmp_path / "done"))


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def snapshot():
    """``snapshot(folder)``: ``{relative path: sha256}`` of every file, hidden ones included."""
    return _snapshot
