"""Engine tests train and evaluate tiny models on the CPU."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run torch on one thread during these tests.

    On a 2-core machine shared with other work, two OpenMP threads that wait for each other
    make tiny-model steps ~10x slower (measured: resume test 28 s vs 2 s); one thread is
    robust and barely slower when the machine is idle.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
