"""Training-data throughput: DataLoader samples/s with 0 vs N worker processes, side by side.

Real AP-10K sample images (1024x683 and 1200x867 JPEGs, ../shared/data/mmpose-tests/ap10k),
repeated to a few dozen records, with the full training augmentation. Also shows where the
per-sample time goes (JPEG decode, the rest of ``__getitem__``) and the per-batch cost of
``prepare_batch`` (normalisation + heatmap targets), which runs on the training device.

    python benchmarks/data_speed.py                      # workers 0 and 2
    python benchmarks/data_speed.py --workers 0 2 4 --records 128 --epochs 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from clamp_track.data.augment import AugmentConfig
from clamp_track.data.coco import load_coco
from clamp_track.data.dataset import TopDownDataset, collate, make_loader, prepare_batch
from clamp_track.data.records import load_image
from clamp_track.models import get_config

AP10K = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmpose-tests" / "ap10k"


def loader_speed(dataset, batch_size: int, workers: int, epochs: int) -> float:
    """Samples/s over ``epochs`` epochs after one warm-up epoch (worker start-up excluded)."""
    loader = make_loader(dataset, batch_size, shuffle=True, workers=workers)
    for epoch in range(epochs + 1):
        if epoch == 1:
            start = time.perf_counter()
        loader.sampler.set_epoch(epoch)
        for _ in loader:
            pass
    return epochs * len(dataset) / (time.perf_counter() - start)


def per_sample_ms(dataset, repeats: int = 40) -> tuple[float, float]:
    """Median ms of decoding one image and of one whole ``__getitem__``."""
    decode, item = [], []
    for i in range(repeats):
        rec = dataset.records[i % len(dataset.records)]
        t0 = time.perf_counter()
        load_image(rec.image, bgr=True)
        t1 = time.perf_counter()
        dataset[(i, i % len(dataset))]
        item.append(time.perf_counter() - t1)
        decode.append(t1 - t0)
    return 1000 * statistics.median(decode), 1000 * statistics.median(item)


def batch_ms(dataset, batch_size: int, repeats: int = 5) -> float:
    """Median ms of collate + prepare_batch (normalise + targets) for one batch on the CPU."""
    samples = [dataset[(0, i % len(dataset))] for i in range(batch_size)]
    config, device, times = get_config("clamp_tiny_rn50"), torch.device("cpu"), []
    for _ in range(repeats):
        t0 = time.perf_counter()
        prepare_batch(collate(samples), config, device)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    data = load_coco(AP10K / "test_ap10k.json", AP10K)
    records = (data.records * args.records)[: args.records]
    dataset = TopDownDataset(records, data.keypoints, augment=AugmentConfig())
    decode, item = per_sample_ms(dataset)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.records} "
          f"records, batch {args.batch_size}, augmentation on")
    print(f"per sample: decode {decode:.1f} ms, whole __getitem__ {item:.1f} ms "
          f"(crop, keypoints, augmentation: {item - decode:.1f} ms)")
    print(f"per batch of {args.batch_size}: collate + normalise + targets "
          f"{batch_ms(dataset, args.batch_size):.1f} ms (on the training device)")
    print(f"{'workers':>8} {'samples/s':>10} {'vs 0':>6}")
    base = None
    for workers in args.workers:
        speed = loader_speed(dataset, args.batch_size, workers, args.epochs)
        base = base or speed
        print(f"{workers:>8} {speed:>10.1f} {speed / base:>5.2f}x")


if __name__ == "__main__":
    main()
