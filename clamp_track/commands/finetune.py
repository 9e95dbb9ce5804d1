"""``clamp-track finetune SOURCE [SOURCE ...] [--from WEIGHTS] [-o NEW_WEIGHTS]``.

Fine-tunes pose weights on the corrected frames of result stores (``*.clamp.sqlite``) and/or on
labels made elsewhere (a DeepLabCut ``labeled-data/<video>`` folder, a ``CollectedData_*.h5``
or ``.csv`` file, a COCO keypoint ``.json``), with the small-data recipe of
:mod:`clamp_track.engine.finetune`, and writes a normal clamp-track checkpoint.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    """Register ``finetune``."""
    parser = sub.add_parser(
        "finetune",
        help="fine-tune pose weights on your corrections (or DeepLabCut / COCO labels)",
        description="Train on the corrected frames of result stores and/or DeepLabCut / COCO "
        "labels, holding out part of them for early stopping, and write new weights "
        "(run clamp-track run --pose-weights NEW_WEIGHTS to use them).",
    )
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="result store (*.clamp.sqlite), DeepLabCut labeled-data folder or "
                        "CollectedData file, COCO keypoint .json, or SLEAP .slp")
    parser.add_argument("--from", dest="weights", metavar="WEIGHTS",
                        help="start weights: checkpoint, cached weights name, or a model name "
                        "(default: the weights the store was made with)")
    parser.add_argument("-o", "--output", metavar="NEW_WEIGHTS",
                        help="new weights file (default: <video>.finetuned.pt beside the store)")
    parser.add_argument("--keypoints", metavar="SET",
                        help="keypoint set to train: ap10k, animalpose, a YAML file of names, "
                        "or a DeepLabCut project's config.yaml (default: the labels')")
    parser.add_argument("--adapt-keypoints", action="store_true",
                        help="allow start weights trained for another keypoint set: keep the "
                        "backbone and language parts, train new keypoint heads")
    parser.add_argument("--video", action="append", default=[], metavar="PATH",
                        help="a store's video (file or folder) if it moved; repeatable")
    parser.add_argument("--images", metavar="DIR", help="image folder of COCO .json sources")
    parser.add_argument("--replay", metavar="ANN",
                        help="mix in a base COCO keypoint dataset (against forgetting)")
    parser.add_argument("--replay-images", metavar="DIR", help="image folder of --replay")
    parser.add_argument("--replay-ratio", type=float, metavar="R",
                        help="replay samples per label sample (default 1)")
    parser.add_argument("--freeze-backbone", action="store_true",
                        help="train only the heads, prompts and context decoder")
    parser.add_argument("--untouched", choices=("ignore", "confident", "all"),
                        help="what the keypoints you did not correct count as (default: ignore)")
    parser.add_argument("--steps", type=int, help="most training steps (default 600)")
    parser.add_argument("--lr", type=float, help="learning rate (default 1e-4)")
    parser.add_argument("--batch-size", type=int, help="crops per step (default 8)")
    parser.add_argument("--val-fraction", type=float,
                        help="fraction of labelled frames held out (default 0.2)")
    parser.add_argument("--seed", type=int, help="seed of the split and the augmentations")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--workers", type=int, default=2, help="data loading processes")
    parser.add_argument("--config", metavar="YAML", help="recipe settings (FinetuneConfig keys)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any recipe setting, e.g. --set patience=10")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--rerun", action="store_true",
                        help="then run each store's video again with the new weights (into a "
                        "folder named after them beside the store) and carry the corrections "
                        "over")
    parser.set_defaults(func=run)


#: Flags that map one to one onto FinetuneConfig fields.
_FIELDS = ("weights", "output", "keypoints", "steps", "lr", "batch_size", "val_fraction",
           "seed", "device", "untouched", "workers")


def config_from_args(args: argparse.Namespace):
    """The :class:`FinetuneConfig` of defaults <- ``--config`` <- flags <- ``--set``."""
    from clamp_track.config import from_dict, load_yaml, merge, parse_overrides
    from clamp_track.errors import InputError

    data = load_yaml(args.config) if args.config else {}
    flags = {name: getattr(args, name) for name in _FIELDS if getattr(args, name) is not None}
    if args.adapt_keypoints:
        flags["adapt_keypoints"] = True
    if args.freeze_backbone:
        flags["freeze_backbone"] = True
    if args.video:
        flags["videos"] = list(args.video)
    if args.replay:
        flags["replay"] = {"annotations": args.replay, "images": args.replay_images or "."}
        if args.replay_ratio is not None:
            flags["replay"]["ratio"] = args.replay_ratio
    elif args.replay_images or args.replay_ratio is not None:
        raise InputError("--replay-images and --replay-ratio need --replay ANN")
    data = merge(merge(data, flags), parse_overrides(args.set))
    from clamp_track.engine.finetune import FinetuneConfig

    return from_dict(FinetuneConfig, data, source=args.config or "the command line")


def run(args: argparse.Namespace) -> int:
    """Read the sources, fine-tune with a progress bar, print the result."""
    from clamp_track.engine.finetune import finetune

    cfg = config_from_args(args)
    sources = [_source(s, args, cfg) for s in args.sources]
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = _Bar(disable=args.no_progress)
    try:
        with logging_redirect_tqdm():  # log lines above the bar, not through it
            result = finetune(sources, cfg, progress=bar)
    finally:
        bar.close()
    print(result)
    if result.metrics_before and result.metrics_after:
        from clamp_track.engine.evaluate import format_metrics

        print("held-out frames, start weights:")
        print(format_metrics(result.metrics_before))
        print("held-out frames, new weights:")
        print(format_metrics(result.metrics_after))
    if args.rerun and not result.cancelled:
        _rerun(args.sources, result.weights, args.video)
    else:
        print(f"use them: clamp-track run VIDEO --pose-weights {result.weights}")
    return 0


def _rerun(sources, weights, videos) -> None:
    """Re-run the videos of the store sources with the new weights (corrections carried).

    Each store's video is the one of ``--video`` meant for it (by name, or in a listed folder,
    see :func:`~clamp_track.io.video_ref.video_among`), else its own, found by its reference.
    """
    from clamp_track.io.store import ResultStore
    from clamp_track.io.video_ref import video_among
    from clamp_track.pipelines.run import rerun

    stores = [s for s in sources if str(s).endswith(".clamp.sqlite")]
    if not stores:
        print("--rerun: no result stores among the sources; nothing to re-run")
    for store in stores:
        with ResultStore.open(store, readonly=True) as opened:
            video = video_among(opened, videos)
        summary = rerun(store, weights, video=video)
        print(f"re-run: {summary.line()}")
        if summary.carried is not None:
            print(f"re-run: {summary.carried.line()}")
            for line in summary.carried.unplaced:
                print(f"re-run: not placed: {line}")


def _source(path: str, args, cfg):
    """A store path as it is (finetune opens it); label files read here (``--images``)."""
    from pathlib import Path

    from clamp_track.io.labels import read_labels
    from clamp_track.io.store import SUFFIX

    if path.endswith(SUFFIX) or Path(path).suffix in (".sqlite", ".db"):
        return path
    return read_labels(path, images=args.images, keypoints=cfg.keypoints)


class _Bar:
    """A tqdm bar per stage (frames, then training steps), fed by the progress callback."""

    def __init__(self, disable: bool):
        self.disable, self.bar, self.stage = disable, None, None

    def __call__(self, p) -> None:
        from tqdm.auto import tqdm

        if p.stage == "done":
            return
        if p.stage != self.stage:
            self.close()
            self.stage = p.stage
            desc = "reading frames" if p.stage == "frames" else "fine-tuning"
            self.bar = tqdm(total=p.total, desc=desc, disable=self.disable, dynamic_ncols=True,
                            unit="frame" if p.stage == "frames" else "step")
        self.bar.total = p.total
        self.bar.n = p.done
        if p.stage == "training":
            post = {"loss": f"{p.loss:.4g}" if p.loss is not None else "-"}
            if p.metric is not None:
                post["held-out PCK@0.1"] = f"{100 * p.metric:.1f}"
                post["best"] = f"{100 * p.best_metric:.1f}"
            self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
