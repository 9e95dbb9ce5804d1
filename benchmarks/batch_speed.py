"""Batch throughput: videos/hour with 1 worker vs 2 workers on this machine, in one run.

The same collection (copies of the real BADJA cows/camel clips and the DLC-live dog clip from
``../shared/data``, ``--end`` frames each) goes through ``run_batch`` on the local process pool
with 1 worker (all cores as its torch threads) and with 2 workers (the cores divided), in
alternating order so that load from other users affects both alike. Wall time includes starting
the workers and loading the model once per worker, as a real batch pays it.

    python benchmarks/batch_speed.py                          # tiny model, motion detector
    python benchmarks/batch_speed.py --pose-model clamp_rn50 --videos 4 --end 24
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from clamp_track.pipelines.batch import BatchConfig, machine_plan, plan_tasks, run_batch
from clamp_track.pipelines.pose import PoseConfig
from clamp_track.pipelines.run import DetectConfig, RunConfig
from clamp_track.pipelines.smoother import SmootherConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = ("badja-davis/derived/cows_480p_24fps.mp4", "badja-davis/derived/camel_480p_24fps.mp4",
           "deeplabcut-live/check_install/dog_clip.avi")


def make_collection(folder: Path, n: int) -> list[Path]:
    videos = []
    for i in range(n):
        src = SHARED / SOURCES[i % len(SOURCES)]
        dst = folder / f"{i:02d}_{src.name}"
        shutil.copy(src, dst)
        videos.append(dst)
    return videos


def one_batch(videos, cfg: RunConfig, workers: int, out: Path) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    tasks = plan_tasks([(v, out) for v in videos], cfg)
    start = time.perf_counter()
    results = run_batch(tasks, BatchConfig(workers=workers))
    seconds = time.perf_counter() - start
    bad = [r for r in results if r.status != "done"]
    if bad:
        raise SystemExit(f"{bad[0].video}: {bad[0].status} {bad[0].error}")
    return seconds, sum(r.frames for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pose-model", default="clamp_tiny_rn50")
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--end", type=int, default=48, help="frames per video")
    parser.add_argument("--repeats", type=int, default=1, help="pairs of (1, 2)-worker runs")
    args = parser.parse_args()
    cfg = RunConfig(pose_model=args.pose_model, pose_weights=None, seed=0, end=args.end,
                    detect=DetectConfig(name="motion"), pose=PoseConfig(),
                    smoother=SmootherConfig(min_confidence=1e-12), exports=("csv", "dlc"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    default, setup = machine_plan(cfg, None, args.videos)
    print(f"{cores} cores; {args.videos} videos x {args.end} frames, {args.pose_model}, motion "
          f"detector, flip test, csv+dlc exports; default plan here: {default} workers x "
          f"{setup.threads} torch threads, {setup.gpus} GPUs")
    seconds = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        videos = make_collection(Path(tmp), args.videos)
        frames = 0
        for rep in range(args.repeats):
            for workers in ((1, 2) if rep % 2 == 0 else (2, 1)):
                s, frames = one_batch(videos, cfg, workers, Path(tmp) / "out")
                seconds[workers].append(s)
                print(f"  {workers} worker(s): {s:6.1f} s  {frames / s:5.1f} frames/s  "
                      f"{args.videos / s * 3600:7.0f} videos/hour")
    one, two = (statistics.median(seconds[w]) for w in (1, 2))
    per_hour = {w: args.videos / s * 3600 for w, s in ((1, one), (2, two))}
    print(f"videos/hour: 1 worker {per_hour[1]:.0f}, 2 workers {per_hour[2]:.0f}; "
          f"ratio 2/1 = {per_hour[2] / per_hour[1]:.2f}x (median of {args.repeats})")
    print("On N GPUs the batch runs one worker per GPU, each with the whole model on its own "
          "GPU, so videos/hour grow about N-fold as long as each worker has CPU cores for "
          "decoding, detection, tracking and the store (the CPU side measured here); the "
          "ratio above is what a second worker buys when they share the same cores.")


if __name__ == "__main__":
    main()
