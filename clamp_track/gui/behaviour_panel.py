"""The behaviour strip under the timeline: the selected animal's speed and activity state.

It shows the measures of :mod:`clamp_track.pipelines.behaviour` (computed with movement) for
the current animal: a strip aligned with the timeline above it (state bands, the speed curve,
the current frame) and a line with the values at the current frame. The measures come from
``<video>.behaviour.csv`` beside the store when ``clamp-track behaviour`` wrote one, or from
**Compute**, which measures the store in a background task and writes the same files. After an
edit they are marked out of date until recomputed. The scale is pixels, or metres from the
``px/m`` box or from two points of known distance (right-click the frame: *Scale: first point
here*, then *second point here*, then type the distance).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QPointF, QRect, QSize, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QImage, QPainter, QPen, QPolygonF
from PyQt6.QtWidgets import (
    QDoubleSpinBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from clamp_track.gui.timeline import GUTTER, MARGIN, column_coverage
from clamp_track.pipelines.behaviour import STATE_COLORS, STATES

STRIP_HEIGHT = 46


class SpeedStrip(QWidget):
    """Speed over the whole video with the activity states as bands; clicking seeks.

    Its horizontal mapping is the timeline's (same margins), so frames line up with it.

    Signals:
        seekRequested(int): The user clicked or dragged to this frame.
    """

    seekRequested = pyqtSignal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(STRIP_HEIGHT)
        self.n_frames = 0
        self.frame = 0
        self.frames = np.zeros(0, np.int64)
        self.speed = np.zeros(0)
        self.states = np.zeros(0, np.int8)  # 0 unknown, 1..3 = STATES
        self.color = QColor("#ffffff")
        self._image: QImage | None = None

    def set_data(self, n_frames: int, frames, speed, states, color: QColor) -> None:
        """One animal's per-frame speed and state codes; re-rendered once."""
        self.n_frames = int(n_frames)
        self.frames = np.asarray(frames, np.int64)
        self.speed, self.states = np.asarray(speed, float), np.asarray(states, np.int8)
        self.color = color
        self._image = None
        self.update()

    def set_frame(self, frame: int) -> None:
        """Move the cursor."""
        if frame != self.frame:
            self.frame = frame
            self.update()

    def sizeHint(self) -> QSize:
        """Wide and one strip tall."""
        return QSize(600, STRIP_HEIGHT)

    def _rect(self) -> QRect:
        return QRect(MARGIN + GUTTER, 2, max(self.width() - 2 * MARGIN - GUTTER, 1),
                     max(self.height() - 4, 1))

    def _render(self) -> QImage:
        rect = self._rect()
        w, h = rect.width(), rect.height()
        rgba = np.empty((h, w, 4), np.uint8)
        rgba[...] = (38, 40, 44, 255)
        for code, name in enumerate(STATES, start=1):  # the timeline's columns; fastest wins
            cover = column_coverage(self.frames[self.states == code], self.n_frames, w) > 0
            c = QColor(STATE_COLORS[name]).darker(170)
            rgba[:, cover] = (c.red(), c.green(), c.blue(), 255)
        return QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()

    def _curve(self, rect: QRect) -> list[QPolygonF]:
        """The speed as polylines (one per run of known values), top = the maximum."""
        top = np.nanmax(self.speed) if np.isfinite(self.speed).any() else 0.0
        if not top > 0:
            top = 1.0
        n = max(self.n_frames, 1)
        x = rect.left() + (self.frames + 0.5) / n * rect.width()
        y = rect.bottom() - 2 - self.speed / top * (rect.height() - 6)
        known = np.isfinite(y)
        polylines, start = [], None
        for i in range(len(x) + 1):
            ok = i < len(x) and known[i] and (start is None or self.frames[i] - self.frames[
                i - 1] == 1)
            if start is not None and not ok:
                polylines.append(QPolygonF([QPointF(a, b) for a, b in zip(x[start:i],
                                                                          y[start:i])]))
                start = None
            if i < len(x) and known[i] and start is None:
                start = i
        return polylines

    def paintEvent(self, event) -> None:
        """Bands, speed curve, label and cursor."""
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().window())
        rect = self._rect()
        if self._image is None or self._image.size() != rect.size():
            self._image = self._render()
        painter.drawImage(rect.topLeft(), self._image)
        painter.setPen(QPen(self.color, 1.5))
        for line in self._curve(rect):
            painter.drawPolyline(line)
        font = painter.font()
        font.setPointSizeF(7.5)
        painter.setFont(font)
        painter.setPen(QColor("#e6e6e6"))
        painter.drawText(QRect(2, 0, GUTTER + MARGIN - 6, self.height()),
                         Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, "speed")
        if self.n_frames:
            x = int(round(rect.left() + (self.frame + 0.5) / self.n_frames * rect.width()))
            painter.setPen(QPen(QColor("#ffffff"), 2))
            painter.drawLine(x, 1, x, self.height() - 2)
        painter.end()

    def resizeEvent(self, event) -> None:
        """Re-render at the new width."""
        self._image = None
        super().resizeEvent(event)

    def mousePressEvent(self, event) -> None:
        """Seek."""
        self._seek(event)

    def mouseMoveEvent(self, event) -> None:
        """Seek while dragging."""
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._seek(event)

    def _seek(self, event) -> None:
        rect = self._rect()
        if self.n_frames and event.buttons() & Qt.MouseButton.LeftButton:
            t = (event.position().x() - rect.left()) / max(rect.width(), 1)
            self.seekRequested.emit(int(np.clip(np.floor(t * self.n_frames), 0,
                                                self.n_frames - 1)))


class BehaviourPanel(QWidget):
    """The selected animal's speed and state, in sync with the current frame.

    Args:
        state: The window's :class:`~clamp_track.gui.state.ReviewState`.
        start_task: The window's ``_start_task(worker, title, on_success)`` (tracks the task,
            reports its errors, shows its progress).
        color_of: Track id -> colour (the window's track colours).
    """

    def __init__(self, state, start_task: Callable, color_of: Callable[[int], QColor],
                 parent=None):
        super().__init__(parent)
        self.state = state
        self._start_task = start_task
        self._color_of = color_of
        self.table = None  # per-frame measures (pandas), or None
        self.unit = "px"
        self.source = ""  # where the measures came from, for the label
        self.stale = False
        self._by_track: dict[int, dict[int, int]] = {}  # track -> frame -> row
        self._scale_point: tuple[float, float] | None = None
        self.worker = None
        self.label = QLabel()
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setWordWrap(True)  # a long line wraps instead of widening the window
        self.scale_box = QDoubleSpinBox()
        self.scale_box.setRange(0.0, 1e7)
        self.scale_box.setDecimals(2)
        self.scale_box.setSpecialValueText("pixels")
        self.scale_box.setSuffix(" px/m")
        self.scale_box.setToolTip("Pixels per metre (0 = lengths in pixels); or right-click "
                                  "two points of known distance on the frame")
        self.compute_button = QPushButton("Compute behaviour")
        self.compute_button.setToolTip("Measure speed, heading, distance, joint angles and "
                                       "activity states with movement on the corrected, smoothed "
                                       "coordinates (writes "
                                       "<video>.behaviour.csv and plots beside the results)")
        self.compute_button.clicked.connect(self.compute)
        self.strip = SpeedStrip()
        self.strip.seekRequested.connect(self.state.set_frame)
        row = QHBoxLayout()
        row.setContentsMargins(MARGIN, 0, MARGIN, 0)
        row.addWidget(self.label, 1)
        row.addWidget(self.scale_box)
        row.addWidget(self.compute_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.strip)
        layout.addLayout(row)
        state.sessionChanged.connect(self._session_changed)
        state.frameChanged.connect(self._frame_changed)
        state.selectionChanged.connect(self._refresh)
        state.dataChanged.connect(self._data_changed)
        self._session_changed()

    # ------------------------------------------------------------------ data
    def _session_changed(self) -> None:
        self.table, self.stale, self.source = None, False, ""
        self._scale_point = None
        store = self.state.store
        self.compute_button.setEnabled(store is not None and store.complete)
        if store is not None:
            self._load_csv(store)
        self._refresh()

    def _csv_path(self, store) -> Path:
        from clamp_track.pipelines.behaviour import output_paths

        return output_paths(Path(store.video_info.path).stem, store.path.parent)["frames"]

    def _load_csv(self, store) -> None:
        """Show the measures ``clamp-track behaviour`` wrote beside the store, if any."""
        import pandas as pd

        path = self._csv_path(store)
        if not path.is_file():
            return
        try:
            table = pd.read_csv(path, keep_default_na=True)
        except (OSError, ValueError, pd.errors.ParserError):
            return
        if not {"frame", "track", "speed", "state"} <= set(table.columns):
            return
        self.stale = _newest_mtime(store.path) > path.stat().st_mtime
        self._set_table(table, f"{path.name}")

    def _set_table(self, table, source: str) -> None:
        self.table, self.source = table, source
        self.unit = str(table["length_unit"].iloc[0]) if "length_unit" in table and len(
            table) else "px"
        self._by_track = {int(t): {int(f): i for f, i in zip(rows["frame"], rows.index)}
                          for t, rows in table.groupby("track")}
        self._refresh()

    def _data_changed(self, tracks) -> None:
        if self.table is not None and tracks is not None:
            self.stale = True
            self._update_label()

    def px_per_m(self) -> float | None:
        """The scale the user set, or None for pixels."""
        value = self.scale_box.value()
        return value if value > 0 else None

    def compute(self):
        """Measure the store in a background task; show and write the result."""
        from clamp_track.gui.workers import TaskWorker
        from clamp_track.pipelines.behaviour import BehaviourConfig

        store = self.state.store
        if store is None or not store.complete or self.worker is not None:
            return None
        config = BehaviourConfig(px_per_m=self.px_per_m())
        path, video = store.path, store.video_info

        def task(reporter):
            from clamp_track.pipelines.behaviour import compute_behaviour, write_behaviour

            reporter.report(0, 0, "measuring with movement…")
            result = compute_behaviour(path, config)
            reporter.report(0, 0, "writing the CSVs and plots…")
            write_behaviour(result, Path(video.path).stem, path.parent,
                            video_size=(video.width, video.height))
            return result.frames

        self.worker = TaskWorker(task)
        self.worker.finished.connect(self._task_finished)
        self.compute_button.setEnabled(False)
        self._start_task(self.worker, "Behaviour", self._computed)
        return self.worker

    def _computed(self, table) -> None:
        self.stale = False
        self._set_table(table, "computed now")

    def _task_finished(self) -> None:
        self.worker = None
        store = self.state.store
        self.compute_button.setEnabled(store is not None and store.complete)

    # ------------------------------------------------------------------ scale
    def add_scale_actions(self, menu, x: float, y: float) -> None:
        """Entries of the frame's right-click menu that set the scale from two points."""
        if self._scale_point is None:
            menu.addAction("Scale: first point here").triggered.connect(
                lambda: setattr(self, "_scale_point", (x, y)))
            return
        x0, y0 = self._scale_point
        pixels = float(np.hypot(x - x0, y - y0))
        menu.addAction(f"Scale: second point here ({pixels:.1f} px from the first)…"
                       ).triggered.connect(lambda: self.set_scale_from_points(pixels))

    def set_scale_from_points(self, pixels: float, metres: float | None = None) -> None:
        """Ask the distance in metres between the two points; set px/m from it."""
        self._scale_point = None
        if metres is None:
            metres, ok = QInputDialog.getDouble(
                self, "Scale", f"Distance between the two points ({pixels:.1f} px), in metres:",
                1.0, 1e-6, 1e6, 4)
            if not ok:
                return
        if pixels > 0 and metres > 0:
            self.scale_box.setValue(pixels / metres)
            self.stale = self.table is not None
            self._update_label()

    # ------------------------------------------------------------------ view
    def _track(self) -> int | None:
        s = self.state
        if s.selection.track is not None:
            return s.selection.track
        if self.table is not None and len(self._by_track):
            present = [t for t in sorted(self._by_track) if s.frame in self._by_track[t]]
            return present[0] if present else min(self._by_track)
        return None

    def _refresh(self) -> None:
        track = self._track()
        n = self.state.n_frames
        if self.table is None or track not in self._by_track:
            self.strip.set_data(n, [], [], [], QColor("#ffffff"))
        else:
            rows = self.table.loc[list(self._by_track[track].values())]
            codes = np.array([STATES.index(s) + 1 if s in STATES else 0
                              for s in rows["state"].fillna("")], np.int8)
            self.strip.set_data(n, rows["frame"].to_numpy(), rows["speed"].to_numpy(float),
                                codes, self._color_of(track))
        self.strip.set_frame(self.state.frame)
        self._update_label()

    def _frame_changed(self, frame: int) -> None:
        self.strip.set_frame(frame)
        if self.state.selection.track is None:
            self._refresh()  # the animal shown may change with the frame
        else:
            self._update_label()

    def current(self) -> dict | None:
        """The measures of the shown animal at the current frame (a table row), or None."""
        track = self._track()
        if self.table is None or track not in self._by_track:
            return None
        row = self._by_track[track].get(self.state.frame)
        return None if row is None else self.table.loc[row].to_dict()

    def _update_label(self) -> None:
        self.label.setText(self.text())

    def text(self) -> str:
        """The line under the strip."""
        if self.state.store is None:
            return ""
        if self.table is None:
            return ("Behaviour: not measured yet. Compute behaviour (movement) for speed, "
                    "heading, distance and activity states.")
        track = self._track()
        row = self.current()
        note = f" — out of date, recompute ({self.source})" if self.stale else \
            f" ({self.source})"
        if row is None:
            return f"animal {track}: not in this frame{note}"
        unit = self.unit
        if not np.isfinite(row["speed"]):
            return f"animal {track}: no speed here (low confidence or a gap){note}"
        parts = [f"animal {track}", f"{row['speed']:.3g} {unit}/s",
                 row["state"] if isinstance(row["state"], str) and row["state"] else "",
                 f"heading {row['heading_deg']:.0f}°" if np.isfinite(row.get(
                     "heading_deg", np.nan)) else "",
                 f"{row['distance']:.4g} {unit} travelled" if np.isfinite(row.get(
                     "distance", np.nan)) else ""]
        return " · ".join(p for p in parts if p) + note


def _newest_mtime(store: Path) -> float:
    """When a store last changed (its file, or its write-ahead log until that is merged).

    An empty log is not a change: SQLite creates it when a connection opens the store.
    """
    times = [p.stat().st_mtime for p in (store, Path(f"{store}-wal"))
             if p.is_file() and (p == store or p.stat().st_size > 0)]
    return max(times, default=0.0)
