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
    parser.add_argument("--seeds", metavar="LIST",
                        help="repeat the run once per seed (e.g. 0,1,2 or 0-4: the few-shot "
                        "draw and the training seed) into OUTPUT/seed<N>/ and print every "
                        "metric's mean ± sd (also OUTPUT/seeds.json, seeds.csv)")
    parser.add_argument("--seed-checkpoint", choices=("best", "final"), default="best",
                        help="with --seeds: summarise each run's best validation (default, "
                        "the official save_best) or its final one")
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
    if args.seeds is not None:
        from clamp_track.engine.experiment import run_seeds

        summary = run_seeds(cfg, parse_seeds(args.seeds), output=output, resume=args.resume,
                            checkpoint=args.seed_checkpoint)
        print(f"{summary.output}: {summary.format()}")
        return 0
    result = run_training(cfg, output=output, resume=args.resume)
    print(f"{result.output}: {result.epochs_done} epochs, {result.steps} steps"
          + (" (cancelled)" if result.cancelled else ""))
    if result.metrics:
        print(format_metrics(result.metrics))
    if result.best_metric:
        name, value, epoch = result.best_metric
        print(f"best {name} {100 * value:.1f} after epoch {epoch}: {result.best}")
    return 0


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (or a mix, ``"0-2,7"``) -> the list of seeds.

    Raises:
        InputError: If the text is not such a list.
    """
    from clamp_track.errors import InputError

    seeds: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            lo, hi = int(first), int(last or first)
            if hi < lo:
                raise ValueError(part)
            seeds.extend(range(lo, hi + 1))
    except ValueError:
        raise InputError(f"--seeds {text!r}: expected seeds such as 0,1,2 or 0-4") from None
    return seeds
