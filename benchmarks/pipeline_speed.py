"""End-to-end pipeline speed vs its stages and vs the pose model alone; peak memory vs length.

One run on a real video (BADJA cows, 104 frames, 854x480, one animal; boxes from the DAVIS
masks through the ``file`` detector, so detection costs nothing and the pose model dominates):

1. ``run_video`` end to end: frames/s, and the main thread's time in each stage (decode wait,
   detect, track, crop, waiting for the pose worker, store, smooth, export) next to their sum;
2. the pose model alone (forward passes only, flip test included) on exactly the crops the run
   used, so "pose" can be compared with the model's own cost;
3. peak resident memory of a separate process running the pipeline on the video and on the
   same video looped 10x (1040 frames): streaming means the peak must not grow with length.

4. with ``--backends torch onnxruntime``: ``run_video`` end to end with each pose backend,
   interleaved (``--repeats`` rounds, the first ``--end`` frames), frames/s, the ratio to
   ``torch`` and the largest difference of their raw keypoints (the ONNX graph is exported
   once, before the timing).

    python benchmarks/pipeline_speed.py                       # tiny model (pipeline overhead)
    python benchmarks/pipeline_speed.py --model clamp_rn50    # full-size model (random weights)
    python benchmarks/pipeline_speed.py --model clamp_rn50 --backends torch onnxruntime \
        --end 48 --skip-memory                                # CPU backends end to end
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "badja-davis"


def mask_boxes(out: Path, repeats: int = 1) -> Path:
    """MOT det.txt from the DAVIS cows masks, optionally repeated for a looped video."""
    import cv2

    masks = sorted((SHARED / "DAVIS" / "Annotations" / "480p" / "cows").glob("*.png"))
    rows = []
    for r in range(repeats):
        for i, path in enumerate(masks):
            ys, xs = np.nonzero(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127)
            frame = r * len(masks) + i + 1
            rows.append(f"{frame},-1,{xs.min()},{ys.min()},{xs.max() - xs.min() + 1},"
                        f"{ys.max() - ys.min() + 1},0.95,-1,-1,-1")
    out.write_text("\n".join(rows) + "\n")
    return out


def looped(video: Path, out: Path, repeats: int) -> Path:
    from clamp_track.io.video import VideoReader, VideoWriter

    with VideoReader(video) as reader:
        frames = [f.image for f in reader]
        info = reader.info
    with VideoWriter(out, info.fps, (info.width, info.height)) as writer:
        for _ in range(repeats):
            for image in frames:
                writer.write(image)
    return out


def config(model: str, boxes: Path):
    from clamp_track.pipelines.run import DetectConfig, RunConfig
    from clamp_track.pipelines.smoother import SmootherConfig

    return RunConfig(pose_model=model, pose_weights=None,  # random weights: speed only
                     detect=DetectConfig(name="file", boxes=str(boxes)),
                     smoother=SmootherConfig(min_confidence=1e-12), exports=("csv", "dlc"))


def pose_alone(models, store_path: Path, video: Path) -> float:
    """Seconds of model forward passes on the crops the run made (same batches, flip test).

    The crops are cut and normalised as the pipeline does (``PoseEstimator.crop`` and
    ``input_batch``), outside the timing; only the forwards are timed (fp16 autocast on CUDA).
    """
    import torch

    from clamp_track.io.store import ResultStore
    from clamp_track.io.video import VideoReader
    from clamp_track.types import Detections

    pose = models.pose
    with ResultStore.open(store_path, readonly=True) as store:
        boxes = store.boxes()
    crops = []
    with VideoReader(video) as reader:
        for frame in reader:
            rows = boxes[boxes.frame == frame.index][["x1", "y1", "x2", "y2"]].to_numpy()
            crops.append(pose.crop([frame.image], [Detections(rows, np.ones(len(rows)))]).images)
    crops = np.concatenate(crops)
    batch_size, seconds = pose.cfg.batch_size, 0.0
    cuda = pose.device.type == "cuda"
    for start in range(0, len(crops), batch_size):
        x = pose.input_batch(torch.from_numpy(crops[start:start + batch_size]).to(pose.device))
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast(pose.device.type, torch.float16,
                                                    enabled=cuda and pose.cfg.fp16):
            pose.model(x)
        if cuda:
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
    return seconds


CHILD = """
import json, resource, sys
from clamp_track.pipelines.run import run_video
sys.path.insert(0, {bench!r})
from pipeline_speed import config
s = run_video({video!r}, config({model!r}, __import__('pathlib').Path({boxes!r})), {out!r})
print(json.dumps({{"frames": s.frames,
                   "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def peak_memory(video: Path, boxes: Path, model: str, out: Path) -> dict:
    code = CHILD.format(bench=str(Path(__file__).parent), video=str(video), model=model,
                        boxes=str(boxes), out=str(out))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=REPO)
    return json.loads(result.stdout.strip().splitlines()[-1])


def compare_backends(video: Path, boxes: Path, args, tmp: Path) -> None:
    """``run_video`` end to end with each backend, interleaved; frames/s and keypoint agreement."""
    import statistics
    from dataclasses import replace

    from clamp_track.io.store import ResultStore
    from clamp_track.pipelines.run import Models, run_video

    base = replace(config(args.model, boxes), end=args.end, seed=0)
    models = {}  # the seed gives every backend the same random weights
    for name in args.backends:
        models[name] = Models(replace(base, pose=replace(base.pose, backend=name)))
    times: dict[str, list[float]] = {name: [] for name in args.backends}
    raw = {}
    for _ in range(args.repeats):
        for name in args.backends:
            cfg = replace(base, pose=replace(base.pose, backend=name))
            summary = run_video(video, cfg, tmp / f"backend-{name}", models=models[name],
                                overwrite=True)
            times[name].append(summary.frames / summary.seconds)
            with ResultStore.open(summary.store, readonly=True) as store:
                raw[name] = store.tidy(corrected=False)[["x", "y"]].to_numpy()
    ref = args.backends[0]
    print(f"backends end to end ({args.model}, {summary.frames} frames, median of "
          f"{args.repeats} interleaved rounds):")
    for name in args.backends:
        fps = statistics.median(times[name])
        diff = np.nanmax(np.abs(raw[name] - raw[ref])) if raw[name].shape == raw[ref].shape \
            else float("nan")
        print(f"  {name}: {fps:.2f} frames/s, {fps / statistics.median(times[ref]):.2f}x "
              f"{ref}; raw keypoints differ from {ref}'s by at most {diff:.2e} px")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="clamp_tiny_rn50")
    parser.add_argument("--loops", type=int, default=10)
    parser.add_argument("--backends", nargs="*", default=[],
                        help="compare pose backends end to end, e.g. torch onnxruntime")
    parser.add_argument("--end", type=int, default=None, help="frames of the backend runs")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the backend runs")
    parser.add_argument("--skip-memory", action="store_true", help="no peak-memory runs")
    args = parser.parse_args()
    from clamp_track.pipelines.run import Models, run_video

    video = SHARED / "derived" / "cows_480p_24fps.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        boxes = mask_boxes(tmp / "det.txt")
        cfg = config(args.model, boxes)
        models = Models(cfg)
        summary = run_video(video, cfg, tmp / "run", models=models)
        stages = summary.stage_seconds
        alone = pose_alone(models, summary.store, video)
        print(f"model {args.model}, {summary.frames} frames, 1 animal, device {models.pose.device}")
        print(f"end to end: {summary.seconds:.2f} s = {summary.frames / summary.seconds:.2f} "
              "frames/s (model loading excluded)")
        print("stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()))
        total = sum(stages.values())
        print(f"sum of stages {total:.2f} s; end to end / sum = {summary.seconds / total:.3f}")
        print(f"model forward alone on the same crops {alone:.2f} s = "
              f"{summary.frames / alone:.2f} frames/s; end to end / forward alone "
              f"{summary.seconds / alone:.3f} (the pose worker runs the model while the main "
              f"thread decodes, tracks and crops; it waited {stages.get('pose', 0.0):.2f} s "
              "for it)")

        if args.backends:
            compare_backends(video, boxes, args, tmp)
        if args.skip_memory:
            return
        long_video = looped(video, tmp / "cows_x10.mp4", args.loops)
        long_boxes = mask_boxes(tmp / "det_x10.txt", args.loops)
        short = peak_memory(video, boxes, args.model, str(tmp / "m1"))
        long = peak_memory(long_video, long_boxes, args.model, str(tmp / "m10"))
        print(f"peak RSS: {short['frames']} frames {short['peak_mb']:.0f} MB; "
              f"{long['frames']} frames {long['peak_mb']:.0f} MB; "
              f"ratio {long['peak_mb'] / short['peak_mb']:.3f}")


if __name__ == "__main__":
    main()
