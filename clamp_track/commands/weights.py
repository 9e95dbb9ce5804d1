"""``clamp-track weights``: convert official CLAMP checkpoints to clamp-track's format."""

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
    convert.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    """Convert, load strictly, and write the checkpoint."""
    from pathlib import Path

    from clamp_track.errors import CheckpointError
    from clamp_track.models import create_model, load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(args.checkpoint, keypoints=_keypoints(args.keypoints))
    if ckpt.source != "official":
        raise CheckpointError(f"{args.checkpoint}: already a clamp-track checkpoint")
    model = create_model(args.model, weights=args.checkpoint, keypoints=ckpt.keypoints)
    out = save_checkpoint(
        model, Path(args.output), source="official",
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
