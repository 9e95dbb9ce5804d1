"""Fine-tune a tiny CLAMP from random weights on DeepLabCut's open-field mouse labels.

The 116 labelled frames of ``deeplabcut-examples/openfield-Pranav-2018-10-30`` (one mouse seen
from above, 4 keypoints: snout, left ear, right ear, tail base) are split once, seeded, into
frames to fine-tune on and test frames never seen in training. The keypoint vocabulary comes
from the DeepLabCut bodyparts (a new vocabulary: the prompts are "snout", "left ear", "right
ear", "tail base"). The script measures PCK@0.1 (box-normalised; boxes from the keypoints with
the documented margin) on the test frames before (random weights) and after fine-tuning, in one
run, and prints both.

    python benchmarks/finetune_openfield.py [--steps 1200] [--size 128] [--train 80]

Runs on the CPU in about 3 minutes (one torch thread); numbers depend on the seed (printed).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OPENFIELD = SHARED / "deeplabcut-examples/openfield-Pranav-2018-10-30/labeled-data/m4s1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="clamp_tiny_rn50")
    parser.add_argument("--train", type=int, default=80, help="frames to fine-tune on")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--size", type=int, default=128, help="model input size (px)")
    parser.add_argument("--lr", type=float, default=3e-3,
                        help="from random weights; the recipe default 1e-4 is for trained ones")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is fastest on a busy 2-core machine)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from clamp_track.data.corrections import to_instances
    from clamp_track.data.dataset import TopDownDataset
    from clamp_track.engine.evaluate import EvalConfig, evaluate
    from clamp_track.engine.finetune import FinetuneConfig, finetune
    from clamp_track.io.dlc_labels import read_dlc_labels
    from clamp_track.models import build_model, create_model, get_config, save_checkpoint

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    labels = read_dlc_labels(OPENFIELD)
    order = np.random.default_rng(args.seed).permutation(len(labels.items))
    train = labels.with_items([labels.items[i] for i in sorted(order[:args.train])])
    test = [labels.items[i] for i in sorted(order[args.train:])]
    kp, size = labels.keypoints, (args.size, args.size)
    test_set = TopDownDataset(to_instances(test, kp), kp, size)
    protocol = EvalConfig(flip_test=True)
    work = Path(tempfile.mkdtemp(prefix="ft-openfield-"))
    start = save_checkpoint(build_model(replace(get_config(args.model), input_size=size), kp),
                            work / "random.pt")
    before = evaluate(create_model(weights=start), test_set, protocol).metrics
    cfg = FinetuneConfig(weights=str(start), output=str(work / "openfield.pt"), steps=args.steps,
                         val_every=max(10, args.steps // 10), lr=args.lr, warmup_steps=20,
                         backbone_bn="train", device="cpu", seed=args.seed)
    began = time.perf_counter()
    result = finetune([train], cfg)
    seconds = time.perf_counter() - began
    after = evaluate(create_model(weights=result.weights), test_set, protocol).metrics
    print(f"open-field mouse, {args.model} at {args.size} px from random weights, seed "
          f"{args.seed}: fine-tuned on {result.train_images} frames (+{result.val_images} "
          f"held out for early stopping), {result.steps} steps in {seconds:.0f} s"
          + (" (stopped early)" if result.stopped_early else ""))
    print(f"test frames (never trained on): {len(test)}")
    print(f"{'':>10}{'PCK@0.05':>10}{'PCK@0.1':>10}")
    for name, m in (("before", before), ("after", after)):
        print(f"{name:>10}{100 * m['PCK@0.05']:>10.1f}{100 * m['PCK@0.1']:>10.1f}")


if __name__ == "__main__":
    main()
