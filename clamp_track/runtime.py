"""Process-wide settings for the compute commands (run, batch, train, eval, finetune).

:func:`tune_allocator`: glibc's malloc serves allocations above its mmap threshold (at most
32 MB, adjusted at run time) with fresh ``mmap`` calls and gives memory back to the system
once the free top of the heap exceeds its trim threshold. A CPU forward pass of the pose model
allocates and frees hundreds of MB of activations per batch, so every batch page-faults its
memory in again: measured here, about 115,000 minor faults per RN50 batch of 8 and a quarter of
the wall time in the kernel. Keeping those buffers in the heap (mmap threshold 1 GB, trim
threshold 2 GB) made the pipeline with ``clamp_rn50`` on this 2-core CPU 1.24x faster (3.46 →
4.30 frames/s on the BADJA cows clip) for 1.08x the peak memory (1901 → 2058 MB), and the
peak still does not grow with video length (2094 MB for 10x the frames);
``benchmarks/allocator_speed.py`` measures it side by side. Set
``CLAMP_TRACK_MALLOC_TUNING=0`` to keep the defaults; your own ``MALLOC_*`` or
``GLIBC_TUNABLES`` settings are left alone. Other C libraries (macOS, Windows, musl) are not
touched.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Allocations below this come from the heap and are reused.
MMAP_THRESHOLD = 1 << 30
#: Free memory at the top of the heap kept for reuse rather than returned to the system.
TRIM_THRESHOLD = (1 << 31) - 1  # about 2 GB, the largest value mallopt takes


def tune_allocator() -> bool:
    """Make glibc keep large freed buffers for reuse (see the module docstring).

    Call it once, early, in a process that runs a model; calling it again is harmless.

    Returns:
        Whether the settings were applied (False: opted out, set by the user already, or not
        glibc).
    """
    if os.environ.get("CLAMP_TRACK_MALLOC_TUNING", "1").strip().lower() in ("0", "false",
                                                                            "no", "off"):
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                     "GLIBC_TUNABLES")):
        return False  # the user's own choice
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        done = (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    except (OSError, AttributeError):  # no mallopt in this process
        return False
    log.debug("malloc tuning %s", "applied" if done else "refused by the C library")
    return done


def available_devices() -> list[str]:
    """The torch devices this machine has: ``cpu``, then ``cuda:0``... and ``mps``."""
    import torch

    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(name: str) -> None:
    """Check that ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``) is a device here.

    Raises:
        InputError: An unknown device name, or one torch does not see, listing those it does.
    """
    from clamp_track.errors import InputError

    name = str(name)
    if name == "auto":
        return
    have = available_devices()
    listed = ", ".join(have)
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise InputError(f"--device {name}: not a device name; use auto or one of this "
                         f"machine's devices: {listed}")
    if kind == "cpu" or (kind == "mps" and "mps" in have):
        return
    if kind == "cuda" and f"cuda:{int(index or 0)}" in have:
        return
    raise InputError(f"--device {name}: torch sees no such device on this machine (devices: "
                     f"{listed}); use --device cpu or auto")
