"""Shared fixtures: paths to ../shared, golden tensors, tiny models.

Tests never use the network: Hugging Face lookups fail fast offline.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.exists():
        pytest.skip(f"{path} is absent (the read-only ../shared folder beside the repository)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real images, videos and labels)."""
    return _shared("data")


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """``../shared/golden`` (tensors from the official CLAMP code)."""
    return _shared("golden")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run torch on one thread in every test.

    On a 2-core machine shared with other work, two OpenMP threads that wait for each other
    make tiny-model steps ~10x slower (measured: a resume test 28 s vs 2 s); one thread is
    robust and barely slower when the machine is idle.
    """
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(0)


# Synthetic AP-10K animal for the behaviour tests: (dx, dy) of each keypoint from the body
# centre, facing +x. Torso (neck, tail root, shoulders, hips) averages to (0, 0); nose to tail
# root is 100 px; the angles are exact: left elbow 135, right elbow 90, left knee 90, right
# knee 135, shoulders and hips 90 degrees.
BEHAVIOUR_SHAPE = (
    (55, -5), (55, 5), (60, 0), (40, 0), (-40, 0), (30, 0), (30, 20), (50, 40), (30, 0),
    (30, 20), (50, 20), (-30, 0), (-30, 20), (-10, 20), (-30, 0), (-30, 20), (-50, 40),
)


def _behaviour_store(folder: Path, name: str = "walk.mp4"):
    """A complete store with two synthetic animals of known motion (25 fps, 100 frames).

    Animal 1 walks right at 50 px/s (2 px a frame) for frames 0-49, then stands still at
    x = 198; animal 2 faces up and runs up at 250 px/s with confidence 0.1 on frames 20-29.
    The smoothed coordinates are exact; the raw ones are 7 px off, so a measure computed from
    raw coordinates would show it.
    """
    import numpy as np

    from clamp_track.io.store import ResultStore, store_path
    from clamp_track.skeleton import AP10K
    from clamp_track.types import PosePredictions, VideoInfo

    n, fps = 100, 25.0
    shape = np.array(BEHAVIOUR_SHAPE, np.float32)
    up = np.stack([shape[:, 1], -shape[:, 0]], axis=1)  # rotated to face up on screen
    x1 = np.where(np.arange(n) < 50, 100 + 2 * np.arange(n), 198).astype(np.float32)
    smooth = np.zeros((2, n, 17, 2), np.float32)
    smooth[0] = shape[None] + np.stack([x1, np.full(n, 100)], axis=1)[:, None]
    y2 = (400 - 10 * np.arange(n)).astype(np.float32)
    smooth[1] = up[None] + np.stack([np.full(n, 300), y2], axis=1)[:, None]
    conf = np.full((2, n, 17), 0.9, np.float32)
    conf[1, 20:30] = 0.1
    video = VideoInfo(str(folder / name), 640, 480, fps, n, "h264")
    store = ResultStore.create(store_path(folder / name), {
        "keypoints": AP10K.to_dict(), "video": video.__dict__, "config": {},
        "model": {"variant": "clamp_tiny_rn50"}})
    frames = [(f, f / fps, True) for f in range(n)]
    poses = [PosePredictions(f, np.array([1, 2]), np.tile([0, 0, 10, 10], (2, 1)),
                             smooth[:, f] + 7, conf[:, f]) for f in range(n)]
    store.write_chunk(frames, poses)
    for track in (1, 2):
        store.write_smoothed(track, np.arange(n), smooth[track - 1], np.ones((n, 17)))
    store.set_meta(status="complete")
    store.close()
    return store.path


@pytest.fixture(scope="session")
def behaviour_store(tmp_path_factory) -> Path:
    """Path of :func:`_behaviour_store` (read-only: copy it to change it)."""
    return _behaviour_store(tmp_path_factory.mktemp("behaviour"))
