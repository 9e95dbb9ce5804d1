"""The ``clamp-track`` command line: one sub-command module each under ``commands/``.

Sub-command modules define ``add_parser(subparsers)``, which registers the arguments and sets
``func``; heavy imports (torch, decord, Qt) happen inside ``func`` so that ``--help`` is fast.
User errors (:class:`~clamp_track.errors.ClampTrackError`) print one line, no traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from clamp_track import __version__
from clamp_track.errors import ClampTrackError

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = ("run", "batch", "review", "export", "behaviour", "finetune", "labels", "train",
            "eval", "weights", "doctor")
#: The ones that run a model in this process, for :func:`clamp_track.runtime.tune_allocator`.
COMPUTE_COMMANDS = ("run", "batch", "finetune", "train", "eval")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="clamp-track",
        description="Tracked, smoothed animal poses from wildlife footage (CLAMP pose model).",
    )
    parser.add_argument("--version", action="version", version=f"clamp-track {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"clamp_track.commands.{name}").add_parser(sub)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``clamp-track`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if args.command in COMPUTE_COMMANDS:
        from clamp_track.runtime import tune_allocator

        tune_allocator()
    try:
        return int(args.func(args) or 0)
    except ClampTrackError as exc:
        print(f"clamp-track: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise
        print(f"clamp-track: error: {exc.filename or 'output'}: the disk is full; free some "
              "space and run the command again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = {"run": "; what was processed is kept: run the same command with --resume to "
                       "continue", "batch": "; run the batch again to continue"}
        print(f"clamp-track: interrupted{hint.get(args.command, '')}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
