"""The allocator tuning of ``clamp_track.runtime``: pipeline speed and peak memory, side by side.

Runs the pipeline (``run_video``, BADJA cows, 104 frames, boxes from the DAVIS masks through the
``file`` detector, so the pose model dominates) in fresh processes, alternating glibc's default
malloc settings and :func:`clamp_track.runtime.tune_allocator`, and prints frames/s, peak
resident memory and their ratios; then the tuned run on the video looped ``--loops`` times, to
show the peak still does not grow with length.

    python benchmarks/allocator_speed.py --model clamp_rn50          # full-size, random weights
    python benchmarks/allocator_speed.py --rounds 1 --loops 0        # quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from pipeline_speed import SHARED, looped, mask_boxes  # noqa: E402

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {bench!r})
from clamp_track.runtime import tune_allocator
applied = tune_allocator() if {tuned!r} else False
from clamp_track.pipelines.run import run_video
from pipeline_speed import config
from pathlib import Path
t = time.perf_counter()
s = run_video({video!r}, config({model!r}, Path({boxes!r})), {out!r}, overwrite=True)
print(json.dumps({{"applied": applied, "fps": s.frames / (time.perf_counter() - t),
                   "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def child(video: Path, boxes: Path, model: str, out: Path, tuned: bool) -> dict:
    code = CHILD.format(bench=str(HERE), tuned=tuned, video=str(video), model=model,
                        boxes=str(boxes), out=str(out))
    env_off = {"CLAMP_TRACK_MALLOC_TUNING": "0"} if not tuned else {}
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUN"))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=HERE.parent, env={**env, **env_off})
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="clamp_rn50")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--loops", type=int, default=10, help="0: skip the long-video check")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = SHARED / "derived" / "cows_480p_24fps.mp4"
        boxes = mask_boxes(tmp / "det.txt")
        runs = {False: [], True: []}
        for _ in range(args.rounds):
            for tuned in (False, True):
                runs[tuned].append(child(video, boxes, args.model, tmp / "out", tuned))
        assert all(r["applied"] for r in runs[True]), "tuning not applied (not glibc?)"
        fps = {k: statistics.median(r["fps"] for r in v) for k, v in runs.items()}
        peak = {k: max(r["peak_mb"] for r in v) for k, v in runs.items()}
        print(f"model {args.model}, 104 frames, median of {args.rounds} alternating runs")
        print("| malloc | frames/s | peak memory |")
        print("|---|---|---|")
        print(f"| glibc defaults | {fps[False]:.2f} | {peak[False]:.0f} MB |")
        print(f"| tuned | {fps[True]:.2f} | {peak[True]:.0f} MB |")
        print(f"| tuned / defaults | {fps[True] / fps[False]:.2f}x | "
              f"{peak[True] / peak[False]:.2f}x |", flush=True)
        if args.loops:
            long_video = looped(video, tmp / "looped.mp4", args.loops)
            long_boxes = mask_boxes(tmp / "det_long.txt", args.loops)
            long = child(long_video, long_boxes, args.model, tmp / "out_long", True)
            print(f"tuned, {104 * args.loops} frames: peak {long['peak_mb']:.0f} MB "
                  f"({long['peak_mb'] / peak[True]:.2f}x the 104-frame peak)")


if __name__ == "__main__":
    main()
