"""``clamp-track batch``: a whole collection of videos on local workers or a Dask cluster."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from clamp_track.commands.run import add_run_options, config_data, find_videos

BOXES_HELP = ("--detector file: a MegaDetector JSON covering the videos, or a path pattern with "
              "{dir}, {stem}, {name} (default {dir}/{stem}.det.txt: a MOT det.txt beside each "
              "video)")


def add_parser(sub) -> None:
    """Register ``batch``."""
    p = sub.add_parser(
        "batch", help="process many videos in parallel (local workers or a Dask cluster)",
        description="Run every video like `clamp-track run` (same store and exports), in "
        "parallel: local worker processes by default (one per GPU, else a few CPU workers), "
        "or a Dask cluster. Complete videos are skipped, interrupted ones resume, failures are "
        "recorded in batch_summary.csv.",
    )
    p.add_argument("inputs", nargs="+",
                   help="video files, folders (searched recursively) or .txt lists of videos")
    add_run_options(p, boxes_help=BOXES_HELP)
    p.add_argument("--workers", type=int, metavar="N",
                   help="parallel workers (default: one per GPU, else min(4, CPU cores))")
    p.add_argument("--dask", metavar="local|tcp://HOST:PORT",
                   help="run on Dask: 'local' starts a LocalCluster, an address connects to a "
                   "running scheduler (needs clamp-track[dask])")
    p.add_argument("--retries", type=int, default=2,
                   help="times a video is retried after its worker died (default 2)")
    p.add_argument("--overwrite", action="store_true",
                   help="process complete videos again; replace results holding corrections")
    p.add_argument("--summary", metavar="CSV",
                   help="summary table (default: batch_summary.csv in -o DIR, else here)")
    p.add_argument("--combined-csv", nargs="?", const="", metavar="CSV",
                   help="also write all videos' keypoints in one tidy CSV (default: "
                   "batch_keypoints.csv beside the summary)")
    p.add_argument("--behaviour", action="store_true",
                   help="also measure each video's behaviour (as `clamp-track behaviour`, "
                   "files beside its store) and add the per-animal summaries to the summary "
                   "(one row per video and animal; needs clamp-track[behaviour])")
    p.add_argument("--px-per-m", type=float, default=None,
                   help="with --behaviour: pixels per metre, for lengths in metres")
    p.set_defaults(func=main)


def build_config(args: argparse.Namespace):
    """The batch's :class:`RunConfig`: as ``run`` builds it, with per-video boxes by default."""
    from clamp_track.config import from_dict
    from clamp_track.pipelines.batch import DEFAULT_BOXES
    from clamp_track.pipelines.run import RunConfig

    data = config_data(args)
    detect = data.get("detect", {})
    if detect.get("name") == "file" and not detect.get("boxes"):
        detect["boxes"] = DEFAULT_BOXES
    if args.dask and detect.get("boxes") and "{" not in detect["boxes"]:
        detect["boxes"] = os.path.abspath(detect["boxes"])  # workers may run elsewhere
    return from_dict(RunConfig, data, source=args.config or "command line")


def collect(inputs, out_dir, absolute: bool = False) -> list[tuple[Path, Path | None]]:
    """``(video, output folder)`` pairs for the inputs.

    Without ``out_dir`` the outputs go beside each video. With it, the videos of a folder (or
    of a ``.txt`` list) keep their sub-folders under ``out_dir``, so camera folders holding
    files of the same name (``CAM01/IMAG0001.MP4``, ``CAM02/IMAG0001.MP4``) do not collide.
    """
    pairs = []
    for item in map(Path, inputs):
        videos = find_videos([item])
        if absolute:
            videos = [Path(os.path.abspath(v)) for v in videos]
        root = _common_folder(item, videos)
        for video in videos:
            out = None
            if out_dir is not None:
                out = Path(out_dir)
                if root is not None:
                    out = out / os.path.relpath(Path(os.path.abspath(video)).parent, root)
                out = Path(os.path.abspath(out)) if absolute else Path(os.path.normpath(out))
            pairs.append((video, out))
    return pairs


def _common_folder(item: Path, videos: list[Path]) -> str | None:
    if item.is_dir():
        return os.path.abspath(item)
    if item.suffix == ".txt" and len(videos) > 1:
        return os.path.commonpath([os.path.abspath(v.parent) for v in videos])
    return None


def main(args: argparse.Namespace) -> int:
    """Run the batch with a progress bar; exit status 1 if any video failed."""
    from clamp_track.errors import InputError
    from clamp_track.pipelines.batch import BatchConfig, plan_tasks, run_batch, write_combined_csv

    behaviour = None
    if args.behaviour:  # fail now, not after hours of pose estimation
        from clamp_track.errors import require
        from clamp_track.pipelines.behaviour import BehaviourConfig

        require("movement.kinematics", "behaviour", "batch --behaviour")
        behaviour = BehaviourConfig(px_per_m=args.px_per_m)
    elif args.px_per_m is not None:
        raise InputError("--px-per-m is a behaviour setting; add --behaviour")
    if args.dask and not getattr(args, "verbose", False):
        _quiet_dask()
    cfg = build_config(args)
    pairs = collect(args.inputs, args.out_dir, absolute=bool(args.dask))
    tasks = plan_tasks(pairs, cfg, overwrite=args.overwrite)
    summary = Path(args.summary or Path(args.out_dir or ".") / "batch_summary.csv")
    try:
        bcfg = BatchConfig(workers=args.workers, dask=args.dask, retries=args.retries,
                           summary=str(summary), behaviour=behaviour)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = _BatchBar(len(tasks))
    try:
        with logging_redirect_tqdm():  # warnings print above the bar, not through it
            results = run_batch(tasks, bcfg, progress=bar.update)
    except KeyboardInterrupt:
        bar.close()
        print(f"stopped; {summary} lists what is done. Run the same command again to "
              "continue.", file=sys.stderr)
        raise
    bar.close()
    print(_counts(results) + f" -> {summary}")
    if args.combined_csv is not None:
        path = Path(args.combined_csv or summary.parent / "batch_keypoints.csv")
        print(f"keypoints of all videos -> {write_combined_csv(results, path)}")
    return 1 if any(r.status == "failed" for r in results) else 0


def _quiet_dask() -> None:
    """Show Dask's warnings, not its INFO chatter (which its import switches on)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return  # run_batch says how to install it
    logging.getLogger("distributed").setLevel(logging.WARNING)


def _counts(results) -> str:
    counts = {s: 0 for s in ("done", "skipped", "failed", "interrupted", "pending")}
    for r in results:
        counts[r.status] += 1
    return f"{len(results)} videos: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)


class _BatchBar:
    """tqdm bar over videos: done/failed/skipped, frames/s overall and the batch's ETA."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="videos", unit="video", dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n}/{total}{postfix}")

    def update(self, p) -> None:
        for r in p.finished:
            if r.status == "failed":
                self.bar.write(f"FAILED {r.video}: {r.error}")
            elif r.status == "done":
                self.bar.write(f"done {r.video}: {r.frames} frames, {r.tracks} tracks, "
                               f"{r.seconds:.1f} s")
        self.bar.n = p.done + p.skipped + p.failed
        eta = "?" if p.eta_s is None else _duration(p.eta_s)
        self.bar.set_postfix_str(f"{p.done} done, {p.failed} failed, {p.skipped} skipped, "
                                 f"{p.running} running, {p.fps:.1f} frames/s, ETA {eta}",
                                 refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"
