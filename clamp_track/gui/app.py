"""Starting the review GUI: the QApplication, OpenCV's Qt redirection, and offscreen renders.

``opencv-python`` (pulled in by the tracker) sets ``QT_QPA_PLATFORM_PLUGIN_PATH`` and
``QT_QPA_FONTDIR`` to its own bundled Qt 5 plugins and fonts when imported. Qt 6 then tries to
load OpenCV's ``xcb`` plugin, fails ("Could not load the Qt platform plugin xcb ... even though
it was found") and aborts. :func:`prefer_pyqt_plugins` removes exactly those two settings when
they point into ``cv2``, before the application is created.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import traceback
from pathlib import Path

from clamp_track.errors import ClampTrackError, InputError

log = logging.getLogger(__name__)

_CV2_VARIABLES = ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR")


def prefer_pyqt_plugins() -> list[str]:
    """Undo opencv-python's redirection of Qt to its bundled plugins; returns what was removed."""
    removed = []
    for key in _CV2_VARIABLES:
        value = os.environ.get(key, "")
        if f"{os.sep}cv2{os.sep}" in os.path.normpath(value) + os.sep:
            del os.environ[key]
            removed.append(key)
    return removed


def _has_display() -> bool:
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or os.environ.get("QT_QPA_PLATFORM"))


def application(offscreen: bool = False):
    """The QApplication (created once), styled.

    Args:
        offscreen: Render without a display (for ``--screenshot``), unless a platform is set.

    Raises:
        InputError: There is no display to show a window on.
    """
    from clamp_track.errors import require

    widgets = require("PyQt6.QtWidgets", "gui", "the review GUI")
    from clamp_track.gui.style import apply_dark_theme

    prefer_pyqt_plugins()
    app = widgets.QApplication.instance()
    if app is None:
        if offscreen:
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        elif not _has_display():
            raise InputError("no display found (DISPLAY and WAYLAND_DISPLAY are unset); run "
                             "the GUI on a desktop, or render one frame with --screenshot")
        _route_qt_messages()
        app = widgets.QApplication([sys.argv[0] if sys.argv else "clamp-track"])
        app.setApplicationName("clamp-track")
        apply_dark_theme(app)
    return app


# Harmless platform notices of the offscreen backend, printed on every window
_QUIET = ("does not support propagateSizeHints", "QFont::setPointSizeF")


def _route_qt_messages() -> None:
    """Send Qt's own messages to logging (debug level for known harmless ones)."""
    from PyQt6.QtCore import QtMsgType, qInstallMessageHandler

    def handler(kind, context, message) -> None:
        quiet = kind == QtMsgType.QtDebugMsg or any(q in message for q in _QUIET)
        log.log(logging.DEBUG if quiet else logging.WARNING, "Qt: %s", message)

    qInstallMessageHandler(handler)
    # Qt still logs while the interpreter shuts down; Python code must not run then
    atexit.register(qInstallMessageHandler, None)


def _excepthook(kind, value, tb) -> None:
    """Unexpected errors in a slot: log the traceback, show one line, keep running."""
    log.error("unexpected error:\n%s", "".join(traceback.format_exception(kind, value, tb)))
    from PyQt6.QtWidgets import QApplication, QMessageBox

    if QApplication.instance() is not None:
        QMessageBox.critical(None, "Unexpected error", f"{kind.__name__}: {value}")


def launch(video: str | Path | None = None, store: str | Path | None = None,
           frame: int | None = None, screenshot: str | Path | None = None) -> int:
    """Open the review window; with ``screenshot``, render it offscreen to a PNG and return.

    Args:
        video: A video (its ``<video>.clamp.sqlite`` is opened if present) or a store.
        store: A result store (its video is found from the store if not given).
        frame: Frame to show first.
        screenshot: Write the window at ``frame`` to this PNG and exit.

    Returns:
        The exit status.

    Raises:
        ClampTrackError: In screenshot mode, a file that cannot be opened or written.
    """
    app = application(offscreen=screenshot is not None)
    from clamp_track.gui.main_window import MainWindow

    window = MainWindow(interactive=screenshot is None)
    window.resize(1440, 900)
    window.show()
    if video or store:
        window.open_paths(video, store)
    if frame is not None:
        window.state.set_frame(frame)
    if screenshot is not None:
        return _screenshot(window, screenshot)
    previous, sys.excepthook = sys.excepthook, _excepthook
    try:
        return app.exec()
    finally:
        sys.excepthook = previous


def _screenshot(window, path: str | Path) -> int:
    try:
        if window.errors:
            raise InputError(window.errors[0])
        if not window.wait_for_frame():
            log.warning("frame %d was not decoded in time; the screenshot shows no image",
                        window.state.frame)
        if window.state.data is not None and window.state.selection.track is None:
            tracks = window.state.data.tracks_at(window.state.frame)
            if tracks:  # show one animal's keypoint list
                window.state.select(tracks[:1])
        window.wait_for_frame()
        window.save_screenshot(path)
        if window.errors:  # e.g. the video turned out to be unreadable
            raise ClampTrackError(window.errors[0])
        return 0
    finally:
        window.close()
