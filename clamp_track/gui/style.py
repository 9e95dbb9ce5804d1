"""Colours and the application look, shared by every view.

Keypoints are coloured by confidence class with the same four colours and bin edges as the
annotated-video export (red < 0.25 <= orange < 0.5 <= yellow < 0.75 <= green), so what a user
sees while reviewing matches the video they export. Corrected keypoints are cyan (the user's
own labels), tracks take colours from a fixed palette by id.
"""

from __future__ import annotations

import numpy as np
from PyQt6.QtGui import QColor, QPalette
from PyQt6.QtWidgets import QApplication, QStyleFactory

#: Upper edges of the confidence classes (as ``clamp_track.io.export.VideoStyle``).
CONFIDENCE_BINS = (0.25, 0.5, 0.75)
CONFIDENCE_COLORS = ("#e6194b", "#f58231", "#ffe119", "#3cb44b")
CORRECTED_COLOR = "#00d7ff"
HIDDEN_COLOR = "#a0a0a0"
LOW_CONFIDENCE_COLOR = "#e6194b"
FLAGGED_COLOR = "#ff9f1c"

# Distinct, readable on dark backgrounds (a Glasbey-like selection).
TRACK_PALETTE = (
    "#4e9bff", "#ff6b9a", "#4cd07d", "#c77dff", "#ffb347", "#3fd2c7", "#f25f5c", "#a0c15a",
    "#ff8fd8", "#7a8cff", "#e8c547", "#5ed0ff",
)


def track_color(track: int) -> QColor:
    """The colour of a track id (stable across views and sessions)."""
    return QColor(TRACK_PALETTE[(int(track) - 1) % len(TRACK_PALETTE)])


def confidence_color(confidence: float) -> QColor:
    """Keypoint fill colour for a model confidence (grey when unknown)."""
    if not np.isfinite(confidence):
        return QColor(HIDDEN_COLOR)
    return QColor(CONFIDENCE_COLORS[int(np.digitize(confidence, CONFIDENCE_BINS))])


def apply_dark_theme(app: QApplication) -> None:
    """Fusion style with a dark palette: video and coloured overlays stand out on it."""
    app.setStyle(QStyleFactory.create("Fusion"))
    p = QPalette()
    roles = {
        QPalette.ColorRole.Window: "#2b2d31", QPalette.ColorRole.WindowText: "#e6e6e6",
        QPalette.ColorRole.Base: "#1f2023", QPalette.ColorRole.AlternateBase: "#26282c",
        QPalette.ColorRole.ToolTipBase: "#2b2d31", QPalette.ColorRole.ToolTipText: "#e6e6e6",
        QPalette.ColorRole.Text: "#e6e6e6", QPalette.ColorRole.Button: "#34373c",
        QPalette.ColorRole.ButtonText: "#e6e6e6", QPalette.ColorRole.BrightText: "#ff5555",
        QPalette.ColorRole.Highlight: "#3d7bd9", QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: "#6aa7ff", QPalette.ColorRole.PlaceholderText: "#8a8d93",
    }
    for role, color in roles.items():
        p.setColor(role, QColor(color))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText,
                 QPalette.ColorRole.WindowText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor("#7a7d83"))
    app.setPalette(p)
