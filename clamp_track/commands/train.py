"""``clamp-track train CONFIG [key=value ...]``: train a pose model from a YAML config."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    """Register ``train``."""
    parser = sub.add_parser(
        "train",
        help="train a pose model (AP-10K, Animal-Pose or any COCO keypoint file)",
        description="Train from a YAML config (see configs/ for every paper table row). "
        "Settings can be overridden as key=value, e.g. train.epochs=10 train.optim.lr=1e-4 "
        "data.root=/data/ap10k. The run folder gets config.resolved.yaml, samples.json, "
        "log.csv, val.csv, last.pt and best.pt.",
    )
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override config settings (dotted keys)")
    parser.add_argument("-o", "--output", help="run folder (default: the config's output, "
                        "else runs/<config name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in the output folder from its last.pt")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config, train, and print where the results are."""
    from pathlib import Path

    from clamp_track.config import from_dict, load_yaml, merge, parse_overrides
    from clamp_track.engine.evaluate import format_metrics
    from clamp_track.engine.experiment import TrainConfig, run_training

    data = merge(load_yaml(args.config), parse_overrides(args.overrides))
    source = args.config + (f" (+ {' '.join(args.overrides)})" if args.overrides else "")
    cfg = from_dict(TrainConfig, data, source=source)
    output = args.output or cfg.output or str(Path("runs") / Path(args.config).stem)
    result = run_training(cfg, output=output, resume=args.resume)
    print(f"{result.output}: {result.epochs_done} epochs, {result.steps} steps"
          + (" (cancelled)" if result.cancelled else ""))
    if result.metrics:
        print(format_metrics(result.metrics))
    if result.best_metric:
        name, value, epoch = result.best_metric
        print(f"best {name} {100 * value:.1f} after epoch {epoch}: {result.best}")
    return 0
