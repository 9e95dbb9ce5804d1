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
