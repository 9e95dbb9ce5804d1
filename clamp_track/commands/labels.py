"""``clamp-track labels``: move labels between clamp-track, DeepLabCut and COCO.

::

    clamp-track labels export STORE [STORE ...] --format dlc|coco -o DIR
    clamp-track labels convert SOURCE --to dlc|coco -o DIR
    clamp-track labels import SOURCE --store STORE

``export`` writes the corrected frames of result stores as a DeepLabCut project's
``labeled-data`` folders or as COCO keypoint JSON + images (frames decoded to PNG); ``convert``
turns a DeepLabCut labelled-data folder into COCO or back; ``import`` writes labels of a
store's video (e.g. made in DeepLabCut) into the store as corrections, where the review GUI
shows them and fine-tuning uses them.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    """Register ``labels`` with its ``export``, ``convert`` and ``import`` actions."""
    parser = sub.add_parser(
        "labels", help="export corrections as DeepLabCut / COCO labels, convert, import",
        description="Move labels between result stores, DeepLabCut labeled-data folders and "
        "COCO keypoint files.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    export = actions.add_parser("export", help="corrected frames of stores -> DLC or COCO")
    export.add_argument("stores", nargs="+", metavar="STORE", help="result store(s)")
    export.add_argument("--format", required=True, choices=("dlc", "coco"))
    export.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="DeepLabCut project folder (labeled-data/<video>/ is written in "
                        "it) or COCO output folder")
    export.add_argument("--scorer", default="clamp-track", help="DeepLabCut scorer name")
    export.add_argument("--layout", choices=("auto", "single", "multi"), default="auto",
                        help="DeepLabCut single- or multi-animal columns (auto: multi)")
    export.add_argument("--untouched", choices=("ignore", "confident", "all"), default="ignore",
                        help="what the keypoints you did not correct count as")
    export.add_argument("--video", action="append", default=[], metavar="PATH",
                        help="a store's video if it moved (file or folder); repeatable")
    export.set_defaults(func=run_export)

    convert = actions.add_parser("convert", help="DeepLabCut / SLEAP labelled data -> DLC, COCO")
    convert.add_argument("source", help="labeled-data/<video> folder, CollectedData file, "
                         "COCO .json, or SLEAP .slp")
    convert.add_argument("--to", required=True, choices=("dlc", "coco"))
    convert.add_argument("-o", "--output", required=True, metavar="DIR")
    convert.add_argument("--images", metavar="DIR", help="image folder of a COCO source")
    convert.add_argument("--scorer", help="DeepLabCut scorer (default: the source's)")
    convert.add_argument("--keypoints", metavar="SET", help="map onto this keypoint set")
    convert.set_defaults(func=run_convert)

    imp = actions.add_parser("import", help="labels of a store's video -> its corrections")
    imp.add_argument("source", help="labeled-data/<video> folder, CollectedData file, COCO "
                     ".json, SLEAP .slp, or another result store of the same video (e.g. "
                     "before a re-run)")
    imp.add_argument("--store", required=True, help="the result store of the same video")
    imp.add_argument("--images", metavar="DIR", help="image folder of a COCO source")
    imp.add_argument("--match", choices=("auto", "track", "nearest"), default="auto",
                     help="which animal gets a label: the track named animal<N> (track), the "
                     "nearest prediction (nearest), or track unless the source is another "
                     "store (auto)")
    imp.add_argument("--add-missing", action="store_true",
                     help="add a label that matches no detected animal as an animal of its own "
                     "(default: skip it)")
    imp.set_defaults(func=run_import)


def run_export(args: argparse.Namespace) -> int:
    """Export corrected frames."""
    from dataclasses import replace

    from clamp_track.engine.finetune import FinetuneConfig, load_sources

    cfg = FinetuneConfig(untouched=args.untouched, videos=tuple(args.video))
    labels, _ = load_sources(args.stores, cfg)
    labels = replace(labels, scorer=args.scorer)
    if args.format == "dlc" and args.layout == "single":
        labels = _single_animal(labels)
    _write(labels, args.format, args.output)
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """Convert a label file."""
    from dataclasses import replace

    from clamp_track.io.labels import read_labels

    labels = read_labels(args.source, images=args.images, keypoints=args.keypoints)
    if args.scorer:
        labels = replace(labels, scorer=args.scorer)
    _write(labels, args.to, args.output)
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Write labels into a store as corrections."""
    from clamp_track.io.labels import import_into_store, labels_from_store, read_labels
    from clamp_track.io.store import SUFFIX, ResultStore

    match = args.match
    if args.source.endswith(SUFFIX):
        with ResultStore.open(args.source, readonly=True) as other:
            labels = labels_from_store(other, need_video=False)
        match = "nearest" if match == "auto" else match
    else:
        labels = read_labels(args.source, images=args.images)
        match = "track" if match == "auto" else match
    with ResultStore.open(args.store) as store:
        done, skipped = import_into_store(labels, store, match=match,
                                          add_missing=args.add_missing)
    print(f"{args.store}: {done} labelled animals imported as corrections"
          + (f", {skipped} skipped (frame not processed or no matching animal; "
             "--add-missing adds them)" if skipped else ""))
    return 0


def _single_animal(labels):
    from dataclasses import replace

    return replace(labels, individuals=(), items=[replace(i, individual="")
                                                  for i in labels.items])


def _write(labels, fmt: str, output: str) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(labels.images()), desc="writing images", unit="image")

    def tick(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    try:
        if fmt == "coco":
            from clamp_track.io.coco_labels import write_coco_labels

            path = write_coco_labels(labels, output, progress=tick)
            written = [path]
        else:
            from clamp_track.io.dlc_labels import write_dlc_labels

            written = write_dlc_labels(labels, output, progress=tick)
    finally:
        bar.close()
    n = len(labels.labelled_items())
    for path in written:
        print(f"wrote {path}")
    print(f"{n} labelled animals in {len(labels.images())} images")
    if fmt == "dlc":
        kp = labels.keypoints
        print(f"DeepLabCut config.yaml: scorer: {labels.scorer}; "
              + (f"individuals: {list(labels.individuals)}; multianimalbodyparts: "
                 if labels.multi_animal else "bodyparts: ")
              + f"{list(kp.source_names)}; add the videos to video_sets")
