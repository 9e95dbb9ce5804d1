"""Keypoint smoother speed: the vectorised numpy engine vs the filterpy reference, one run.

A synthetic track of T frames x K keypoints (noisy circles, 10 % low-confidence points, a few
gaps) at 30 fps. The numpy engine runs on the whole track (best of ``--repeats``); filterpy
(per keypoint and segment, Python loop per step) on the first ``--filterpy-frames`` frames,
scaled to T (its cost is linear in T). Also checks that both give the same numbers there.

    python benchmarks/smoother_speed.py                    # 10,000 frames x 17 keypoints
    python benchmarks/smoother_speed.py --frames 100000 --filterpy-frames 0
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from clamp_track.pipelines.smoother import SmootherConfig, smooth_track


def synthetic_track(frames: int, keypoints: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    times = np.arange(frames) / 30.0
    angle = times[:, None] * rng.uniform(0.5, 2.0, keypoints)  # (T, K)
    truth = 300 + 100 * np.stack([np.cos(angle), np.sin(angle)], axis=-1)  # (T, K, 2)
    conf = rng.uniform(0.5, 1.0, (frames, keypoints))
    conf[rng.random((frames, keypoints)) < 0.1] = 0.05
    xy = truth + rng.normal(0, 3, truth.shape)
    for start in rng.integers(0, frames, size=frames // 500):
        xy[start:start + 20, rng.integers(keypoints)] = np.nan
    return times, xy, conf


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--keypoints", type=int, default=17)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--filterpy-frames", type=int, default=1_000)
    args = parser.parse_args()

    times, xy, conf = synthetic_track(args.frames, args.keypoints)
    points = args.frames * args.keypoints
    fast = best_time(lambda: smooth_track(times, xy, conf), args.repeats)
    print(f"numpy engine:    {args.frames} frames x {args.keypoints} keypoints in {fast:.3f} s "
          f"({points / fast / 1e3:.0f} k keypoint-frames/s, {args.frames / fast:.0f} frames/s)")

    n = min(args.filterpy_frames, args.frames)
    if n < 2:
        return
    sub = times[:n], xy[:n], conf[:n]
    ref_cfg = SmootherConfig(engine="filterpy")
    slow = best_time(lambda: smooth_track(*sub, ref_cfg), 1) * args.frames / n
    print(f"filterpy engine: {slow:.2f} s for the same track (measured on {n} frames, scaled)")
    print(f"ratio filterpy / numpy: {slow / fast:.0f}x")
    a, _ = smooth_track(*sub)
    b, _ = smooth_track(*sub, ref_cfg)
    print(f"max |numpy - filterpy| on {n} frames: {np.nanmax(np.abs(a - b)):.2e} px")


if __name__ == "__main__":
    main()
