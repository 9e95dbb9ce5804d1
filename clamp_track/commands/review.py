"""``clamp-track review`` and ``clamp-track gui``: the desktop review GUI (PyQt6)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    """Register ``review`` and ``gui``."""
    p = sub.add_parser(
        "review", help="review and correct tracked poses in the GUI",
        description="Open a video and its <video>.clamp.sqlite results in the review GUI: "
        "scrub, fix keypoints and identities (saved at once, with undo), work through the "
        "review queue, export. Needs the [gui] extra (PyQt6).",
    )
    p.add_argument("video", help="the video (or a .clamp.sqlite store)")
    p.add_argument("--store", help="the results file (default: <video>.clamp.sqlite)")
    p.add_argument("--frame", type=int, help="frame to show first")
    p.add_argument("--screenshot", metavar="OUT.png",
                   help="render the window at --frame to a PNG (offscreen) and exit")
    p.set_defaults(func=main)
    g = sub.add_parser("gui", help="start the review GUI (then File -> Open)",
                       description="Start the review GUI with nothing open.")
    g.set_defaults(func=main_gui)


def main(args: argparse.Namespace) -> int:
    """Open the GUI on a video / store (or render a screenshot)."""
    from clamp_track.errors import require

    require("PyQt6.QtWidgets", "gui", "the review GUI")
    from clamp_track.gui.app import launch

    status = launch(args.video, args.store, args.frame, args.screenshot)
    if args.screenshot:
        print(args.screenshot)
    return status


def main_gui(args: argparse.Namespace) -> int:
    """Open the GUI empty."""
    from clamp_track.errors import require

    require("PyQt6.QtWidgets", "gui", "the review GUI")
    from clamp_track.gui.app import launch

    return launch()
