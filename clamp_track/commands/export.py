"""``clamp-track export``: re-export results from a store without re-running."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    """Register ``export``."""
    p = sub.add_parser(
        "export", help="write CSV / DeepLabCut / annotated video / plots from a result store",
        description="Export a finished run (including your corrections) from its "
        "<video>.clamp.sqlite store.",
    )
    p.add_argument("store", help="the <video>.clamp.sqlite file")
    p.add_argument("--format", default="csv,dlc",
                   help="comma list of csv, dlc, sleap, nwb, video, plot (default csv,dlc)")
    p.add_argument("-o", "--out-dir", help="output folder (default: beside the store)")
    p.add_argument("--video", help="the video, if it moved since the run (for --format video)")
    p.add_argument("--dlc-net-type", default="resnet_50",
                   help="DeepLabCut net type named in the scorer so DeepLabCut's project tools "
                   "find the file (default resnet_50); 'none' names the clamp-track model")
    p.add_argument("--dlc-layout", choices=("auto", "single", "multi"), default="auto",
                   help="DeepLabCut columns: single-animal (scorer/bodyparts/coords, what "
                   "anipose and Lightning Pose read) or multi-animal (with individuals); auto "
                   "(default): single when the video has one animal")
    p.add_argument("--untouched", choices=("ignore", "confident", "all"), default="ignore",
                   help="in the .slp's user instances, what the keypoints you did not correct "
                   "count as (as in `labels export`; default ignore: not labelled)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Export and list the written files."""
    from clamp_track.errors import InputError
    from clamp_track.io.store import ResultStore
    from clamp_track.pipelines.run import EXPORT_FORMATS, export

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    unknown = set(formats) - set(EXPORT_FORMATS)
    if unknown:
        raise InputError(f"unknown export format(s) {sorted(unknown)}; use "
                         f"{', '.join(EXPORT_FORMATS)}")
    net = None if str(args.dlc_net_type).lower() == "none" else args.dlc_net_type
    with ResultStore.open(args.store, readonly=not _writable(args.store),
                           check=True) as store:
        if not store.complete:
            raise InputError(f"{args.store}: the run did not finish; finish it with "
                             "`clamp-track run VIDEO --resume` first")
        for path in export(store, formats, args.out_dir, video=args.video, dlc_net_type=net,
                           dlc_layout=args.dlc_layout, untouched=args.untouched):
            print(path)
    return 0


def _writable(store: str) -> bool:
    """Whether the store and its folder are writable.

    Then it is opened read-write, without writing anything: only a connection that can
    checkpoint the write-ahead log removes its ``-wal``/``-shm`` files on closing, and an
    export should leave the folder as it found it. A read-only store is still exported.
    """
    import os
    from pathlib import Path

    path = Path(store)
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)
