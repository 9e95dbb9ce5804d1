"""CLAMP vs SimpleBaseline inference speed, measured side by side in one run.

Same backbone (RN50 or ViT-B/16), random weights, 256x256 crops, batch 1/8/32; CLAMP's text
side is computed once and cached (as in the pipeline), so the difference is the dense
attention pool / projection, the context decoder, the score map and K more head input channels.
Timings alternate between the two models so that machine load affects both alike.

    python benchmarks/pose_speed.py                 # CPU here, CUDA (fp16 autocast) if present
    python benchmarks/pose_speed.py --batches 1 8 --repeats 5
    python benchmarks/pose_speed.py --backbones rn50 --batches 8 --threads 1 --clock cpu

On a machine shared with other work, wall-clock times measure the other work too: ``--clock
cpu`` times each forward by the CPU time of the process (``time.process_time``), which waiting
for a core does not add to; with ``--threads 1`` no time is spent spinning in idle threads
either, so the ratio is the two models' own cost (CPU only; CUDA always uses the wall clock).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from clamp_track.models import create_model

CLOCK = time.perf_counter


def time_once(model, images, device, drop_text_cache: bool = False) -> float:
    if drop_text_cache:
        model._text_cache = None  # what every forward would cost without the cache
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = CLOCK()
    with torch.inference_mode(), torch.autocast(device.type, torch.float16,
                                                enabled=device.type == "cuda"):
        model(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return CLOCK() - start


def compare(backbone: str, batch: int, repeats: int, device) -> tuple[float, float, float]:
    clamp = create_model(f"clamp_{backbone}").to(device)
    base = create_model(f"simplebaseline_{backbone}").to(device)
    images = torch.randn(batch, 3, 256, 256, device=device)
    if backbone == "rn50":  # as the pipeline runs convolution backbones
        clamp, base = (m.to(memory_format=torch.channels_last) for m in (clamp, base))
        images = images.contiguous(memory_format=torch.channels_last)
    for model in (clamp, base):  # warm-up (and CLAMP's text cache)
        time_once(model, images, device)
    t_clamp, t_base, t_uncached = [], [], []
    for _ in range(repeats):
        t_clamp.append(time_once(clamp, images, device))
        t_base.append(time_once(base, images, device))
        t_uncached.append(time_once(clamp, images, device, drop_text_cache=True))
    return tuple(statistics.median(t) for t in (t_clamp, t_base, t_uncached))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["rn50", "vitb16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="time by the wall clock or by the process's CPU time (CPU only)")
    args = parser.parse_args()
    device = torch.device(args.device)
    global CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and device.type == "cpu":
        CLOCK = time.process_time
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'CPU time' if CLOCK is time.process_time else 'wall clock'}, "
          f"median of {args.repeats}")
    print("| backbone | batch | CLAMP crops/s | SimpleBaseline crops/s | CLAMP / SB time "
          "| without text cache |")
    print("|---|---|---|---|---|---|")
    for backbone in args.backbones:
        for batch in args.batches:
            t_clamp, t_base, t_uncached = compare(backbone, batch, args.repeats, device)
            print(f"| {backbone} | {batch} | {batch / t_clamp:.2f} | {batch / t_base:.2f} "
                  f"| {t_clamp / t_base:.3f} | {t_uncached / t_base:.3f} |", flush=True)


if __name__ == "__main__":
    main()
