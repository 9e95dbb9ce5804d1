"""The frame view: the video frame with boxes, track ids, skeletons and draggable keypoints.

Scene coordinates are frame pixels, so a keypoint at ``(x, y)`` in the store sits at scene
``(x, y)``. Markers and labels ignore the view's zoom (they stay a few screen pixels large);
lines use cosmetic pens for the same reason. The mouse wheel zooms around the pointer, dragging
the background pans, dragging a keypoint moves it (one undoable edit on release), a right
click opens the animal's context menu.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PyQt6.QtCore import QPointF, QRectF, Qt, pyqtSignal
from PyQt6.QtGui import QBrush, QColor, QFont, QImage, QPainter, QPen, QPixmap
from PyQt6.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsLineItem,
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
)

from clamp_track.gui.style import CORRECTED_COLOR, HIDDEN_COLOR, confidence_color, track_color
from clamp_track.pipelines.review import Instance
from clamp_track.skeleton import KeypointSet

MARKER_RADIUS = 5.0  # screen pixels
SELECTED_RADIUS = 7.5


@dataclass(frozen=True)
class Overlays:
    """Which overlays are drawn."""

    boxes: bool = True
    labels: bool = True
    skeleton: bool = True
    keypoints: bool = True


def _pen(color: QColor, width: float, style=Qt.PenStyle.SolidLine) -> QPen:
    pen = QPen(color, width, style)
    pen.setCosmetic(True)  # width in screen pixels whatever the zoom
    return pen


class KeypointItem(QGraphicsEllipseItem):
    """One keypoint marker; dragging it reports the drop position to the view."""

    def __init__(self, view: FrameView, track: int, keypoint: int, pos: QPointF,
                 fill: QColor | None, selected: bool, tooltip: str):
        r = SELECTED_RADIUS if selected else MARKER_RADIUS
        super().__init__(-r, -r, 2 * r, 2 * r)
        self.view, self.track, self.keypoint = view, track, keypoint
        self.selected = selected
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        self.setPos(pos)
        self.setZValue(3 if selected else 2)
        self.setCursor(Qt.CursorShape.OpenHandCursor)
        self.setToolTip(tooltip)
        if fill is None:  # marked occluded: a hollow dashed ring at the predicted position
            self.setBrush(QBrush(Qt.BrushStyle.NoBrush))
            self.setPen(_pen(QColor(HIDDEN_COLOR), 1.5, Qt.PenStyle.DashLine))
        else:
            self.setBrush(QBrush(fill))
            self.setPen(_pen(QColor("#ffffff") if selected else QColor("#101010"),
                             2.5 if selected else 1.2))
        self.lines: list[tuple[QGraphicsLineItem, int]] = []  # (line, which end: 0 or 1)
        self._pressed_at: QPointF | None = None

    def mousePressEvent(self, event) -> None:
        """Start a drag (selection waits for the release: selecting redraws the overlays)."""
        if event.button() != Qt.MouseButton.LeftButton:
            event.ignore()
            return
        self._pressed_at = self.pos()
        self.setCursor(Qt.CursorShape.ClosedHandCursor)
        event.accept()

    def mouseMoveEvent(self, event) -> None:
        """Follow the pointer (inside the frame), dragging the skeleton lines along."""
        if self._pressed_at is None:
            return
        self.setPos(self.view.clamp_to_frame(event.scenePos()))
        for line, end in self.lines:
            seg = line.line()
            if end == 0:
                seg.setP1(self.pos())
            else:
                seg.setP2(self.pos())
            line.setLine(seg)

    def mouseReleaseEvent(self, event) -> None:
        """Report the move as one edit, or a click (no move) as a selection."""
        start, self._pressed_at = self._pressed_at, None
        self.setCursor(Qt.CursorShape.OpenHandCursor)
        if start is None:
            return
        if self.pos() != start:
            self.view.keypointMoved.emit(self.track, self.keypoint, self.pos().x(),
                                         self.pos().y())
        else:
            self.view.instanceClicked.emit(self.track, self.keypoint)


class FrameView(QGraphicsView):
    """Shows one frame and its instances.

    Signals:
        keypointMoved(int, int, float, float): track, keypoint, new x, new y (frame pixels).
        instanceClicked(int, int): track, keypoint (-1 for the box) the user clicked.
        menuRequested(int, int, QPoint): track, keypoint (-1: the box), global position.
        backgroundMenuRequested(float, float, QPoint): right click off any animal: frame
            pixels (inside the frame) and global position.
        placeRequested(float, float): a left click while placing a keypoint
            (:meth:`set_placing`): where, in frame pixels (inside the frame).
        stackedPressed(list, QPoint): a left click on several keypoints drawn on top of each
            other (none of them selected): ``[(track, keypoint), ...]`` top first, and the
            global position, for the user to pick one.
    """

    keypointMoved = pyqtSignal(int, int, float, float)
    instanceClicked = pyqtSignal(int, int)
    menuRequested = pyqtSignal(int, int, object)
    backgroundMenuRequested = pyqtSignal(float, float, object)
    placeRequested = pyqtSignal(float, float)
    stackedPressed = pyqtSignal(list, object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHints(QPainter.RenderHint.Antialiasing
                            | QPainter.RenderHint.SmoothPixmapTransform)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setBackgroundBrush(QColor("#18191b"))
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._pixmap = QGraphicsPixmapItem()
        self.names: dict[int, str] = {}  # track names ("female"), shown in the labels
        self._pixmap.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.scene().addItem(self._pixmap)
        self._placeholder = QGraphicsRectItem()
        self._placeholder.setBrush(QColor("#2a2c30"))
        self._placeholder.setPen(QPen(Qt.PenStyle.NoPen))
        self._placeholder.setZValue(-1)
        self.scene().addItem(self._placeholder)
        self._note = QGraphicsSimpleTextItem()
        self._note.setBrush(QColor("#9a9da3"))
        self._note.setFont(QFont(self.font().family(), 14))
        self._note.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        self._note.setZValue(5)
        self.scene().addItem(self._note)
        self._overlay: list[QGraphicsItem] = []
        self._frame_size = (0, 0)
        self._fitted = False
        self.keypoint_items: dict[tuple[int, int], KeypointItem] = {}
        self.placing: str | None = None  # what a left click places (see set_placing)

    # ------------------------------------------------------------------ frame
    def set_frame_size(self, width: int, height: int) -> None:
        """The frame's size in pixels (the scene's extent), before any image arrives."""
        if (width, height) != self._frame_size:
            self._frame_size = (int(width), int(height))
            rect = QRectF(0, 0, width, height)
            self._placeholder.setRect(rect)
            self.setSceneRect(rect.adjusted(-width, -height, width, height))
            self._fitted = False
            self.fit()

    def set_image(self, image: QImage | None, note: str = "") -> None:
        """Show a decoded frame (None keeps the placeholder) and an optional note on it."""
        if image is not None:
            self._pixmap.setPixmap(QPixmap.fromImage(image))
            self._pixmap.setVisible(True)
        self.set_note(note)

    def clear_image(self, note: str = "") -> None:
        """Hide the frame image (e.g. no video), showing the placeholder and a note."""
        self._pixmap.setVisible(False)
        self.set_note(note)

    def set_note(self, note: str) -> None:
        """Text drawn over the frame's top-left corner (e.g. "video not found")."""
        self._note.setText(note)
        self._note.setPos(8, 8)

    def clamp_to_frame(self, pos: QPointF) -> QPointF:
        """``pos`` moved inside the frame."""
        w, h = self._frame_size
        return QPointF(min(max(pos.x(), 0.0), max(w - 1e-3, 0.0)),
                       min(max(pos.y(), 0.0), max(h - 1e-3, 0.0)))

    def pointer_or_centre(self) -> tuple[float, float]:
        """Frame pixels under the mouse pointer if it is over the view, else at its centre."""
        from PyQt6.QtGui import QCursor

        pointer = self.viewport().mapFromGlobal(QCursor.pos())
        if not self.viewport().rect().contains(pointer):
            pointer = self.viewport().rect().center()
        pos = self.clamp_to_frame(self.mapToScene(pointer))
        return pos.x(), pos.y()

    def set_placing(self, what: str | None) -> None:
        """Make the next left click place a keypoint (None: back to selecting and panning).

        Args:
            what: Shown as the pointer's tooltip, e.g. ``"right shoulder of animal 3"``.
        """
        self.placing = what
        self.setDragMode(QGraphicsView.DragMode.NoDrag if what else
                         QGraphicsView.DragMode.ScrollHandDrag)
        if what:
            self.viewport().setCursor(Qt.CursorShape.CrossCursor)
        else:
            self.viewport().unsetCursor()
        self.viewport().setToolTip(f"Click where the {what} belongs (Esc: cancel)" if what
                                   else "")

    def visible_rect(self) -> QRectF:
        """The part of the scene (frame pixels) on screen."""
        return self.mapToScene(self.viewport().rect()).boundingRect()

    def ensure_visible(self, x: float, y: float, margin: float = 0.1) -> bool:
        """Pan (keeping the zoom) so that ``(x, y)`` is on screen; True if the view moved.

        ``margin``: the share of the view at each edge that counts as off screen.
        """
        rect = self.visible_rect()
        w, h = self._frame_size
        if rect.contains(QRectF(0, 0, w, h)):
            return False  # the whole frame is on screen
        inner = rect.adjusted(rect.width() * margin, rect.height() * margin,
                              -rect.width() * margin, -rect.height() * margin)
        if inner.contains(QPointF(x, y)):
            return False
        self.centerOn(QPointF(x, y))
        return True

    def fit_box(self, box, margin: float = 0.25) -> None:
        """Zoom to ``x1, y1, x2, y2`` (an animal) with ``margin`` of its size around it."""
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h = max(x2 - x1, 8.0), max(y2 - y1, 8.0)
        self.fitInView(QRectF(x1 - margin * w, y1 - margin * h, w * (1 + 2 * margin),
                              h * (1 + 2 * margin)), Qt.AspectRatioMode.KeepAspectRatio)
        self._fitted = False

    # ------------------------------------------------------------------ zoom
    def fit(self) -> None:
        """Show the whole frame."""
        w, h = self._frame_size
        if w and h:
            self.fitInView(QRectF(0, 0, w, h), Qt.AspectRatioMode.KeepAspectRatio)
            self._fitted = True

    def zoom(self, factor: float) -> None:
        """Zoom by ``factor`` around the view's centre (keyboard) or the pointer (wheel)."""
        scale = self.transform().m11() * factor
        if 0.05 <= scale <= 40:
            self.scale(factor, factor)
            self._fitted = False

    def wheelEvent(self, event) -> None:
        """Zoom around the pointer."""
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom(1.25 ** steps)
        event.accept()

    def resizeEvent(self, event) -> None:
        """Keep the frame fitted while the user has not zoomed."""
        super().resizeEvent(event)
        if self._fitted or not self.transform().isScaling():
            self.fit()

    # ------------------------------------------------------------------ overlays
    def show_instances(self, instances: list[Instance], keypoints: KeypointSet,
                       selected: tuple[int, ...], selected_keypoint: int | None,
                       overlays: Overlays = Overlays()) -> None:
        """Replace the overlays with these instances."""
        for item in self._overlay:
            self.scene().removeItem(item)
        self._overlay, self.keypoint_items = [], {}
        current = selected[0] if selected else None
        for inst in instances:
            self._draw_instance(inst, keypoints, inst.track in selected,
                                selected_keypoint if inst.track == current else None, overlays)

    def _add(self, item: QGraphicsItem) -> QGraphicsItem:
        self.scene().addItem(item)
        self._overlay.append(item)
        return item

    def _draw_instance(self, inst: Instance, kps: KeypointSet, selected: bool,
                       selected_keypoint: int | None, overlays: Overlays) -> None:
        color = track_color(inst.track)
        if overlays.boxes:
            self._draw_box(inst, color, selected)
        if overlays.labels:
            self._draw_label(inst, color, selected)
        finite = np.isfinite(inst.xy).all(axis=1)
        lines = {}
        if overlays.skeleton:
            line_color = QColor(color)
            line_color.setAlpha(230 if selected else 150)
            for a, b in kps.skeleton:
                if finite[a] and finite[b] and not inst.hidden[a] and not inst.hidden[b]:
                    line = self._add(QGraphicsLineItem(*inst.xy[a], *inst.xy[b]))
                    line.setPen(_pen(line_color, 2.5 if selected else 1.5))
                    line.setZValue(1)
                    lines.setdefault(a, []).append((line, 0))
                    lines.setdefault(b, []).append((line, 1))
        if overlays.keypoints:
            for k in np.flatnonzero(finite):
                self._draw_keypoint(inst, kps, int(k), k == selected_keypoint, lines)

    def _draw_box(self, inst: Instance, color: QColor, selected: bool) -> None:
        x1, y1, x2, y2 = inst.box
        box = self._add(QGraphicsRectItem(x1, y1, x2 - x1, y2 - y1))
        box.setPen(_pen(color, 2.5 if selected else 1.2,
                        Qt.PenStyle.SolidLine if selected else Qt.PenStyle.DashLine))
        box.setData(0, inst.track)
        box.setZValue(0)

    def _draw_label(self, inst: Instance, color: QColor, selected: bool) -> None:
        name = self.names.get(inst.track)
        text = QGraphicsSimpleTextItem(f" animal {inst.track}" + (f": {name} " if name else " "))
        font = QFont(self.font())
        font.setBold(selected)
        text.setFont(font)
        text.setBrush(QColor("#101010"))
        rect = text.boundingRect()
        label = self._add(QGraphicsRectItem(rect))
        label.setBrush(color if selected else color.darker(115))
        label.setPen(QPen(Qt.PenStyle.NoPen))
        label.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        label.setPos(float(inst.box[0]), float(inst.box[1]))
        label.setTransform(label.transform().translate(0, -rect.height()))
        label.setData(0, inst.track)
        label.setZValue(4)
        text.setParentItem(label)

    def _draw_keypoint(self, inst: Instance, kps: KeypointSet, k: int, selected: bool,
                       lines: dict) -> None:
        if inst.hidden[k]:
            fill, status = None, "marked occluded"
        elif inst.corrected[k]:
            fill, status = QColor(CORRECTED_COLOR), "corrected"
        else:
            fill, status = confidence_color(inst.confidence[k]), \
                f"confidence {inst.confidence[k]:.2g}"
        tip = f"animal {inst.track}: {kps.source_names[k]} ({status})"
        item = KeypointItem(self, inst.track, k, QPointF(*inst.xy[k]), fill, selected, tip)
        item.lines = lines.get(k, [])
        self._add(item)
        self.keypoint_items[(inst.track, k)] = item

    # ------------------------------------------------------------------ mouse
    def _track_at(self, pos) -> int | None:
        for item in self.items(pos):
            track = item.data(0)
            if track is not None:
                return int(track)
        return None

    def keypoints_at(self, pos) -> list[tuple[int, int]]:
        """``(track, keypoint)`` of the markers under a viewport position, top first."""
        return [(item.track, item.keypoint) for item in self.items(pos)
                if isinstance(item, KeypointItem)]

    def mousePressEvent(self, event) -> None:
        """Place a keypoint, pick one of stacked keypoints, select an animal, or pan.

        While placing, a left click places; on keypoints drawn on top of each other, it asks
        which one; on a box or label, it selects the animal; elsewhere the view pans.
        """
        pos = event.position().toPoint()
        left = event.button() == Qt.MouseButton.LeftButton
        if left and self.placing and self._frame_size[0]:
            where = self.clamp_to_frame(self.mapToScene(pos))
            self.placeRequested.emit(where.x(), where.y())
            event.accept()
            return
        item = self.itemAt(pos)
        if left and isinstance(item, KeypointItem) and not item.selected:
            stacked = self.keypoints_at(pos)
            if len(stacked) > 1:
                self.stackedPressed.emit(stacked, event.globalPosition().toPoint())
                event.accept()
                return
        if isinstance(item, KeypointItem) or not left:
            super().mousePressEvent(event)
            return
        track = self._track_at(pos)
        if track is not None:
            self.instanceClicked.emit(track, -1)
        super().mousePressEvent(event)

    def contextMenuEvent(self, event) -> None:
        """Right click on an animal: its actions."""
        item = self.itemAt(event.pos())
        if isinstance(item, KeypointItem):
            self.menuRequested.emit(item.track, item.keypoint, event.globalPos())
            return
        track = self._track_at(event.pos())
        if track is not None:
            self.menuRequested.emit(track, -1, event.globalPos())
        elif self._frame_size[0]:
            pos = self.clamp_to_frame(self.mapToScene(event.pos()))
            self.backgroundMenuRequested.emit(pos.x(), pos.y(), event.globalPos())
