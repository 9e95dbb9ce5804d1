"""The timeline: where each track is, where confidence is low, what was corrected or flagged.

One row per track (its colour where present, a red strip under it where the instance's mean
confidence is low), a row of review-queue flags (orange) and a row of corrected frames (cyan),
and the current frame as a white line. The rows are rendered into an image once per data change
(vectorised per pixel column, so a 10^5-frame video costs the same as a short one); a repaint
only blits it and draws the cursor. Clicking or dragging seeks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PyQt6.QtCore import QRect, QSize, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QImage, QPainter, QPen
from PyQt6.QtWidgets import QSizePolicy, QToolTip, QWidget

from clamp_track.gui.style import CORRECTED_COLOR, FLAGGED_COLOR, LOW_CONFIDENCE_COLOR

MARGIN = 6
GUTTER = 44  # room for the row labels on the left
MARK_ROW = 8  # height of the flagged and corrected rows
MAX_ROWS_HEIGHT = 96


@dataclass(frozen=True)
class TimelineRow:
    """One track on the timeline.

    Attributes:
        track: Track id.
        color: Its colour.
        frames: (T,) frames where it is present.
        low: (T,) bool, its instance there has low confidence.
    """

    track: int
    color: QColor
    frames: np.ndarray
    low: np.ndarray


def column_coverage(frames: np.ndarray, n_frames: int, width: int) -> np.ndarray:
    """(width,) fraction of each pixel column's frames that are in ``frames``.

    Column ``c`` covers frames ``[c * n / width, (c + 1) * n / width)`` (at least one frame, so
    short videos stretch over the width).
    """
    if width <= 0 or n_frames <= 0:
        return np.zeros(max(width, 0))
    mask = np.zeros(n_frames, np.int64)
    frames = np.asarray(frames, np.int64)
    mask[frames[(frames >= 0) & (frames < n_frames)]] = 1
    cumulative = np.concatenate([[0], np.cumsum(mask)])
    columns = np.arange(width)
    starts = np.minimum(columns * n_frames // width, n_frames - 1)
    ends = np.maximum((columns + 1) * n_frames // width, starts + 1)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def _rgba(color: QColor) -> tuple[int, int, int, int]:
    return color.red(), color.green(), color.blue(), 255


def rows_height(n_rows: int) -> int:
    """Pixel height of one track row when there are ``n_rows``.

    Rows past ``MAX_ROWS_HEIGHT`` pixels are not drawn (a badly fragmented video can have
    hundreds of tracks; the track list still shows them all).
    """
    return 10 if n_rows == 0 else int(np.clip(MAX_ROWS_HEIGHT // n_rows, 1, 12))


class Timeline(QWidget):
    """Tracks over time, with seeking.

    Signals:
        seekRequested(int): The user clicked or dragged to this frame.
    """

    seekRequested = pyqtSignal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.n_frames = 0
        self.frame = 0
        self.rows: list[TimelineRow] = []
        self.corrected = np.zeros(0, np.int64)
        self.flagged = np.zeros(0, np.int64)
        self._image: QImage | None = None
        self.setFixedHeight(self._height_for(0))

    # ------------------------------------------------------------------ data
    def set_data(self, n_frames: int, rows: list[TimelineRow], corrected: np.ndarray,
                 flagged: np.ndarray) -> None:
        """New content; re-rendered once."""
        self.n_frames, self.rows = int(n_frames), rows
        self.corrected, self.flagged = corrected, flagged
        self.setFixedHeight(self._height_for(len(rows)))
        self._image = None
        self.update()

    def set_frame(self, frame: int) -> None:
        """Move the cursor."""
        if frame != self.frame:
            self.frame = frame
            self.update()

    @staticmethod
    def _height_for(n_rows: int) -> int:
        rows = min(rows_height(n_rows) * max(n_rows, 1), MAX_ROWS_HEIGHT)
        return 2 * MARGIN + 2 * (MARK_ROW + 2) + rows

    def sizeHint(self) -> QSize:
        """Wide and as tall as its rows."""
        return QSize(600, self._height_for(len(self.rows)))

    # ------------------------------------------------------------------ geometry
    def _track_rect(self) -> QRect:
        return QRect(MARGIN + GUTTER, MARGIN, max(self.width() - 2 * MARGIN - GUTTER, 1),
                     max(self.height() - 2 * MARGIN, 1))

    def frame_at(self, x: float) -> int:
        """The frame under pixel column ``x``."""
        rect = self._track_rect()
        if self.n_frames <= 0:
            return 0
        t = (x - rect.left()) / max(rect.width(), 1)
        return int(np.clip(np.floor(t * self.n_frames), 0, self.n_frames - 1))

    def x_of(self, frame: int) -> float:
        """The pixel column of ``frame``'s centre."""
        rect = self._track_rect()
        return rect.left() + (frame + 0.5) / max(self.n_frames, 1) * rect.width()

    # ------------------------------------------------------------------ painting
    def _render(self) -> QImage:
        rect = self._track_rect()
        w, h = rect.width(), rect.height()
        rgba = np.empty((h, w, 4), np.uint8)
        rgba[...] = (38, 40, 44, 255)
        y = 0
        for frames, color in ((self.flagged, FLAGGED_COLOR), (self.corrected, CORRECTED_COLOR)):
            cover = column_coverage(frames, self.n_frames, w) > 0
            rgba[y:y + MARK_ROW, cover] = _rgba(QColor(color))
            y += MARK_ROW + 2
        band = max(rows_height(len(self.rows)) - 1, 1)
        top = band - max(band // 3, 1) if band >= 3 else band
        for row in self.rows:
            if y >= h:
                break
            present = column_coverage(row.frames, self.n_frames, w) > 0
            low = column_coverage(row.frames[row.low], self.n_frames, w) > 0
            rgba[y:y + top, present] = _rgba(row.color)
            rgba[y + top:y + band, present & ~low] = _rgba(row.color.darker(140))
            rgba[y + top:y + band, low] = _rgba(QColor(LOW_CONFIDENCE_COLOR))
            y += band + 1
        return QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()

    def paintEvent(self, event) -> None:
        """Blit the rendered rows and draw the current-frame cursor."""
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().window())
        rect = self._track_rect()
        if self._image is None or self._image.size() != rect.size():
            self._image = self._render()
        painter.drawImage(rect.topLeft(), self._image)
        self._paint_labels(painter)
        if self.n_frames:
            x = int(round(self.x_of(self.frame)))
            painter.setPen(QPen(QColor("#ffffff"), 2))
            painter.drawLine(x, 1, x, self.height() - 2)
        painter.end()

    def _paint_labels(self, painter: QPainter) -> None:
        font = painter.font()
        font.setPointSizeF(7.5)
        painter.setFont(font)
        labels = [("queue", QColor(FLAGGED_COLOR), MARK_ROW + 2),
                  ("fixed", QColor(CORRECTED_COLOR), MARK_ROW + 2)]
        row_h = rows_height(len(self.rows))
        if row_h >= 8:
            labels += [(f"#{row.track}", row.color, row_h) for row in self.rows]
        y = MARGIN
        for text, color, height in labels:
            painter.setPen(color)
            painter.drawText(QRect(2, y - 2, GUTTER + MARGIN - 6, height + 4),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, text)
            y += height

    def resizeEvent(self, event) -> None:
        """Re-render at the new width."""
        self._image = None
        super().resizeEvent(event)

    # ------------------------------------------------------------------ mouse
    def mousePressEvent(self, event) -> None:
        """Seek."""
        if event.button() == Qt.MouseButton.LeftButton and self.n_frames:
            self.seekRequested.emit(self.frame_at(event.position().x()))

    def mouseMoveEvent(self, event) -> None:
        """Seek while dragging; show the frame and track under the pointer."""
        if not self.n_frames:
            return
        frame = self.frame_at(event.position().x())
        if event.buttons() & Qt.MouseButton.LeftButton:
            self.seekRequested.emit(frame)
        QToolTip.showText(event.globalPosition().toPoint(),
                          self._tooltip(frame, event.position().y()), self)

    def _tooltip(self, frame: int, y: float) -> str:
        top = MARGIN + 2 * (MARK_ROW + 2)
        if y < top:
            kind = "review queue" if y < MARGIN + MARK_ROW + 2 else "corrections"
            return f"frame {frame} ({kind})"
        i = int((y - top) // rows_height(len(self.rows)))
        if 0 <= i < len(self.rows):
            return f"frame {frame}: animal {self.rows[i].track}"
        return f"frame {frame}"
