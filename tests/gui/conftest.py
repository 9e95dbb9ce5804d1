"""Fixtures of the GUI tests: a real video with a store made by the pipeline, and a window.

The store comes from the BADJA cows clip (first 32 frames) with the ``file`` detector and the
tiny random-weight model: the cow's box from its DAVIS masks plus a static decoy box, so there
are two tracks to swap, merge and delete. It is made once per session (~10 s); tests that edit
get their own copy of the file.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

N_FRAMES = 32
DECOY = (20, 300, 120, 90)  # x, y, w, h of a static false detection


@dataclass(frozen=True)
class Results:
    """A video and a store made from it by the pipeline."""

    video: Path
    store: Path


@pytest.fixture(scope="session")
def qapp():
    """The QApplication, created the way the GUI creates it (OpenCV's Qt paths undone)."""
    from clamp_track.gui.app import application

    return application(offscreen=True)


def _mot_boxes(mask_dir: Path, out: Path) -> None:
    """MOT det.txt (1-based frames): each frame's mask box, and the decoy box."""
    import cv2

    lines = []
    for i, mask_path in enumerate(sorted(mask_dir.glob("*.png"))[:N_FRAMES]):
        ys, xs = np.nonzero(cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127)
        x1, y1 = xs.min(), ys.min()
        lines.append(f"{i + 1},-1,{x1},{y1},{xs.max() + 1 - x1},{ys.max() + 1 - y1},0.95,-1,-1,-1")
        lines.append(f"{i + 1},-1,{','.join(map(str, DECOY))},0.9,-1,-1,-1")
    out.write_text("\n".join(lines) + "\n")


def run_settings(boxes: Path, end: int = N_FRAMES) -> dict:
    """RunConfig settings (plain data) of the test runs: file detector, tiny random model."""
    return {
        "pose_model": "clamp_tiny_rn50", "pose_weights": None, "chunk": 8, "end": end,
        "exports": [],
        "detect": {"name": "file", "boxes": str(boxes)},
        "tracker": {"min_track_length": 5},
        # random weights give confidences ~1e-10; accept them so smoothing has input
        "smoother": {"min_confidence": 1e-12},
        "pose": {"flip_test": False, "batch_size": 16},
    }


@pytest.fixture(scope="session")
def cows_boxes(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """The cows video (copied) and its two-box MOT detections."""
    folder = tmp_path_factory.mktemp("cows")
    video = folder / "cows.mp4"
    shutil.copy(shared_data / "badja-davis" / "derived" / "cows_480p_24fps.mp4", video)
    boxes = folder / "det.txt"
    _mot_boxes(shared_data / "badja-davis" / "DAVIS" / "Annotations" / "480p" / "cows", boxes)
    return video, boxes


@pytest.fixture(scope="session")
def cows_results(cows_boxes) -> Results:
    """The pipeline's store for the first 32 frames of the cows video (two tracks)."""
    import torch

    from clamp_track.config import from_dict
    from clamp_track.pipelines.run import RunConfig, run_video

    video, boxes = cows_boxes
    torch.manual_seed(0)  # the random weights, hence the keypoints, are the same every session
    summary = run_video(video, from_dict(RunConfig, run_settings(boxes)))
    assert summary.tracks == 2 and summary.frames == N_FRAMES
    return Results(video, summary.store)


@pytest.fixture
def results(cows_results, tmp_path) -> Results:
    """A copy of the store for one test to edit (the video stays shared, read-only)."""
    store = tmp_path / cows_results.store.name
    shutil.copy(cows_results.store, store)
    return Results(cows_results.video, store)


@pytest.fixture
def messages(monkeypatch) -> list[tuple[str, str, str]]:
    """Message boxes shown, as ``(kind, title, text)``, instead of modal dialogs (questions
    are answered yes)."""
    from clamp_track.gui import dialogs

    shown: list[tuple[str, str, str]] = []
    monkeypatch.setattr(dialogs, "show_error", lambda p, t, m: shown.append(("error", t, m)))
    monkeypatch.setattr(dialogs, "show_info", lambda p, t, m: shown.append(("info", t, m)))
    # yes/no questions (e.g. deleting an animal with corrections) are answered yes
    monkeypatch.setattr(dialogs, "ask", lambda p, t, q: shown.append(("ask", t, q)) or True)
    return shown


@pytest.fixture
def window(qtbot, messages):
    """An interactive main window, shown offscreen; closed (threads stopped) afterwards."""
    from clamp_track.gui.main_window import MainWindow

    win = MainWindow(interactive=True)
    win.resize(1280, 800)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()


@pytest.fixture
def wait_image(qtbot):
    """``wait_image(window)``: wait until the current frame's image is on screen."""

    def wait(win, timeout: int = 20000) -> None:
        qtbot.waitUntil(lambda: win.loader is not None and win._shown_frame == win.state.frame,
                        timeout=timeout)

    return wait


@pytest.fixture
def wait_task(qtbot):
    """``wait_task(window, worker) -> (signal name, argument)``: wait until a background task
    has ended and the window has handled its end (its slots ran, it left ``window.tasks``).

    Reads ``worker.outcome`` instead of connecting to the signals, which a task that ends
    quickly may have emitted already by the time the test connects."""

    def wait(win, worker, timeout: int = 120000) -> tuple[str, object]:
        qtbot.waitUntil(lambda: worker.outcome is not None and worker.isFinished()
                        and worker not in win.tasks, timeout=timeout)
        return worker.outcome

    return wait


@pytest.fixture(scope="session")
def settings():
    """``settings(boxes, end)``: the RunConfig settings of the test runs."""
    return run_settings


@pytest.fixture
def free_keypoint():
    """``free_keypoint(view, track)``: a keypoint the mouse can grab (see :func:`_free`)."""
    return _free


def _free(view, track: int) -> int:
    """A keypoint of ``track`` that the mouse can grab: on top where it is drawn, and as far
    from every other marker as possible (random-weight keypoints often overlap)."""
    items = view.keypoint_items
    where = {key: view.mapFromScene(item.pos()) for key, item in items.items()}

    def room(key) -> float:
        p = where[key]
        others = [(q - p).manhattanLength() for k, q in where.items() if k != key]
        return min(others, default=1e9)

    mine = [key for key in items if key[0] == track and view.itemAt(where[key]) is items[key]]
    assert mine, "no keypoint of this animal can be grabbed"
    return max(mine, key=room)[1]
