"""``clamp-track run``: tracked, smoothed poses for one or more videos."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm",
                    ".mts", ".m2ts", ".3gp", ".flv"}


def add_parser(sub) -> None:
    """Register ``run``."""
    p = sub.add_parser(
        "run", help="detect, track and estimate poses in videos",
        description="Decode, detect, track, estimate poses (CLAMP), smooth and export. "
        "Settings come from the defaults, then --config YAML, then the flags; the resolved "
        "config is written next to the outputs.",
    )
    p.add_argument("videos", nargs="+", help="video files or folders (searched recursively)")
    add_run_options(p)
    p.add_argument("--resume", action="store_true", help="continue interrupted runs")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing results even if they hold corrections")
    p.set_defaults(func=main)


def add_run_options(p: argparse.ArgumentParser,
                    boxes_help: str = "boxes file for --detector file (MegaDetector JSON, MOT txt)",
                    ) -> None:
    """The options shared by ``run`` and ``batch``: ``-o`` and every :class:`RunConfig` flag."""
    p.add_argument("-o", "--out-dir", help="output folder (default: beside each video)")
    p.add_argument("--config", help="YAML with RunConfig settings")
    p.add_argument("--pose-model", help="model variant, e.g. clamp_rn50, clamp_vitb16")
    p.add_argument("--pose-weights",
                   help="checkpoint file (ours or official), cached name, 'auto' (default: the "
                   "official weights of --pose-model, fetched once) or 'none' (untrained)")
    p.add_argument("--keypoints", help="keypoint set for random weights (testing)")
    p.add_argument("--detector",
                   choices=["torchvision", "mmdet", "file", "motion", "megadetector"])
    from clamp_track.pipelines.megadetector import ALIASES, MEGADETECTOR_MODELS

    aliases = ", ".join(f"{k} = {v}" for k, v in ALIASES.items())
    p.add_argument("--detector-model", help="torchvision: fast|accurate|MODEL; megadetector: "
                   f"{'|'.join(MEGADETECTOR_MODELS)} (default {ALIASES['fast']}; {aliases}); "
                   "mmdet: CONFIG")
    p.add_argument("--detector-checkpoint", help="mmdet checkpoint")
    p.add_argument("--boxes", help=boxes_help)
    p.add_argument("--detect-every", type=int, metavar="K", help="detect every K-th frame")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, help="crops per pose forward pass")
    p.add_argument("--backend", choices=["torch", "onnxruntime"],
                   help="where the pose forward runs: torch (default) or, on the CPU, "
                   "onnxruntime (about 1.4x faster there; pip install 'clamp-track[onnx]')")
    p.add_argument("--no-flip-test", action="store_true",
                   help="skip the flipped-crop pass (about 2x faster pose on a CPU; "
                   "the paper's accuracy is with it)")
    p.add_argument("--decoder", choices=["auto", "pyav", "decord"],
                   help="video decoder (default auto = PyAV: bounded memory)")
    p.add_argument("--start", type=int, help="first frame (0-based)")
    p.add_argument("--end", type=int, help="one past the last frame")
    p.add_argument("--export", help="comma list of csv,dlc,sleap,nwb,video,plot (default csv,dlc)")
    p.add_argument("--video-out", action="store_true", help="also write an annotated video")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="any other setting, e.g. tracker.min_track_length=20")


def build_config(args: argparse.Namespace):
    """Defaults <- ``--config`` YAML <- flags, as a validated :class:`RunConfig`."""
    from clamp_track.config import from_dict
    from clamp_track.pipelines.run import RunConfig

    return from_dict(RunConfig, config_data(args), source=args.config or "command line")


def config_data(args: argparse.Namespace) -> dict:
    """The settings of :func:`build_config` as plain data, before validation."""
    from clamp_track.config import load_yaml, merge, parse_overrides

    data = load_yaml(args.config) if args.config else {}
    flags = {
        "pose_model": args.pose_model, "pose_weights": args.pose_weights,
        "keypoints": args.keypoints, "start": args.start, "end": args.end,
        "decoder": args.decoder,
        "detect": {"name": args.detector, "model": args.detector_model,
                   "checkpoint": args.detector_checkpoint, "boxes": args.boxes,
                   "every": args.detect_every},
        "pose": {"device": args.device, "batch_size": args.batch_size,
                 "flip_test": False if args.no_flip_test else None,
                 "backend": args.backend},
    }
    if args.export:
        flags["exports"] = [f.strip() for f in args.export.split(",") if f.strip()]
    if args.video_out:
        flags["exports"] = sorted({*(flags.get("exports") or data.get("exports")
                                     or ["csv", "dlc"]), "video"})
    if (args.pose_weights or "").lower() == "none":  # an untrained model, asked for
        flags["pose_weights"] = None
        data["pose_weights"] = None
    data = merge(data, _drop_none(flags))
    data = merge(data, parse_overrides(args.set))
    if data.get("detect", {}).get("boxes") and "name" not in data.get("detect", {}):
        data["detect"]["name"] = "file"
    return data


def _drop_none(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _drop_none(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out


def find_videos(inputs) -> list[Path]:
    """Video files named directly, found in folders (recursively) or listed in a .txt file."""
    from clamp_track.errors import InputError

    videos: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise InputError(f"{item}: no videos found in this folder")
            videos += found
        elif item.suffix == ".txt" and item.is_file():
            videos += [Path(line.strip()) for line in item.read_text().splitlines()
                       if line.strip() and not line.startswith("#")]
        else:
            videos.append(item)  # missing/invalid files get a clear error when opened
    return videos


def main(args: argparse.Namespace) -> int:
    """Run every video, sharing the loaded models; print a summary per video."""
    from clamp_track.pipelines.run import Models, plan_store, run_video

    cfg = build_config(args)
    videos = find_videos(args.videos)
    for video in videos:  # every input is checked before the model loads or a file is written
        plan_store(video, cfg, args.out_dir, resume=args.resume, overwrite=args.overwrite)
    models = Models(cfg)
    if args.pose_model and models.variant != args.pose_model:
        log.warning("--pose-model %s ignored: the weights %s are %s, which runs and is recorded",
                    args.pose_model, cfg.pose_weights, models.variant)
    for video in videos:
        with _ProgressBar(video.name) as bar:
            summary = run_video(video, cfg, args.out_dir, resume=args.resume,
                                overwrite=args.overwrite, models=models, progress=bar.update)
        print(summary.line())
        for path in summary.outputs:
            print(f"  {path}")
    return 0


class _ProgressBar:
    """tqdm bar showing frames, frames/s, ETA and animals in view."""

    def __init__(self, name: str):
        self.name = name
        self.bar = None

    def __enter__(self):
        return self

    def update(self, p) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=p.total, desc=self.name, unit="frame", dynamic_ncols=True)
        self.bar.n = p.done
        self.bar.set_postfix(animals=p.animals, refresh=False)
        self.bar.refresh()

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
