"""Detector cost per frame at 720p: MegaDetector variants next to the torchvision detectors.

Every detector runs through ``make_detector(...).detect(frames)`` exactly as ``clamp-track run``
calls it (letterbox, network, NMS, mapping back), with random weights (speed does not depend on
them), on a real frame of the BADJA cows clip scaled to 1280x720. Timings alternate between the
detectors, repeat after repeat, so that machine load affects all alike; the median is reported.

    python benchmarks/detector_speed.py                      # CPU, batches 1 and 4
    python benchmarks/detector_speed.py --batches 4 --repeats 5 --threads 2
    python benchmarks/detector_speed.py --only MDV6-mit-yolov9-c MDV6-apa-rtdetr-c --threads 1

Prints one line per detector and batch size: ``detector <name> batch <B>: <c> CPU ms/frame,
<w> ms wall (<x> x MDV6-mit-yolov9-c)``. CPU ms is the process's CPU time (all its threads):
on a shared, busy machine it is the stable measure of cost; wall time is what a run waits.
On an overloaded machine use ``--threads 1``: with more, the math library's threads spin while
waiting for siblings that are not scheduled, and that spinning counts as CPU time (measured
here at load 14 on 2 cores: 5.5 s instead of 0.5 s per frame for MDV6-mit-yolov9-c).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from clamp_track.pipelines.detectors import make_detector
from clamp_track.types import Frame

CLIP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "badja-davis" / \
    "derived" / "cows_480p_24fps.mp4"
DETECTORS = {
    "MDV6-mit-yolov9-c": ("megadetector", {"model": "MDV6-mit-yolov9-c"}),
    "MDV6-mit-yolov9-e": ("megadetector", {"model": "MDV6-mit-yolov9-e"}),
    "MDV6-apa-rtdetr-c": ("megadetector", {"model": "MDV6-apa-rtdetr-c"}),
    "MDV6-apa-rtdetr-e": ("megadetector", {"model": "MDV6-apa-rtdetr-e"}),
    "MDv5a": ("megadetector", {"model": "MDv5a"}),
    "torchvision fast": ("torchvision", {"model": "fast"}),
    "torchvision accurate": ("torchvision", {"model": "accurate"}),
}


def frame_720p() -> np.ndarray:
    """A real frame (RGB) scaled to 1280x720, or noise if the shared clip is absent."""
    import cv2

    if CLIP.is_file():
        cap = cv2.VideoCapture(str(CLIP))
        cap.set(cv2.CAP_PROP_POS_FRAMES, 50)
        ok, bgr = cap.read()
        cap.release()
        if ok:
            return cv2.resize(bgr, (1280, 720), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].copy()
    return np.random.default_rng(0).integers(0, 255, (720, 1280, 3), np.uint8)


def seconds(detector, frames) -> tuple[float, float]:
    """Wall-clock and CPU (this process, all threads) seconds of one ``detect`` call."""
    wall, cpu = time.perf_counter(), time.process_time()
    detector.detect(frames)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--only", nargs="+", choices=list(DETECTORS), default=list(DETECTORS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = frame_720p()
    print(f"# CPU, {args.threads} threads, torch {torch.__version__}, 1280x720 frames, "
          f"median of {args.repeats}, load average {os.getloadavg()[0]:.1f}")
    detectors = {}
    for name in args.only:
        backend, options = DETECTORS[name]
        detectors[name] = make_detector(backend, weights=None, device="cpu",
                                        score_threshold=0.5, **options)
    for batch in args.batches:
        frames = [Frame(i, i / 24, image) for i in range(batch)]
        for detector in detectors.values():  # warm-up
            seconds(detector, frames)
        walls = {name: [] for name in detectors}
        cpus = {name: [] for name in detectors}
        for _ in range(args.repeats):
            for name, detector in detectors.items():
                wall, cpu = seconds(detector, frames)
                walls[name].append(wall / batch)
                cpus[name].append(cpu / batch)
        ref = statistics.median(cpus.get("MDV6-mit-yolov9-c") or next(iter(cpus.values())))
        for name in detectors:
            cpu_ms = statistics.median(cpus[name]) * 1000
            wall_ms = statistics.median(walls[name]) * 1000
            print(f"detector {name} batch {batch}: {cpu_ms:.0f} CPU ms/frame, {wall_ms:.0f} ms "
                  f"wall ({cpu_ms / 1000 / ref:.2f} x MDV6-mit-yolov9-c)", flush=True)


if __name__ == "__main__":
    main()
