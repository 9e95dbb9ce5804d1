"""``clamp-track behaviour``: per-animal behaviour measures from a result store (movement)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    """Register ``behaviour``."""
    p = sub.add_parser(
        "behaviour", help="speed, distance, heading, joint angles and activity budget per animal",
        description="Behaviour measures per animal and frame from a finished run's "
        "<video>.clamp.sqlite store, computed with the movement package on the corrected, "
        "smoothed coordinates (low-confidence keypoints are gaps). Writes "
        "<video>.behaviour.csv (per frame), <video>.behaviour_summary.csv (per animal) and "
        "speed, trajectory and ethogram plots. Needs: pip install 'clamp-track[behaviour]'.",
    )
    p.add_argument("store", help="the <video>.clamp.sqlite file (or the video beside it)")
    p.add_argument("-o", "--out-dir", help="output folder (default: beside the store)")
    p.add_argument("--px-per-m", type=float, default=None,
                   help="pixels per metre: lengths and speeds in metres instead of pixels")
    p.add_argument("--centre", default="",
                   help="comma list of keypoints whose mean is the body centre (default: the "
                   "torso keypoints of the keypoint set)")
    p.add_argument("--rest-below", type=float, default=0.2,
                   help="resting below this speed in body lengths per second (default 0.2)")
    p.add_argument("--run-above", type=float, default=2.0,
                   help="running at or above this speed in body lengths per second "
                   "(default 2.0)")
    p.add_argument("--min-confidence", type=float, default=None,
                   help="keypoints below this confidence are gaps (default 0.3, the review "
                   "queue's low-confidence threshold)")
    p.add_argument("--no-plots", action="store_true", help="write the CSVs only")
    p.set_defaults(func=main)


def config_from_args(args: argparse.Namespace):
    """The :class:`~clamp_track.pipelines.behaviour.BehaviourConfig` the flags ask for."""
    from clamp_track.pipelines.behaviour import BehaviourConfig

    extra = {} if args.min_confidence is None else {"min_confidence": args.min_confidence}
    return BehaviourConfig(
        centre=tuple(n.strip() for n in args.centre.split(",") if n.strip()),
        rest_below=args.rest_below, run_above=args.run_above, px_per_m=args.px_per_m,
        **extra)


def resolve_store(path: str) -> Path:
    """The store a user named: the file itself, or the store beside a video."""
    from clamp_track.io.store import store_path

    path = Path(path)
    if path.suffix != ".sqlite" and store_path(path).is_file():
        return store_path(path)
    return path


def main(args: argparse.Namespace) -> int:
    """Compute, write and list the files; one line per animal."""
    from clamp_track.io.store import ResultStore
    from clamp_track.pipelines.behaviour import compute_behaviour, write_behaviour

    config = config_from_args(args)
    store = resolve_store(args.store)
    with ResultStore.open(store, readonly=True) as s:
        video = s.video_info
    result = compute_behaviour(store, config)
    out_dir = Path(args.out_dir) if args.out_dir else store.parent
    for path in write_behaviour(result, Path(video.path).stem, out_dir,
                                plots=not args.no_plots, video_size=(video.width, video.height)):
        print(path)
    unit = config.length_unit
    for row in result.summary.itertuples(index=False):
        print(f"{row.individual}: visible {row.time_visible_s:.1f} s, distance "
              f"{row.total_distance:.4g} {unit}, resting {row.resting_s:.1f} s / walking "
              f"{row.walking_s:.1f} s / running {row.running_s:.1f} s")
    print("(corrected, smoothed coordinates; keypoints below confidence "
          f"{config.min_confidence:g} are gaps)")
    return 0
