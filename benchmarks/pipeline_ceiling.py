"""How fast ``clamp-track run`` could go if the pose model cost nothing: the host's ceiling.

The real pipeline (:func:`~clamp_track.pipelines.run.run_video`: decoding thread, the ``file``
detector, the tracker, the pose stage, the result store, smoothing and the CSV/DeepLabCut
exports) runs with the pose model's forward replaced by a free one that returns heatmaps of the
right shape (one precomputed map, expanded to the batch: no arithmetic), in a process set up as
``clamp-track run`` sets up its own (:func:`~clamp_track.runtime.tune_allocator`). What is
left is the work a GPU cannot hide: decoding, cropping, moving crops to the device,
normalising, flipping, decoding heatmaps, tracking, storing. It is timed side by side,
interleaved, with decoding alone (the project's :class:`~clamp_track.io.video.VideoReader`) on
the same clip, so

    R = pipeline frames/s / decoding-alone frames/s

is the fraction of the decoder's speed the pipeline keeps (1.0: the pipeline costs nothing on
top of decoding). The clips are synthetic, made from a real one (DAVIS ``cows``, 854x480,
played forward then backward for continuous motion): for ``n`` animals the frame is a
``g x g`` grid (``g = ceil(sqrt(n))``) of the clip scaled to the target size, and the boxes
(from the DAVIS masks, through a MOT ``det.txt``) follow the cow in the first ``n`` cells.

The table has, per clip, the host milliseconds per frame left in a GPU run (the pipeline's
time with a free model), the ceiling frames/s that allows, and how busy a GPU doing
1,000-2,000 crops/s (CLAMP-RN50 fp16, flip test included) would be: ``g / (h + g)`` with the
pose stage serial to the host work (``h`` host, ``g = animals / crops_per_s`` device seconds
per frame), ``g / max(h, g)`` when the device overlaps the host (the pipeline's pose worker).

    python benchmarks/pipeline_ceiling.py                     # table + the 1080p ceiling line
    python benchmarks/pipeline_ceiling.py --quick             # 1080p, 1 and 10 animals only
    python benchmarks/pipeline_ceiling.py --real-model        # the real forward (on a GPU)

The last line reads ``ceiling 1080p: 1 animal R1=<ratio>, 10 animals R10=<ratio> (pipeline /
decode alone)``. On a shared machine, repeat: each figure is the median of ``--repeats``
interleaved rounds.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
COWS = REPO.parent / "shared" / "data" / "badja-davis"
SIZES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
CROPS_PER_S = (1000.0, 2000.0)


def cow_boxes() -> np.ndarray:
    """(T, 4) x1, y1, x2, y2 of the cow in each 854x480 DAVIS frame (from its mask)."""
    import cv2

    masks = sorted((COWS / "DAVIS" / "Annotations" / "480p" / "cows").glob("*.png"))
    boxes = []
    for path in masks:
        ys, xs = np.nonzero(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127)
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    return np.asarray(boxes, np.float64)


def make_clip(folder: Path, size: str, animals: int, frames: int) -> tuple[Path, Path]:
    """A ``size`` clip with ``animals`` cows per frame and its MOT boxes file."""
    import cv2

    from clamp_track.io.video import VideoReader, VideoWriter

    width, height = SIZES[size]
    grid = math.ceil(math.sqrt(animals))
    cell_w, cell_h = width // grid, height // grid
    with VideoReader(COWS / "derived" / "cows_480p_24fps.mp4") as reader:
        source = [f.image for f in reader]
        fps = reader.info.fps
    boxes = cow_boxes()
    order = list(range(len(source))) + list(range(len(source) - 2, 0, -1))  # ping-pong
    order = [order[i % len(order)] for i in range(frames)]
    video = folder / f"cows_{size}_{animals}.mp4"
    rows = []
    with VideoWriter(video, fps, (width, height)) as writer:
        for t, i in enumerate(order):
            cell = cv2.resize(source[i], (cell_w, cell_h), interpolation=cv2.INTER_AREA)
            frame = np.zeros((height, width, 3), np.uint8)
            frame[:cell_h * grid, :cell_w * grid] = np.tile(cell, (grid, grid, 1))
            writer.write(frame)
            sx, sy = cell_w / source[i].shape[1], cell_h / source[i].shape[0]
            for a in range(animals):
                x0, y0 = (a % grid) * cell_w, (a // grid) * cell_h
                x1, y1, x2, y2 = boxes[i] * (sx, sy, sx, sy) + (x0, y0, x0, y0)
                rows.append(f"{t + 1},-1,{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
                            "0.95,-1,-1,-1")
    det = folder / f"cows_{size}_{animals}.det.txt"
    det.write_text("\n".join(rows) + "\n")
    return video, det


def free_forward(model):
    """Make ``model``'s forward free: one fixed heatmap per keypoint, expanded to the batch."""
    import torch

    k = model.num_keypoints
    h, w = model.config.heatmap_size
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cx = torch.linspace(0.3, 0.7, k) * w
    cy = torch.linspace(0.35, 0.65, k) * h
    maps = 0.9 * torch.exp(-((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2) / 8)
    cache = {}

    def forward(images, *args, **kwargs):
        key = (images.device, images.dtype)
        if key not in cache:
            cache[key] = maps.to(images.device, images.dtype)[None]
        return {"heatmaps": cache[key].expand(len(images), -1, -1, -1)}

    model.forward = forward
    return model


def run_config(model: str, det: Path, device: str):
    from clamp_track.pipelines.pose import PoseConfig
    from clamp_track.pipelines.run import DetectConfig, RunConfig
    from clamp_track.pipelines.smoother import SmootherConfig

    return RunConfig(pose_model=model, pose_weights=None, seed=0,
                     detect=DetectConfig(name="file", boxes=str(det)),
                     pose=PoseConfig(device=device),
                     smoother=SmootherConfig(min_confidence=1e-12), exports=("csv", "dlc"))


def decode_alone(video: Path) -> float:
    """Seconds to decode every frame with the project's reader (its decoding thread)."""
    from clamp_track.io.video import VideoReader

    start = time.perf_counter()
    with VideoReader(video) as reader:
        for _ in reader:
            pass
    return time.perf_counter() - start


def pipeline(video: Path, cfg, models, out: Path) -> tuple[float, int]:
    """Seconds of ``run_video`` end to end (models loaded beforehand) and its frames."""
    from clamp_track.pipelines.run import run_video

    start = time.perf_counter()
    summary = run_video(video, cfg, out, models=models, overwrite=True)
    return time.perf_counter() - start, summary.frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="clamp_rn50")
    parser.add_argument("--frames", type=int, default=208)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="1080p with 1 and 10 animals only")
    parser.add_argument("--real-model", action="store_true",
                        help="keep the model's real forward (end-to-end figures on a GPU)")
    parser.add_argument("--clips", type=Path, help="folder to keep (and reuse) the clips in")
    args = parser.parse_args()
    import torch

    from clamp_track.pipelines.run import Models
    from clamp_track.runtime import tune_allocator

    malloc = tune_allocator()  # what `clamp-track run` does first (decoding alone gets it too)

    cases = [("1080p", 1), ("1080p", 10)] if args.quick else [
        (size, n) for size in SIZES for n in (1, 3, 10)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = args.clips or tmp
        folder.mkdir(parents=True, exist_ok=True)
        clips = {}
        for size, n in cases:
            video, det = folder / f"cows_{size}_{n}.mp4", folder / f"cows_{size}_{n}.det.txt"
            if not (video.exists() and det.exists()):
                video, det = make_clip(folder, size, n, args.frames)
            clips[size, n] = video, det
        models = Models(run_config(args.model, clips[cases[0]][1], args.device))
        if not args.real_model:
            free_forward(models.pose.model)
        device = models.pose.device
        print(f"model {args.model} ({'real' if args.real_model else 'free'} forward), device "
              f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{args.frames} frames per clip, median of {args.repeats} interleaved rounds, "
              f"malloc tuning {'on' if malloc else 'off'}")
        times = {case: {"decode": [], "pipeline": []} for case in cases}
        for r in range(args.repeats):
            for case in cases:
                video, det = clips[case]
                times[case]["decode"].append(decode_alone(video) / args.frames)
                cfg = run_config(args.model, det, args.device)
                seconds, frames = pipeline(video, cfg, models, tmp / f"run{r}")
                if frames != args.frames:
                    raise SystemExit(f"{video}: the run processed {frames} of {args.frames} "
                                     "frames")
                times[case]["pipeline"].append(seconds / frames)
        models.close()
        ratio = {}
        if args.real_model:  # the model's own time is in: these are end-to-end figures
            print("| video | animals | ms/frame end to end | frames/s | decode alone frames/s "
                  "| R (pipeline / decode alone) | crops/s |")
            print("|---|---|---|---|---|---|---|")
        else:
            print("| video | animals | host ms/frame left in a GPU run | ceiling frames/s "
                  "| decode alone frames/s | R (pipeline / decode alone) "
                  "| GPU busy if 1,000-2,000 crops/s, serial | overlapped |")
            print("|---|---|---|---|---|---|---|---|")
        for case in cases:
            size, n = case
            host = statistics.median(times[case]["pipeline"])
            dec = statistics.median(times[case]["decode"])
            ratio[case] = dec / host
            serial = [n / c / (host + n / c) for c in CROPS_PER_S]
            overlap = [n / c / max(host, n / c) for c in CROPS_PER_S]
            row = f"| {size} | {n} | {1e3 * host:.1f} | {1 / host:.0f} | {1 / dec:.0f} " \
                  f"| {ratio[case]:.2f} "
            if args.real_model:
                print(row + f"| {n / host:.0f} |", flush=True)
            else:
                print(row + f"| {100 * serial[1]:.0f}-{100 * serial[0]:.0f} % "
                      f"| {100 * overlap[1]:.0f}-{100 * overlap[0]:.0f} % |", flush=True)
    print(f"ceiling 1080p: 1 animal R1={ratio['1080p', 1]:.2f}, 10 animals "
          f"R10={ratio['1080p', 10]:.2f} (pipeline / decode alone)")


if __name__ == "__main__":
    main()
