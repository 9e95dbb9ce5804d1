"""User-facing errors.

Anything a user can cause (a missing file, a checkpoint that does not fit, a missing optional
dependency) raises a :class:`ClampTrackError` whose message is one line naming the file and the
fix. The CLI prints it without a traceback; library users can catch it.
"""

from __future__ import annotations


class ClampTrackError(Exception):
    """An error caused by input or environment, with a one-line message for the user."""


class CheckpointError(ClampTrackError):
    """A weights file is missing, corrupt, or does not fit the requested model."""


class InputError(ClampTrackError):
    """An input file (video, annotation, config) is missing or malformed."""


class MissingDependencyError(ClampTrackError):
    """An optional dependency is not installed."""


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency or fail with an install hint.

    Args:
        module: Module name to import, e.g. ``"PyQt6.QtWidgets"``.
        extra: The clamp-track extra that provides it, e.g. ``"gui"``.
        purpose: What needs it, e.g. ``"the review GUI"``.

    Returns:
        The imported module.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs {module.split('.')[0]} ({exc}); "
            f"install it with: pip install 'clamp-track[{extra}]'"
        ) from exc
