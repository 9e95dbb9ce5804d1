"""The allocator tuning of the compute commands, checked by its effect: page faults."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from clamp_track.runtime import tune_allocator

PROBE = """
import json, resource, sys
import numpy as np
from clamp_track.runtime import tune_allocator
applied = tune_allocator() if sys.argv[1] == "tune" else False
faults = []
for _ in range(3):  # what a forward pass does: allocate activations, use them, free them
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(50 * 2**20 // 8)  # 50 MB, above glibc's default mmap threshold (<= 32 MB)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del a
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _probe(mode: str, **env) -> dict:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "CLAMP_TRACK_MALLOC"))}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env={**environ, **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc only")
def test_tuned_allocator_reuses_freed_buffers_instead_of_faulting_them_in_again():
    plain, tuned = _probe("plain"), _probe("tune")
    first = plain["faults"][0]  # (fewer than 50 MB / 4 kB with transparent huge pages)
    assert not plain["applied"] and first > 0
    assert all(f > 0.5 * first for f in plain["faults"][1:])  # faulted in again every time
    assert tuned["applied"] and max(tuned["faults"][1:]) < 0.05 * first  # reused


def test_opting_out_or_own_settings_are_respected(monkeypatch):
    monkeypatch.setenv("CLAMP_TRACK_MALLOC_TUNING", "0")
    assert tune_allocator() is False
    monkeypatch.delenv("CLAMP_TRACK_MALLOC_TUNING")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert tune_allocator() is False
    assert _probe("tune", GLIBC_TUNABLES="glibc.malloc.trim_threshold=0")["applied"] is False
