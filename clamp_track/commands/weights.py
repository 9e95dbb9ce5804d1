"""``clamp-track weights``: list, fetch and convert model weights."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    """Register ``weights`` and its sub-commands."""
    parser = sub.add_parser("weights", help="convert, list and fetch model weights")
    actions = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)

    convert = actions.add_parser(
        "convert",
        help="convert an official CLAMP (mmpose) checkpoint to a clamp-track checkpoint",
        description="Read an official CLAMP checkpoint, find its variant from the tensor "
        "shapes, and write a clamp-track checkpoint that carries its metadata.",
    )
    convert.add_argument("checkpoint", help="official CLAMP .pth file")
    convert.add_argument("-o", "--output", required=True, help="clamp-track .pt file to write")
    convert.add_argument("--model", help="expected variant (default: detected)")
    convert.add_argument(
        "--keypoints",
        help="keypoint set the weights were trained for: ap10k, animalpose or a YAML file "
        "(default: from the number of keypoints)",
    )
    convert.add_argument(
        "--trust", action="store_true",
        help="the file holds Python objects besides weights and you trust its source "
        "(unpickling can run code)")
    convert.set_defaults(func=run_convert)

    listing = actions.add_parser("list", help="named weights and what is in the cache")
    listing.set_defaults(func=run_list)
    fetch = actions.add_parser("fetch", help="download named weights once (needs internet)")
    fetch.add_argument("name", help="a name from `clamp-track weights list`")
    fetch.set_defaults(func=run_fetch)


def run_convert(args: argparse.Namespace) -> int:
    """Convert, load strictly, and write the checkpoint."""
    from pathlib import Path

    from clamp_track.errors import CheckpointError
    from clamp_track.models import (
        build_model,
        check_fits,
        get_config,
        load_checkpoint,
        save_checkpoint,
    )

    ckpt = load_checkpoint(args.checkpoint, keypoints=_keypoints(args.keypoints),
                           trust=args.trust)
    if ckpt.source != "official":
        raise CheckpointError(f"{args.checkpoint}: already a clamp-track checkpoint")
    config = get_config(args.model) if args.model else ckpt.config
    check_fits(ckpt, config, ckpt.keypoints, args.model or ckpt.variant)
    model = build_model(config, ckpt.keypoints)
    model.load_state_dict(ckpt.state_dict, strict=True)
    out = save_checkpoint(
        model, Path(args.output), origin="official",
        extra={"converted_from": Path(args.checkpoint).name},
    )
    n = sum(p.numel() for p in model.state_dict().values())
    print(
        f"{args.checkpoint} -> {out}: {ckpt.variant}, {model.num_keypoints} keypoints "
        f"({model.keypoints.name}), {n / 1e6:.1f} M numbers"
    )
    return 0


def _keypoints(spec):
    if spec is None:
        return None
    from clamp_track.skeleton import get_keypoint_set

    return get_keypoint_set(spec)


def run_list(args: argparse.Namespace) -> int:
    """Print the registry and the cached pose weights."""
    from clamp_track.weights import REGISTRY, cache_dir, cached_pose_weights

    print(f"{'name':36} {'kind':9} description")
    for entry in REGISTRY.values():
        print(f"{entry.name:36} {entry.kind:9} {entry.description}")
    cached = cached_pose_weights()
    print(f"\ncache: {cache_dir()}")
    if not cached:
        print("no pose weights cached yet: `clamp-track weights fetch clamp-official`")
    for name, path in cached.items():
        print(f"  {name:34} {path}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    """Download and convert named weights."""
    from clamp_track.weights import fetch

    for path in fetch(args.name):
        print(path)
    return 0
