"""Side panels: the track list, the current animal's keypoints, and the review queue.

Each panel is a table over a small Qt model fed from :class:`ReviewState`; selecting a row
changes the state (which animal, which keypoint, which queue item), never another view.
"""

from __future__ import annotations

import math

from PyQt6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, pyqtSignal
from PyQt6.QtGui import QColor
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from clamp_track.gui.state import ReviewState
from clamp_track.gui.style import CORRECTED_COLOR, HIDDEN_COLOR, confidence_color, track_color
from clamp_track.pipelines.qc import Reason, Status, suggest
from clamp_track.pipelines.review import Instance, TrackStats

_DISPLAY = Qt.ItemDataRole.DisplayRole
_SORT = Qt.ItemDataRole.UserRole


def _table(model, stretch_last: bool = True) -> QTableView:
    view = QTableView()
    view.setModel(model)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.verticalHeader().setVisible(False)
    view.verticalHeader().setDefaultSectionSize(22)
    view.setAlternatingRowColors(True)
    view.setFocusPolicy(Qt.FocusPolicy.ClickFocus)  # leave arrow keys to the frame shortcuts
    header = view.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(stretch_last)
    return view


class _RowsModel(QAbstractTableModel):
    """A read-only table of rows; subclasses say how a row shows in each column."""

    headers: tuple[str, ...] = ()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list = []

    def set_rows(self, rows: list) -> None:
        """Replace the rows."""
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        """Rows."""
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        """Columns."""
        return 0 if parent.isValid() else len(self.headers)

    def headerData(self, section, orientation, role=_DISPLAY):
        """Column titles."""
        if orientation == Qt.Orientation.Horizontal and role == _DISPLAY:
            return self.headers[section]
        return None

    def data(self, index, role=_DISPLAY):
        """Text, sort key, colour of a cell."""
        if not index.isValid():
            return None
        return self.cell(self.rows[index.row()], index.column(), role)

    def cell(self, row, column: int, role):
        """Override: what ``row`` shows in ``column`` for ``role``."""
        raise NotImplementedError


class TrackModel(_RowsModel):
    """One row per track: id, frames present, first-last, mean confidence, corrected frames."""

    headers = ("Animal", "Frames", "Range", "Mean conf.", "Corrected")
    names: dict[int, str] = {}  # track names ("female"), shown beside the ids

    def cell(self, row: TrackStats, column: int, role):
        """A track's cells."""
        values = (row.track, row.frames, row.first, row.mean_confidence, row.corrected_frames)
        if role == _SORT:
            return values[column]
        if role == Qt.ItemDataRole.DecorationRole and column == 0:
            return track_color(row.track)
        if role == Qt.ItemDataRole.TextAlignmentRole and column:
            return Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        if role != _DISPLAY:
            return None
        name = self.names.get(row.track)
        texts = (f"{row.track}: {name}" if name else str(row.track), str(row.frames),
                 f"{row.first}–{row.last}",
                 "–" if math.isnan(row.mean_confidence) else f"{row.mean_confidence:.2g}",
                 str(row.corrected_frames))
        return texts[column]

    def track_at(self, row: int) -> int:
        """The track id of a (source) row."""
        return self.rows[row].track


class KeypointModel(_RowsModel):
    """The current animal's keypoints in the current frame."""

    headers = ("Keypoint", "x", "y", "Conf.", "Status")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.names: tuple[str, ...] = ()
        self.instance: Instance | None = None

    def set_instance(self, names: tuple[str, ...], instance: Instance | None) -> None:
        """Show ``instance`` (None: no animal selected or absent in this frame)."""
        self.names, self.instance = names, instance
        self.set_rows(list(range(len(names))) if instance is not None else [])

    def cell(self, k: int, column: int, role):
        """A keypoint's cells."""
        inst = self.instance
        status = ("occluded" if inst.hidden[k] else "corrected" if inst.corrected[k]
                  else "placed" if inst.confidence[k] == 0  # an added animal, a proposal
                  else "predicted")
        if role == Qt.ItemDataRole.ToolTipRole:
            return STATUS_TIPS[status]
        if role == Qt.ItemDataRole.DecorationRole and column == 0:
            if inst.hidden[k]:
                return QColor(HIDDEN_COLOR)
            return QColor(CORRECTED_COLOR) if inst.corrected[k] else confidence_color(
                inst.confidence[k])
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (1, 2, 3):
            return Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        if role != _DISPLAY:
            return None
        x, y = inst.xy[k]
        texts = (self.names[k], f"{x:.1f}", f"{y:.1f}", f"{inst.confidence[k]:.2g}", status)
        return texts[column]


#: What a keypoint's status means (the keypoint table's tooltips).
STATUS_TIPS = {
    "predicted": "The model's position",
    "corrected": "Your position: a label (R resets it to the prediction)",
    "occluded": "Marked occluded / absent (O toggles it)",
    "placed": "Placed, not a label yet: drag it where it belongs, or accept the animal's "
              "keypoints as they are (A; Ctrl+Shift+A: all its proposed frames)",
}

SCORE_TIP = ("How far past its threshold the item went: 1 = just at the threshold, "
             "10 = far past it (the cap). The queue is sorted by it, highest first.")


class QueueModel(_RowsModel):
    """The review queue's items in rank order, then the ones already fixed away.

    A row is ``(index, suspect, status)``; ``index`` is the item's place in the queue, or
    None for an item that is no longer flagged (fixed earlier).
    """

    headers = ("#", "Frame", "Animal", "Why", "Score", "Status", "Detail")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.visited = lambda i: False

    def headerData(self, section, orientation, role=_DISPLAY):
        """Column titles; the Score column explains itself in a tooltip."""
        if role == Qt.ItemDataRole.ToolTipRole and orientation == Qt.Orientation.Horizontal \
                and self.headers[section] == "Score":
            return SCORE_TIP
        return super().headerData(section, orientation, role)

    def cell(self, row, column: int, role):
        """An item's cells (reviewed and visited ones greyed)."""
        i, suspect, status = row
        if role == Qt.ItemDataRole.ForegroundRole and (
                status is not Status.OPEN or (i is not None and self.visited(i))):
            return QColor("#7a7d83")
        if role == Qt.ItemDataRole.ToolTipRole:
            return SCORE_TIP if self.headers[column] == "Score" else suspect.detail
        if role != _DISPLAY:
            return None
        animal = str(suspect.track) + (f"/{suspect.other}" if suspect.other else "")
        frames = str(suspect.frame) + (f"–{suspect.end}" if suspect.end > suspect.frame else "")
        mark = {Status.OPEN: "", Status.FIXED: "✓ fixed", Status.LOOKS_RIGHT: "✓ looks right"}
        texts = ("" if i is None else str(i + 1), frames, animal, suspect.reason.value,
                 f"{suspect.score:.1f}", mark[status], suspect.detail)
        return texts[column]


class TrackPanel(QWidget):
    """The track list; selecting rows selects animals (two rows: swap or merge them)."""

    def __init__(self, state: ReviewState, parent=None):
        super().__init__(parent)
        self.state = state
        self.model = TrackModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(_SORT)
        self.view = _table(self.proxy, stretch_last=False)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.selectionModel().selectionChanged.connect(self._selected)
        self.view.doubleClicked.connect(self._go_to_start)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)
        self._updating = False
        state.dataChanged.connect(self.refresh)
        state.sessionChanged.connect(self.refresh)
        state.selectionChanged.connect(self._show_selection)

    def refresh(self, *_) -> None:
        """Reload the statistics."""
        self._updating = True
        self.model.names = self.state.store.track_names() if self.state.store else {}
        self.model.set_rows(self.state.data.stats() if self.state.data else [])
        self._updating = False
        self._show_selection()

    def _selected(self) -> None:
        if self._updating:
            return
        rows = self.view.selectionModel().selectedRows()
        tracks = [self.model.track_at(self.proxy.mapToSource(r).row()) for r in rows]
        current = self.state.selection.track
        tracks.sort(key=lambda t: t != current)  # keep the current animal first
        self.state.select(tracks, self.state.selection.keypoint if tracks and tracks[0] ==
                          current else None)

    def _show_selection(self) -> None:
        self._updating = True
        selection = self.view.selectionModel()
        selection.clearSelection()
        for row, stats in enumerate(self.model.rows):
            if stats.track in self.state.selection.tracks:
                index = self.proxy.mapFromSource(self.model.index(row, 0))
                selection.select(index, selection.SelectionFlag.Select
                                 | selection.SelectionFlag.Rows)
        self._updating = False

    def _go_to_start(self, index) -> None:
        stats = self.model.rows[self.proxy.mapToSource(index).row()]
        self.state.set_frame(stats.first)


class KeypointPanel(QWidget):
    """The current animal's keypoints; selecting one highlights it in the frame.

    Signals:
        keypointPicked(int): The user picked a keypoint in the table (to place it by a click
            in the frame, napari-DeepLabCut's way).
    """

    keypointPicked = pyqtSignal(int)

    def __init__(self, state: ReviewState, parent=None):
        super().__init__(parent)
        self.state = state
        self.model = KeypointModel(self)
        self.view = _table(self.model)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.selectionModel().selectionChanged.connect(self._selected)
        self.view.clicked.connect(self._clicked)
        self.title = QLabel("No animal selected")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.view)
        self._updating = False
        for signal in (state.frameChanged, state.dataChanged, state.selectionChanged,
                       state.coordinatesChanged, state.sessionChanged):
            signal.connect(self.refresh)

    def refresh(self, *_) -> None:
        """Show the current animal at the current frame."""
        state, track = self.state, self.state.selection.track
        instance = None
        if state.data is not None and track is not None:
            instance = state.data.instance(state.frame, track, state.coordinates)
        names = state.data.keypoints.source_names if state.data else ()
        self._updating = True
        self.model.set_instance(names, instance)
        if instance is not None and state.selection.keypoint is not None:
            self.view.selectRow(state.selection.keypoint)
        self._updating = False
        if track is None:
            self.title.setText("No animal selected")
        elif instance is None:
            self.title.setText(f"Animal {track} is not in frame {state.frame}")
        else:
            self.title.setText(f"Animal {track}, frame {state.frame}")

    def _clicked(self, index) -> None:
        """A click on the selected row picks it again (to place it once more)."""
        if index.row() == self.state.selection.keypoint:
            self.keypointPicked.emit(index.row())

    def _selected(self) -> None:
        if self._updating or self.state.selection.track is None:
            return
        rows = self.view.selectionModel().selectedRows()
        keypoint = rows[0].row() if rows else None
        self.state.select(self.state.selection.tracks, keypoint)
        if keypoint is not None:
            self.keypointPicked.emit(keypoint)


class QueuePanel(QWidget):
    """The review queue: progress, a ranked list, and the current item's one-action fix.

    A single click on a row goes there. Enter marks the current item as looking right and
    goes to the next open one; the action button (Ctrl+Enter) does the item's suggested fix.

    Signals:
        itemChosen(int): The user picked queue item ``i``.
        frameChosen(int): The user picked an item that was fixed earlier: its frame.
    """

    itemChosen = pyqtSignal(int)
    frameChosen = pyqtSignal(int)

    def __init__(self, state: ReviewState, parent=None):
        super().__init__(parent)
        self.state = state
        self.model = QueueModel(self)
        # one line a row; the last (Detail) column is as wide as its text, not stretched to
        # the panel and cut off: the table scrolls sideways to show it in full
        self.view = _table(self.model, stretch_last=False)
        self.view.setWordWrap(False)
        self.view.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.clicked.connect(self._clicked)
        self.kind = QComboBox()
        self.kind.addItem("All kinds", None)
        for reason in Reason:
            self.kind.addItem(reason.value.capitalize(), reason)
        self.kind.currentIndexChanged.connect(self._filter)
        self.previous_button = QPushButton("◀ Previous")
        self.next_button = QPushButton("Next ▶")
        self.progress_label = QLabel()
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(8)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.current = QLabel()
        self.current.setWordWrap(True)
        self.action_button = QPushButton()
        self.action_button.setToolTip("Do this item's suggested fix (Ctrl+Enter); Ctrl+Z "
                                      "undoes it")
        self.looks_right_button = QPushButton("Looks right, next ⏎")
        self.looks_right_button.setToolTip("Mark this item reviewed and go to the next open "
                                           "one (Enter)")
        for button in (self.previous_button, self.next_button, self.action_button,
                       self.looks_right_button):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # Enter stays the window's
        top = QHBoxLayout()
        top.addWidget(self.kind, 1)
        top.addWidget(self.previous_button)
        top.addWidget(self.next_button)
        actions = QHBoxLayout()
        actions.addWidget(self.action_button, 1)
        actions.addWidget(self.looks_right_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.summary)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.current)
        layout.addLayout(actions)
        self.suggestion = None  # of the current item
        state.queueChanged.connect(self.refresh)
        state.sessionChanged.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        """Show the queue, how much of it is reviewed, and the current item's fix."""
        queue = self.state.queue
        self.model.visited = queue.is_visited
        rows = [(i, s, queue.status(i)) for i, s in enumerate(queue.items)]
        self.model.set_rows(rows + [(None, s, st) for s, st in queue.done])
        if 0 <= queue.cursor < len(queue):
            self.view.selectRow(queue.cursor)
        self.progress_label.setText(f"{queue.reviewed} / {queue.total} reviewed")
        self.progress.setRange(0, max(queue.total, 1))
        self.progress.setValue(queue.reviewed)
        n = self.state.n_frames
        frames = len(queue.flagged_frames())
        self.progress.setVisible(self.state.data is not None)
        if self.state.data is None:
            self.summary.setText("Open results to see what needs review.")
            self.progress_label.setText("")
        elif queue.total and queue.reviewed == queue.total:
            self.summary.setText("All reviewed ✓")
        else:
            share = f" ({100 * frames / n:.1f}% of frames)" if n else ""
            self.summary.setText(f"{queue.total - queue.reviewed} open, covering {frames} "
                                 f"frames{share}. Enter: looks right, next · N / P: next / "
                                 "previous")
        self._show_current()

    def _show_current(self) -> None:
        queue, data = self.state.queue, self.state.data
        item = queue.items[queue.cursor] if 0 <= queue.cursor < len(queue) else None
        self.suggestion = None if item is None or data is None else suggest(
            data, item, self.state.suspects)
        if item is None:
            self.current.setText("Press N (or click a row) to start." if len(queue) else "")
        else:
            status = queue.status(queue.cursor)
            state = "" if status is Status.OPEN else f" ({status.value})"
            why = item.reason.value
            self.current.setText(f"<b>{why[0].upper() + why[1:]}</b>, animal "
                                 f"{item.track}{state}: {item.detail}")
        offered = self.suggestion is not None
        self.action_button.setVisible(offered)
        if offered:
            self.action_button.setText(self.suggestion.label)
        self.looks_right_button.setEnabled(item is not None)
        self.looks_right_button.setVisible(self.state.data is not None)

    def _clicked(self, index) -> None:
        i, suspect, _ = self.model.rows[index.row()]
        if i is None:
            self.frameChosen.emit(suspect.frame)
        else:
            self.itemChosen.emit(i)

    def _filter(self) -> None:
        reason = self.kind.currentData()
        self.state.set_reasons(None if reason is None else {reason})
