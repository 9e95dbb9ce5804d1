"""The review window: frame view, timeline, transport, panels, menus and shortcuts.

It wires views to :class:`~clamp_track.gui.state.ReviewState`, turns user gestures into undo
commands (:mod:`clamp_track.gui.undo`) and starts background work (:mod:`clamp_track.gui.workers`,
:mod:`clamp_track.gui.frames`). It holds no results itself.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QEventLoop, Qt, QTimer
from PyQt6.QtGui import QAction, QImage, QKeySequence, QUndoStack
from PyQt6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from clamp_track.errors import ClampTrackError
from clamp_track.gui import dialogs
from clamp_track.gui.behaviour_panel import BehaviourPanel
from clamp_track.gui.editor import Editor
from clamp_track.gui.frame_view import FrameView, Overlays
from clamp_track.gui.frames import FrameLoader
from clamp_track.gui.panels import KeypointPanel, QueuePanel, TrackPanel
from clamp_track.gui.state import ReviewState
from clamp_track.gui.style import track_color
from clamp_track.gui.timeline import Timeline, TimelineRow
from clamp_track.gui.undo import MarkItem
from clamp_track.gui.workers import (
    ExportRequest,
    RunRequest,
    TaskWorker,
    export_task,
    finetune_task,
    rerun_task,
    run_task,
)
from clamp_track.io.store import SUFFIX, store_path
from clamp_track.io.video_ref import VideoMismatch, VideoMissing, resolve_video
from clamp_track.pipelines.qc import Action, Status
from clamp_track.pipelines.review import Coordinates

log = logging.getLogger(__name__)

SPEEDS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: How long closing the window waits for a task that stops at its next progress report.
STOP_WAIT_MS = 30000
VIDEO_FILTER = "Videos (*.mp4 *.avi *.mov *.mkv *.m4v *.mpg *.mpeg *.wmv *.webm);;All files (*)"
STORE_FILTER = f"clamp-track results (*{SUFFIX});;All files (*)"


def keep_up_note(played: list[tuple[float, int]], time_of, speed: float,
                 window_s: float = 1.0) -> str:
    """What the status bar says when playback is slower than asked ("" when it keeps up).

    Args:
        played: ``(clock seconds, frame)`` of the frames shown lately, oldest first.
        time_of: The video time (s) of a frame.
        speed: The speed asked for (1 = real time).
        window_s: Judge over at least this much clock time.
    """
    if len(played) < 3 or played[-1][0] - played[0][0] < window_s:
        return ""
    clock = played[-1][0] - played[0][0]
    achieved = (time_of(played[-1][1]) - time_of(played[0][1])) / clock
    if achieved >= 0.85 * speed:
        return ""
    return (f"Playing at {achieved:.1f}×: decoding cannot keep up with {speed:g}× "
            "(every frame is shown; pick a lower speed to play in time)")


class MainWindow(QMainWindow):
    """The review GUI's main window.

    Args:
        interactive: False for offscreen renders (``--screenshot``): problems are collected in
            :attr:`errors` instead of shown in message boxes, and nothing asks the user.
    """

    def __init__(self, interactive: bool = True):
        super().__init__()
        self.interactive = interactive
        self.errors: list[str] = []
        self.state = ReviewState(self)
        self.undo_stack = QUndoStack(self)
        self.editor = Editor(self.state, self.undo_stack, self.report_error, self.choose_track,
                             self, confirm=self.confirm)
        self.placing: tuple[int, int] | None = None  # (track, keypoint) a click places
        self.loader: FrameLoader | None = None
        self.video_times: np.ndarray | None = None
        self._low: dict[int, np.ndarray] = {}  # per track: low-confidence rows (timeline)
        self.overlays = Overlays()
        self.tasks: list[TaskWorker] = []
        self.task_panel: dialogs.TaskPanel | None = None  # of the last task started
        self._shown_frame: int | None = None  # the frame whose image is on screen
        self._video_problem = "video not found"  # why there are no frames, for the banner
        self.video_refusal: VideoMismatch | None = None  # why the store refused a video
        self._kept_reruns: set[Path] = set()  # re-run stores whose banner was dismissed
        self._speed = SPEEDS.index(1.0)
        self.play_timer = QTimer(self)
        self.play_timer.timeout.connect(self._tick)
        self._played: deque[tuple[float, int]] = deque(maxlen=256)  # (clock s, frame) shown
        self.setWindowTitle("clamp-track review")
        self.setAcceptDrops(True)
        self._build_central()
        self._build_docks()
        self._build_actions()
        self._build_menus()
        self._build_status()
        self._connect_state()
        self._session_changed()

    # ================================================================== layout
    def _build_central(self) -> None:
        self.view = FrameView()
        self.timeline = Timeline()
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("QLabel { background: #4a3b12; color: #ffe9a8; padding: 6px; "
                                  "border-radius: 3px; }")
        self.banner.setVisible(False)
        self.rerun_banner = self._build_rerun_banner()
        review = QWidget()
        layout = QVBoxLayout(review)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        layout.addWidget(self.rerun_banner)
        layout.addWidget(self.banner)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.timeline)
        self.behaviour = BehaviourPanel(self.state, self._start_task, track_color)
        layout.addWidget(self.behaviour)
        layout.addLayout(self._build_transport())
        self.pages = QStackedWidget()
        self.pages.addWidget(self._build_empty_page())
        self.pages.addWidget(review)
        self.setCentralWidget(self.pages)

    def _build_rerun_banner(self) -> QWidget:
        """Says that a re-run's new results are shown, what moved, and offers to go back."""
        box = QWidget()
        box.setObjectName("rerunBanner")
        box.setStyleSheet("#rerunBanner { background: #123a4a; border-radius: 3px; } "
                          "QLabel { color: #d8f3ff; }")
        row = QHBoxLayout(box)
        row.setContentsMargins(8, 4, 8, 4)
        self.rerun_label = QLabel()
        self.rerun_label.setWordWrap(True)
        self.go_back_button = QPushButton("Go back to the first results")
        self.go_back_button.clicked.connect(self.go_back)
        keep = QPushButton("Keep these")
        keep.clicked.connect(self._dismiss_rerun_banner)
        row.addWidget(self.rerun_label, 1)
        row.addWidget(self.go_back_button)
        row.addWidget(keep)
        for button in (self.go_back_button, keep):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        box.setVisible(False)
        return box

    def _rerun_report(self):
        """The carry report of the open store if it is a re-run's (None otherwise)."""
        from clamp_track.pipelines.replay import stored_report

        return stored_report(self.state.store) if self.state.store is not None else None

    def _update_rerun_banner(self) -> None:
        report = self._rerun_report()
        shown = report is not None and self.state.store.path not in self._kept_reruns
        if shown:
            text = (f"<b>Showing NEW results</b> (a re-run of {Path(report.source).name}): "
                    f"{report.line()}.")
            if report.unplaced:
                text += "<br>Not placed: " + "; ".join(report.unplaced[:3])
            self.rerun_label.setText(text)
            self.go_back_button.setEnabled(Path(report.source).is_file())
        self.rerun_banner.setVisible(shown)

    def go_back(self) -> None:
        """Reopen the first run's results (the ones the re-run started from)."""
        report = self._rerun_report()
        if report is not None:
            self.open_paths(store=report.source)

    def _dismiss_rerun_banner(self) -> None:
        if self.state.store is not None:
            self._kept_reruns.add(self.state.store.path)
        self._update_rerun_banner()
        self._focus_view()

    def name_track_dialog(self) -> None:
        """Edit → Name animal…: name the selected animal (blank removes the name)."""
        track = self.state.selection.track
        if self.state.store is None or track is None:
            self.report_error("Name animal", "select an animal first (click it or press Tab)")
            return
        current = self.state.store.track_names().get(track, "")
        name, ok = QInputDialog.getText(self, "Name animal", f"Name of animal {track} (e.g. "
                                        "female); used by every export:", text=current)
        if ok:
            try:
                self.state.name_track(track, name)
            except ClampTrackError as exc:
                self.report_error("Name animal", str(exc))
            self._session_changed()

    def _build_empty_page(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addStretch(1)
        title = QLabel("<h2>clamp-track review</h2>")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_hint = QLabel(
            "Open a video to review its tracked animals, or open the results of a run "
            f"(the <tt>&lt;video&gt;{SUFFIX}</tt> file that <tt>clamp-track run VIDEO</tt> "
            "writes beside it).<br><br>No results yet? Open the video and choose "
            "<b>Run → Run pipeline…</b> (Ctrl+R). You can also drop a file here.")
        self.empty_hint.setWordWrap(True)
        self.empty_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_hint.setFixedWidth(560)  # a wrapped label needs a width to get its height
        self.empty_hint.setMinimumHeight(self.empty_hint.heightForWidth(560) + 4)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for text, slot in (("Open video…", self.open_video_dialog),
                           ("Open results…", self.open_store_dialog)):
            button = QPushButton(text)
            button.setMinimumWidth(140)
            button.clicked.connect(slot)
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout.addWidget(title)
        layout.addWidget(self.empty_hint, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addSpacing(12)
        layout.addLayout(buttons)
        layout.addStretch(2)
        return page

    def _build_transport(self) -> QHBoxLayout:
        row = QHBoxLayout()
        icons = QStyle.StandardPixmap
        self.play_button = QToolButton()
        self.play_button.setToolTip("Play / pause (Space)")
        self.play_button.clicked.connect(self.toggle_play)
        row.addWidget(self.play_button)
        for icon, tip, step in ((icons.SP_MediaSeekBackward, "Back 10 frames (Shift+Left)", -10),
                                (icons.SP_MediaSkipBackward, "Previous frame (Left)", -1),
                                (icons.SP_MediaSkipForward, "Next frame (Right)", 1),
                                (icons.SP_MediaSeekForward, "Forward 10 frames (Shift+Right)",
                                 10)):
            button = QToolButton()
            button.setIcon(self.style().standardIcon(icon))
            button.setToolTip(tip)
            button.clicked.connect(lambda _=False, s=step: self.step(s))
            row.addWidget(button)
        self._set_play_icon(False)
        self.frame_box = QSpinBox()
        self.frame_box.setKeyboardTracking(False)
        self.frame_box.setToolTip("Go to frame")
        self.frame_box.valueChanged.connect(self.state.set_frame)
        self.time_label = QLabel()
        self.speed_box = QComboBox()
        self.speed_box.addItems([f"{s:g}×" for s in SPEEDS])
        self.speed_box.setCurrentIndex(self._speed)
        self.speed_box.setToolTip("Playback speed ([ and ])")
        self.speed_box.currentIndexChanged.connect(self._set_speed)
        self.coords_box = QComboBox()
        self.coords_box.addItem("Raw keypoints", Coordinates.RAW)
        self.coords_box.addItem("Smoothed keypoints", Coordinates.SMOOTHED)
        self.coords_box.setToolTip("Show the model's or the smoother's keypoints (S)")
        self.coords_box.currentIndexChanged.connect(
            lambda i: self.state.set_coordinates(self.coords_box.itemData(i)))
        row.addSpacing(8)
        row.addWidget(QLabel("Frame"))
        row.addWidget(self.frame_box)
        row.addWidget(self.time_label)
        row.addStretch(1)
        row.addWidget(QLabel("Speed"))
        row.addWidget(self.speed_box)
        row.addWidget(self.coords_box)
        for widget in (self.frame_box, self.speed_box, self.coords_box):
            widget.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        # the keyboard goes back to the frame view once a value is chosen, so the shortcuts
        # (Ctrl+Z, Space, N, arrows) work at once instead of editing the box
        self.frame_box.editingFinished.connect(self._focus_view)
        self.speed_box.activated.connect(self._focus_view)
        self.coords_box.activated.connect(self._focus_view)
        return row

    def _focus_view(self) -> None:
        self.view.setFocus(Qt.FocusReason.OtherFocusReason)

    def _build_docks(self) -> None:
        self.track_panel = TrackPanel(self.state)
        self.keypoint_panel = KeypointPanel(self.state)
        self.queue_panel = QueuePanel(self.state)
        self.queue_panel.previous_button.clicked.connect(self.previous_suspect)
        self.queue_panel.next_button.clicked.connect(self.next_suspect)
        self.queue_panel.itemChosen.connect(self.go_to_suspect)
        self.queue_panel.frameChosen.connect(self.state.set_frame)
        self.queue_panel.action_button.clicked.connect(self.apply_suggestion)
        self.queue_panel.looks_right_button.clicked.connect(self.looks_right)
        self.keypoint_panel.keypointPicked.connect(self.pick_keypoint)
        self.docks = {}
        for name, widget in (("Animals", self.track_panel), ("Keypoints", self.keypoint_panel),
                             ("Review queue", self.queue_panel)):
            dock = QDockWidget(name, self)
            dock.setObjectName(name)
            dock.setWidget(widget)
            dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                             | QDockWidget.DockWidgetFeature.DockWidgetClosable
                             | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
            self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
            self.docks[name] = dock
        self.resizeDocks(list(self.docks.values()), [100, 260, 420], Qt.Orientation.Vertical)
        # the docks share a column of ~30% of a 1280-pixel window; the video keeps the rest
        self.resizeDocks([self.docks["Animals"]], [380], Qt.Orientation.Horizontal)

    # ================================================================== actions
    def _action(self, text: str, slot, shortcut=None, tip: str = "", checkable=False) -> QAction:
        action = QAction(text, self)
        if shortcut:
            keys = shortcut if isinstance(shortcut, (list, tuple)) else [shortcut]
            action.setShortcuts([QKeySequence(k) for k in keys])
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if tip:
            action.setStatusTip(tip)
        action.setCheckable(checkable)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        a = self._action
        keys = QKeySequence.StandardKey
        self.act_open_video = a("Open &video…", self.open_video_dialog, keys.Open)
        self.act_open_store = a("Open &results…", self.open_store_dialog, "Ctrl+Shift+O")
        self.act_locate = a("&Locate video…", self.locate_video_dialog, tip="Point the results "
                            "at their video if it moved")
        self.act_close = a("&Close", self.close_session, keys.Close)
        self.act_quit = a("&Quit", self.close, keys.Quit)
        self.act_run = a("&Run pipeline…", self.run_dialog, "Ctrl+R")
        self.act_export = a("&Export…", self.export_dialog, "Ctrl+E")
        self.act_finetune = a("&Fine-tune on corrections…", self.finetune)
        self.act_undo = self.undo_stack.createUndoAction(self, "&Undo")
        self.act_undo.setShortcuts([QKeySequence(keys.Undo)])
        self.act_redo = self.undo_stack.createRedoAction(self, "&Redo")
        self.act_redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        # undoing a step of several edits is one change for the review queue, like doing it
        for action, step in ((self.act_undo, self.undo), (self.act_redo, self.redo)):
            action.triggered.disconnect()
            action.triggered.connect(lambda _=False, step=step: step())
        self.addActions([self.act_undo, self.act_redo])
        ed = self.editor
        self.act_occluded = a("Mark keypoint &occluded / visible", ed.toggle_occluded, "O")
        self.act_reset = a("&Reset keypoint to prediction", ed.reset_keypoint, "R")
        self.act_accept = a("&Accept animal's keypoints as labels", ed.accept_instance, "A",
                            tip="Every keypoint of the current animal in this frame, where "
                            "it is shown, becomes a label for fine-tuning")
        self.act_delete_instance = a("Delete animal in this &frame", ed.delete_instance,
                                     "Delete")
        self.act_delete_track = a("Delete whole &track", ed.delete_track, "Shift+Delete")
        self.act_delete_after = a("Delete track from this frame &on", ed.delete_track_after,
                                  "Ctrl+Delete")
        self.act_swap = a("&Swap two animals from this frame on", ed.swap_tracks, "Ctrl+T")
        self.act_merge = a("&Merge two animals (lower id stays)", ed.merge_tracks, "Ctrl+M")
        self.act_merge_keep = a("Merge two animals, &keeping the current id",
                                lambda: ed.merge_tracks(keep_current=True), "Ctrl+Shift+M")
        self.act_swap_until = a("Swap two animals from this frame &until…",
                                self.swap_until_dialog, "Ctrl+Shift+T")
        self.act_swap_pair = a("Swap &left/right keypoint in this frame",
                               lambda: ed.swap_selected_pair(False), "X",
                               tip="The selected keypoint and its left/right partner")
        self.act_swap_pair_on = a("Swap left/right keypoint from this frame on",
                                  lambda: ed.swap_selected_pair(True), "Shift+X",
                                  tip="Until the swap back flagged in the review queue, else "
                                  "to the end of the track")
        self.act_gap = a("Interpolate &gap", self.propose_gap, "Ctrl+G",
                         tip="Propose the current animal's keypoints on the frames it is "
                         "missing, between the two frames around; accept them with A or "
                         "Ctrl+Shift+A")
        self.act_accept_proposals = a("Accept animal's &proposals as labels",
                                      ed.accept_proposals, "Ctrl+Shift+A")
        self.act_looks_right = a("Looks right, next item", self.looks_right,
                                 ["Return", "Enter"])
        self.act_apply = a("Do the item's suggested fix", self.apply_suggestion,
                           ["Ctrl+Return", "Ctrl+Enter"])
        self.act_cancel = a("Cancel placing", lambda: self.set_placing(None), "Esc")
        self.place_actions = [a(f"Place keypoint {n}", lambda _=False, k=n - 1:
                                self.pick_keypoint(k), str(n)) for n in range(1, 10)]
        self.act_name = a("&Name animal…", self.name_track_dialog, "Ctrl+Shift+N",
                          tip="Name the current animal (e.g. female): the name is used by "
                          "every export and survives re-runs")
        self.act_shortcuts = a("&Keyboard shortcuts", self.show_shortcuts, ["F1", "?"])
        self.act_add = a("&Add animal in this frame", lambda: self.add_instance(), "Ctrl+I",
                         tip="An animal the detector missed: the current one where it is "
                         "absent, else a new one; then drag its keypoints into place")
        self.act_play = a("&Play / pause", self.toggle_play, "Space")
        self.act_next = a("&Next frame", lambda: self.step(1), "Right")
        self.act_prev = a("&Previous frame", lambda: self.step(-1), "Left")
        self.act_next10 = a("Forward 10 frames", lambda: self.step(10), ["Shift+Right", "Down"])
        self.act_prev10 = a("Back 10 frames", lambda: self.step(-10), ["Shift+Left", "Up"])
        self.act_first = a("&First frame", lambda: self.state.set_frame(0), "Home")
        self.act_last = a("&Last frame", lambda: self.state.set_frame(self.state.n_frames - 1),
                          "End")
        self.act_faster = a("Faster", lambda: self._set_speed(self._speed + 1), "]")
        self.act_slower = a("Slower", lambda: self._set_speed(self._speed - 1), "[")
        self.act_next_suspect = a("Next in review &queue", self.next_suspect, "N")
        self.act_prev_suspect = a("Previous in review queue", self.previous_suspect, "P")
        self.act_next_flag = a("Next flagged frame in time", self.next_flag_in_time, "Shift+N")
        self.act_prev_flag = a("Previous flagged frame in time", self.previous_flag_in_time,
                               "Shift+P")
        self.act_next_corrected = a("Next corrected frame", lambda: self.jump_corrected(1), "C")
        self.act_prev_corrected = a("Previous corrected frame", lambda: self.jump_corrected(-1),
                                    "Shift+C")
        self.act_next_animal = a("Next animal", lambda: self.cycle_animal(1), "Tab")
        self.act_prev_animal = a("Previous animal", lambda: self.cycle_animal(-1), "Shift+Tab")
        self.act_smoothed = a("&Smoothed keypoints", self.toggle_smoothed, "S", checkable=True)
        self.act_zoom_in = a("Zoom &in", lambda: self.view.zoom(1.25), ["+", "="])
        self.act_zoom_out = a("Zoom &out", lambda: self.view.zoom(0.8), "-")
        self.act_fit = a("&Fit frame", self.view.fit, ["0", "F"])
        self.act_fit_animal = a("Fit &animal", self.fit_animal, "Shift+F")
        self.act_debug = a("&Decoding statistics", self._update_status, checkable=True,
                           tip="Developer figures in the status bar: decode time, cache hits")
        self.overlay_actions = {}
        for name, label in (("boxes", "Boxes"), ("labels", "Animal labels"),
                            ("skeleton", "Skeleton"), ("keypoints", "Keypoints")):
            act = a(label, self._overlays_changed, checkable=True)
            act.setChecked(True)
            self.overlay_actions[name] = act

    def _build_menus(self) -> None:
        bar = self.menuBar()
        menus = {
            "&File": [self.act_open_video, self.act_open_store, self.act_locate, None,
                      self.act_export, None, self.act_close, self.act_quit],
            "&Edit": [self.act_undo, self.act_redo, None, self.act_occluded, self.act_reset,
                      self.act_accept, None, self.act_delete_instance, self.act_delete_after,
                      self.act_delete_track, None, self.act_swap, self.act_swap_until,
                      self.act_merge, self.act_merge_keep, self.act_name, None,
                      self.act_swap_pair, self.act_swap_pair_on, None, self.act_add,
                      self.act_gap, self.act_accept_proposals, None, self.act_looks_right,
                      self.act_apply],
            "&View": [self.act_smoothed, None, *self.overlay_actions.values(), None,
                      self.act_zoom_in, self.act_zoom_out, self.act_fit, self.act_fit_animal,
                      None, self.act_debug],
            "&Go": [self.act_play, self.act_faster, self.act_slower, None, self.act_next,
                    self.act_prev, self.act_next10, self.act_prev10, self.act_first,
                    self.act_last, None, self.act_next_suspect, self.act_prev_suspect,
                    self.act_next_flag, self.act_prev_flag, self.act_next_corrected,
                    self.act_prev_corrected, None, self.act_next_animal, self.act_prev_animal],
            "&Run": [self.act_run, self.act_export, self.act_finetune],
        }
        for title, actions in menus.items():
            menu = bar.addMenu(title)
            for action in actions:
                if action is None:
                    menu.addSeparator()
                else:
                    menu.addAction(action)
        window_menu = bar.addMenu("&Window")
        for dock in self.docks.values():
            window_menu.addAction(dock.toggleViewAction())
        bar.addMenu("&Help").addAction(self.act_shortcuts)

    def _build_status(self) -> None:
        self.frame_label = QLabel()
        self.decode_label = QLabel()  # developer figures: only with View → Decoding statistics
        self.decode_label.setVisible(False)
        self.playback_label = QLabel()  # "playing at 1.6×: decoding cannot keep up with 4×"
        self.playback_label.setStyleSheet("QLabel { color: #ffcf70; }")
        self.saved_label = QLabel()
        for widget in (self.playback_label, self.saved_label, self.decode_label,
                       self.frame_label):
            self.statusBar().addPermanentWidget(widget)

    def _connect_state(self) -> None:
        s = self.state
        s.sessionChanged.connect(self._session_changed)
        s.frameChanged.connect(self._frame_changed)
        s.dataChanged.connect(self._data_changed)
        s.selectionChanged.connect(self._refresh_overlays)
        s.selectionChanged.connect(self._update_actions)
        s.coordinatesChanged.connect(self._refresh_overlays)
        s.queueChanged.connect(self._refresh_timeline)
        self.view.keypointMoved.connect(self._keypoint_moved)
        self.view.instanceClicked.connect(self._instance_clicked)
        self.view.menuRequested.connect(self._instance_menu)
        self.view.backgroundMenuRequested.connect(self._background_menu)
        self.view.placeRequested.connect(self._place_at)
        self.view.stackedPressed.connect(self._stacked_pressed)
        self.timeline.seekRequested.connect(self.state.set_frame)
        self.undo_stack.indexChanged.connect(self._edited)

    # ================================================================== opening
    def report_error(self, title: str, message: str) -> None:
        """Show a one-line problem (or collect it when not interactive)."""
        log.debug("%s: %s", title, message)
        if self.interactive:
            dialogs.show_error(self, title, message)
        else:
            self.errors.append(message)

    def open_paths(self, video: str | Path | None = None, store: str | Path | None = None
                   ) -> bool:
        """Open a video and/or a result store; False (after telling the user) if it failed.

        With only a video, its ``<video>.clamp.sqlite`` is opened if it exists. With only a
        store, its video is taken from the store, and looked for if it moved.
        """
        video = Path(video) if video else None
        store = Path(store) if store else None
        if video is not None and str(video).endswith(SUFFIX) and store is None:
            video, store = None, video
        if store is None and video is not None and store_path(video).is_file():
            store = store_path(video)
        if video is not None and not video.is_file():
            self.report_error("Video not found", f"{video}: video file not found; check the "
                              "path")
            return False
        self.stop_playing()
        if store is not None:
            try:
                self.state.open_store(store)
            except ClampTrackError as exc:  # the session open before stays as it was
                self.report_error("Cannot open the results", str(exc))
                return False
        else:
            self.state.close()
        self.undo_stack.clear()  # its commands belong to the closed results
        if video is not None and store is not None:  # both named: the video must be the one
            self._video_problem, self.video_refusal = "video not found", None
            video = self._checked(video)
            self._use_video(video)
            return True
        self._use_video(video or self._find_video())
        return True

    def _find_video(self) -> Path | None:
        """The store's video, found and checked by its fingerprint (None: review without).

        A missing video is asked for; a different video at its place is refused with the
        store's one-line reason, and the user may locate the right one.
        """
        self._video_problem, self.video_refusal = "video not found", None
        store = self.state.store
        if store is None:
            return None
        if store.video_ref.legacy:
            self.statusBar().showMessage(
                f"{store.path.name} was written before clamp-track fingerprinted videos: its "
                "video is matched by frame size and count; the fingerprint is new from now on",
                20000)
        try:
            return resolve_video(store)
        except VideoMismatch as exc:
            self._video_problem = f"refused {exc.candidate.name}, another video"
            self.video_refusal = exc
            if not self.interactive:
                self.errors.append(str(exc))
                return None
            if not dialogs.offer_locate(self, "Different video", str(exc)):
                return None
            return self._checked(self.locate_video(exc.recorded, ask=False))
        except VideoMissing as exc:
            if not self.interactive:
                return None
            return self._checked(self.locate_video(exc.recorded))
        except ClampTrackError as exc:  # e.g. the file at its place is not a readable video
            self._video_problem = "the video cannot be read"
            self.report_error("Cannot read the video", str(exc))
            return None

    def _checked(self, located: Path | None) -> Path | None:
        """A video the user located, if it is the store's (then remembered in the store)."""
        if located is None or self.state.store is None:
            return None
        try:
            found = resolve_video(self.state.store, located)
        except VideoMismatch as exc:
            self._video_problem = f"refused {located.name}, another video"
            self.video_refusal = exc
            self.report_error("Different video", str(exc))
            return None
        except ClampTrackError as exc:
            self._video_problem = "the video cannot be read"
            self.report_error("Cannot read the video", str(exc))
            return None
        self.video_refusal = None
        return found

    def locate_video(self, missing: Path, ask: bool = True) -> Path | None:
        """Ask the user where a moved video is (None: review without frames)."""
        if ask:
            answer = QMessageBox.question(
                self, "Video not found",
                f"The video of these results is not at {missing} any more. Locate it?\n\n"
                "(Without it you can still review and fix the keypoints, on a blank frame.)")
            if answer != QMessageBox.StandardButton.Yes:
                return None
        path, _ = QFileDialog.getOpenFileName(self, f"Locate {missing.name}",
                                              str(missing.parent), VIDEO_FILTER)
        return Path(path) if path else None

    def locate_video_dialog(self) -> None:
        """File → Locate video…: the chosen file is checked, then remembered in the store."""
        if self.state.store is not None:
            found = self._checked(self.locate_video(Path(self.state.store.video_info.path),
                                                    ask=False))
            if found:
                self._use_video(found)

    def _use_video(self, video: Path | None) -> None:
        self._stop_loader()
        self.video_times = None
        self.state.set_video(video)
        if video is not None:
            self.loader = FrameLoader(video, parent=self)
            self.loader.opened.connect(self._video_opened)
            self.loader.failed.connect(self._video_failed)
            self.loader.frameReady.connect(self._image_ready)
            self.loader.frameFailed.connect(self._image_failed)
            self.loader.start()
        self._frame_changed(self.state.frame)

    def _stop_loader(self) -> None:
        if self.loader is not None:
            for signal in (self.loader.opened, self.loader.failed, self.loader.frameReady,
                           self.loader.frameFailed):
                signal.disconnect()
            self.loader.stop()
            self.loader.deleteLater()
            self.loader = None
        self._shown_frame = None

    def _video_opened(self, info) -> None:
        if self.loader is None:
            return
        self.video_times = self.loader.times_s
        stored = self.state.store.video_info if self.state.store else None
        if stored and (stored.width, stored.height) != (info.width, info.height):
            self.report_error("Different video", f"{info.path} is {info.width}x{info.height} "
                              f"but the results were made on {stored.width}x{stored.height}; "
                              "locate the right video (File → Locate video)")
        if self.state.store is None:
            self.state.video_info = info
            self._session_changed()
        self._frame_changed(self.state.frame)

    def _video_failed(self, message: str) -> None:
        self.report_error("Cannot read the video", message)
        self._stop_loader()
        self._video_problem = "the video cannot be read"
        self.state.set_video(None)

    def open_video_dialog(self) -> None:
        """File → Open video."""
        path, _ = QFileDialog.getOpenFileName(self, "Open video", "", VIDEO_FILTER)
        if path:
            self.open_paths(video=path)

    def open_store_dialog(self) -> None:
        """File → Open results."""
        path, _ = QFileDialog.getOpenFileName(self, "Open results", "", STORE_FILTER)
        if path:
            self.open_paths(store=path)

    def close_session(self) -> None:
        """File → Close (everything is saved already)."""
        self.stop_playing()
        self._stop_loader()
        self.undo_stack.clear()
        self.state.close()

    def dragEnterEvent(self, event) -> None:
        """Accept dropped files."""
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        """Open a dropped video or store."""
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            self.open_paths(video=urls[0])

    # ================================================================== display
    def _session_changed(self) -> None:
        s = self.state
        has = s.store is not None or s.video_path is not None
        self.pages.setCurrentIndex(1 if has else 0)
        info = s.video_info
        if info is not None:
            self.view.set_frame_size(info.width, info.height)
        self.frame_box.blockSignals(True)
        self.frame_box.setRange(0, max(s.n_frames - 1, 0))
        self.frame_box.blockSignals(False)
        name = s.video_path.name if s.video_path else None
        parts = [p for p in (name, s.store.path.name if s.store else None) if p]
        title = "clamp-track review" + (" — " + " · ".join(parts) if parts else "")
        if self._rerun_report() is not None:
            title += " — NEW results (re-run)"
        names = s.store.track_names() if s.store is not None else {}
        self.view.names = names
        if names:
            title += " — " + ", ".join(f"{t}: {n}" for t, n in sorted(names.items()))
        self.setWindowTitle(title + ("" if s.editable or s.store is None else " (read-only)"))
        self._update_rerun_banner()
        self._update_banner()
        self._data_changed(None)

    def _update_banner(self) -> None:
        s, text = self.state, ""
        if s.store is None and s.video_path is not None:
            text = ("No results for this video yet. Run the pipeline (Run → Run pipeline…, "
                    "Ctrl+R) to track the animals and estimate their poses.")
        elif s.store is not None and s.video_path is None and self.video_refusal:
            refusal = self.video_refusal
            text = (f"No frames: {refusal.candidate} is not the video these results were "
                    f"made from ({refusal.reason}). Showing them on a blank frame; File → "
                    "Locate video… to see them.")
        elif s.store is not None and s.video_path is None:
            text = (f"No frames ({self._video_problem}: {Path(s.store.video_info.path).name}):"
                    " showing the results on a blank frame. File → Locate video… to see them.")
        elif s.store is not None and not s.store.complete:
            last = s.store.last_frame()
            text = (f"This run stopped before the end (last frame {last}); smoothing and "
                    "exports happen when it finishes. Run → Run pipeline… → Resume.")
        if s.store is not None and not s.editable:
            text = (text + " " if text else "") + "The results file is read-only: edits are off."
        self.banner.setText(text)
        self.banner.setToolTip(str(self.video_refusal or ""))
        self.banner.setVisible(bool(text))

    def _frame_changed(self, frame: int) -> None:
        self.frame_box.blockSignals(True)
        self.frame_box.setValue(frame)
        self.frame_box.blockSignals(False)
        self.timeline.set_frame(frame)
        self._show_image(frame)
        self._refresh_overlays()
        self._update_status()
        self._update_actions()

    def _show_image(self, frame: int) -> None:
        if self.loader is None:
            missing = self.state.store is not None and self.state.video_path is None
            self.view.clear_image(f"{self._video_problem}: results on a blank frame"
                                  if missing else "")
            self._shown_frame = frame
            return
        image = self.loader.request(frame)
        if image is not None:
            self.view.set_image(image)
            self._shown_frame = frame
        elif self._shown_frame is not None:
            self.view.set_note(f"decoding frame {frame}…")

    def _image_ready(self, index: int, image: QImage) -> None:
        if index == self.state.frame:
            self.view.set_image(image)
            self._shown_frame = index
            self._update_status()

    def _image_failed(self, index: int, message: str) -> None:
        if index == self.state.frame:
            self.view.clear_image(f"frame {index} cannot be decoded")
            self._shown_frame = index
            self.statusBar().showMessage(message, 5000)

    def _refresh_overlays(self) -> None:
        s = self.state
        if s.data is None:
            self.view.show_instances([], None, (), None)
            return
        self.view.show_instances(s.data.instances(s.frame, s.coordinates), s.data.keypoints,
                                 s.selection.tracks, s.selection.keypoint, self.overlays)

    def _data_changed(self, tracks: frozenset | None) -> None:
        if tracks is None:
            self._low.clear()
        for track in tracks or ():
            self._low.pop(track, None)
        self._refresh_overlays()
        self._refresh_timeline()
        self._update_status()
        self._update_actions()

    def _refresh_timeline(self) -> None:
        s = self.state
        rows, corrected = [], np.zeros(0, np.int64)
        if s.data is not None:
            for track in s.data.track_ids:
                if track not in self._low:
                    self._low[track] = s.data.mean_confidence(track) < s.qc.low_confidence
                rows.append(TimelineRow(track, track_color(track), s.data.tracks[track].frames,
                                        self._low[track]))
            corrected = s.data.corrected_frames()
        self.timeline.set_data(s.n_frames, rows, corrected, s.queue.flagged_frames())

    def _update_status(self) -> None:
        s = self.state
        if s.n_frames == 0:
            self.frame_label.setText("")
            self.time_label.setText("")
            return
        t = self._time_of(s.frame)
        self.time_label.setText(f"/ {s.n_frames - 1}   {int(t // 60):02d}:{t % 60:05.2f}")
        self.frame_label.setText(f"frame {s.frame}")
        self.decode_label.setVisible(self.act_debug.isChecked())
        if self.act_debug.isChecked() and self.loader is not None and \
                self.loader.stats.requests:
            st = self.loader.stats
            mean = 1000 * st.decode_s / st.decoded if st.decoded else 0.0
            self.decode_label.setText(f"decode {mean:.0f} ms/frame · cache hits "
                                      f"{100 * st.hit_rate:.0f}%")

    def _time_of(self, frame: int) -> float:
        if self.video_times is not None and frame < len(self.video_times):
            return float(self.video_times[frame])
        fps = self.state.video_info.fps if self.state.video_info else 0
        return frame / fps if fps else 0.0

    def _update_actions(self) -> None:
        s = self.state
        editable = s.editable
        track, kp = s.selection.track, s.selection.keypoint
        present = track is not None and s.data is not None and \
            s.data.tracks.get(track) is not None and s.data.tracks[track].row(s.frame) \
            is not None
        for act in (self.act_occluded, self.act_reset):
            act.setEnabled(editable and present and kp is not None)
        self.act_delete_instance.setEnabled(editable and present)
        self.act_delete_track.setEnabled(editable and track is not None)
        self.act_delete_after.setEnabled(editable and track is not None)
        self.act_swap.setEnabled(editable and track is not None)
        self.act_merge.setEnabled(editable and track is not None)
        self.act_export.setEnabled(s.store is not None)
        self.act_locate.setEnabled(s.store is not None)
        self.act_close.setEnabled(s.store is not None or s.video_path is not None)

    def _overlays_changed(self) -> None:
        self.overlays = Overlays(**{k: a.isChecked() for k, a in self.overlay_actions.items()})
        self._refresh_overlays()

    def toggle_smoothed(self) -> None:
        """View → Smoothed keypoints (S)."""
        smoothed = self.state.coordinates is Coordinates.RAW
        self.coords_box.setCurrentIndex(1 if smoothed else 0)
        self.act_smoothed.setChecked(smoothed)

    # ================================================================== navigation
    def step(self, frames: int) -> None:
        """Move ``frames`` frames (negative: back)."""
        self.state.set_frame(self.state.frame + frames)

    def toggle_play(self) -> None:
        """Play / pause (Space)."""
        if self.play_timer.isActive():
            self.stop_playing()
        elif self.state.n_frames:
            if self.state.frame >= self.state.n_frames - 1:
                self.state.set_frame(0)
            self._start_timer()
            self._set_play_icon(True)

    def stop_playing(self) -> None:
        """Pause."""
        self.play_timer.stop()
        self._set_play_icon(False)
        self._played.clear()
        self.playback_label.setText("")

    def _set_play_icon(self, playing: bool) -> None:
        icon = QStyle.StandardPixmap.SP_MediaPause if playing else \
            QStyle.StandardPixmap.SP_MediaPlay
        self.play_button.setIcon(self.style().standardIcon(icon))

    def _start_timer(self) -> None:
        fps = self.state.video_info.fps if self.state.video_info and \
            self.state.video_info.fps else 25.0
        self.play_timer.start(max(1, int(round(1000 / (fps * SPEEDS[self._speed])))))
        self._played.clear()

    def _tick(self) -> None:
        """Advance one frame once the current one is on screen (playback never skips)."""
        if self._shown_frame != self.state.frame:
            return
        if self.state.frame >= self.state.n_frames - 1:
            self.stop_playing()
            return
        self.step(1)
        self._played.append((time.monotonic(), self.state.frame))
        self.playback_label.setText(keep_up_note(list(self._played), self._time_of,
                                                 SPEEDS[self._speed]))

    def _set_speed(self, index: int) -> None:
        self._speed = int(np.clip(index, 0, len(SPEEDS) - 1))
        self.speed_box.blockSignals(True)
        self.speed_box.setCurrentIndex(self._speed)
        self.speed_box.blockSignals(False)
        if self.play_timer.isActive():
            self._start_timer()

    def cycle_animal(self, direction: int) -> None:
        """Select the next / previous animal present in this frame (Tab / Shift+Tab)."""
        if self.state.data is None:
            return
        present = self.state.data.tracks_at(self.state.frame)
        if not present:
            return
        current = self.state.selection.track
        i = present.index(current) + direction if current in present else 0
        self.state.select([present[i % len(present)]])

    def go_to_suspect(self, index: int) -> None:
        """Show review-queue item ``index``."""
        self._show_suspect(self.state.queue.go(index))

    def next_suspect(self) -> None:
        """The next item of the review queue, by rank (N)."""
        self._show_suspect(self.state.queue.next())

    def previous_suspect(self) -> None:
        """The previous item of the review queue, by rank (P)."""
        self._show_suspect(self.state.queue.previous())

    def next_flag_in_time(self) -> None:
        """The next queue item after this frame (Shift+N)."""
        self._show_suspect(self.state.queue.next_in_time(self.state.frame))

    def previous_flag_in_time(self) -> None:
        """The last queue item before this frame (Shift+P)."""
        self._show_suspect(self.state.queue.previous_in_time(self.state.frame))

    def _show_suspect(self, suspect) -> None:
        if suspect is None:
            queue = self.state.queue
            done = queue.total and queue.reviewed == queue.total
            self.statusBar().showMessage(
                f"Review queue finished: all {queue.total} items reviewed ✓" if done else
                "No more items in the review queue", 5000)
            return
        self.stop_playing()
        self.state.set_frame(suspect.frame)
        tracks = [suspect.track] + ([suspect.other] if suspect.other else [])
        self.state.select(tracks, suspect.keypoint)
        self.queue_panel.refresh()
        self.statusBar().showMessage(f"Animal {suspect.track}, frame {suspect.frame}: "
                                     f"{suspect.reason.value} — {suspect.detail}", 8000)
        self._pan_to(suspect.track, suspect.keypoint)

    def _pan_to(self, track: int, keypoint: int | None) -> None:
        """Pan so the animal's flagged keypoint (else its box centre) is on screen."""
        inst = self.state.data.instance(self.state.frame, track, self.state.coordinates)
        if inst is None:
            return
        if keypoint is not None and np.isfinite(inst.xy[keypoint]).all():
            x, y = inst.xy[keypoint]
        else:
            x, y = (inst.box[:2] + inst.box[2:]) / 2
        self.view.ensure_visible(float(x), float(y))

    # ================================================================== queue progress
    def looks_right(self) -> None:
        """The current queue item looks right: mark it reviewed and go to the next (Enter).

        Enter typed into the frame box (or another text field) is that field's: it commits it.
        """
        from PyQt6.QtWidgets import QAbstractSpinBox, QApplication, QLineEdit

        focus = QApplication.focusWidget()
        box = focus if isinstance(focus, QAbstractSpinBox) else \
            focus.parent() if isinstance(focus, QLineEdit) and \
            isinstance(focus.parent(), QAbstractSpinBox) else None
        if box is not None:
            box.interpretText()
            box.editingFinished.emit()
            return
        if isinstance(focus, QLineEdit):
            focus.returnPressed.emit()
            return
        queue = self.state.queue
        if not 0 <= queue.cursor < len(queue):
            self.next_suspect()
            return
        self.set_placing(None)
        item = queue.items[queue.cursor]
        self.undo_stack.push(MarkItem(self.state, item, Status.LOOKS_RIGHT,
                                      f"Mark animal {item.track}'s {item.reason.value} at "
                                      f"frame {item.frame} as looking right"))
        self._show_suspect(self.state.queue.next_open())

    def apply_suggestion(self) -> None:
        """Do the current queue item's suggested fix (Ctrl+Enter, or its button).

        Merges, swaps and left/right exchanges are done at once (one undo step) and the item
        is marked fixed; "Fix <keypoint>" arms placing it, so the next click puts it there;
        "Check animal N" zooms to it (Enter then says it looks right).
        """
        queue, panel = self.state.queue, self.queue_panel
        if not 0 <= queue.cursor < len(queue) or panel.suggestion is None:
            return
        item, g = queue.items[queue.cursor], panel.suggestion
        if g.action is Action.FIX_KEYPOINT:
            self.state.set_frame(g.first)
            self.state.select([g.track], g.keypoint)
            self.pick_keypoint(g.keypoint)
            self._pan_to(g.track, g.keypoint)
        elif g.action is Action.CHECK:  # nothing to change: show the animal up close
            self.state.set_frame(g.first)
            self.state.select([g.track])
            self.fit_animal()
        elif self.editor.apply(item, g):
            self.statusBar().showMessage(f"Done: {g.label} (Ctrl+Z undoes it)", 5000)

    # ================================================================== placing by name
    def pick_keypoint(self, keypoint: int) -> None:
        """Pick a keypoint of the current animal to place: by number (1–9) or in the list.

        The next left click in the frame puts it there (napari-DeepLabCut's way).
        """
        s = self.state
        track = s.selection.track
        if s.data is None or not s.editable or track is None or \
                not 0 <= keypoint < s.data.keypoints.num_keypoints:
            return
        if s.selection.keypoint != keypoint:
            s.select(s.selection.tracks, keypoint)
        if s.data.instance(s.frame, track) is None:
            self.statusBar().showMessage(f"Animal {track} is not in frame {s.frame}: add it "
                                         "first (Ctrl+I)", 5000)
            return
        self.set_placing((track, keypoint))

    def set_placing(self, target: tuple[int, int] | None) -> None:
        """Arm (or, with None, disarm) placing ``(track, keypoint)`` by a click."""
        self.placing = target
        if target is None:
            self.view.set_placing(None)
            return
        name = self.state.data.keypoints.source_names[target[1]]
        what = f"{name} of animal {target[0]}"
        self.view.set_placing(what)
        self.statusBar().showMessage(f"Click where the {what} belongs (Esc: cancel)")

    def _place_at(self, x: float, y: float) -> None:
        target, self.placing = self.placing, None
        self.view.set_placing(None)
        self.statusBar().clearMessage()
        if target is None or self.state.data.instance(self.state.frame, target[0]) is None:
            return
        self.editor.move_keypoint(target[0], target[1], x, y)

    def stacked_menu(self, candidates: list[tuple[int, int]]) -> QMenu:
        """The list offered when several keypoints lie under the pointer.

        Choosing one selects it: it is then drawn on top, to drag.
        """
        menu = QMenu(self)
        names = self.state.data.keypoints.source_names
        for track, k in candidates:
            action = menu.addAction(f"{names[k]} (animal {track})")
            action.triggered.connect(lambda _=False, t=track, kp=k: self._stacked_chosen(t, kp))
        return menu

    def _stacked_chosen(self, track: int, keypoint: int) -> None:
        self.state.select([track], keypoint)

    def _stacked_pressed(self, candidates: list, position) -> None:
        self.stacked_menu(candidates).exec(position)

    def propose_gap(self) -> int:
        """Edit → Interpolate gap (Ctrl+G), saying what to do with the proposals."""
        n = self.editor.propose_gap()
        if n:
            self.statusBar().showMessage(
                f"Proposed animal {self.state.selection.track} on {n} frames: drag what is "
                "wrong, then A accepts a frame, Ctrl+Shift+A all of them (Ctrl+Z: undo)", 10000)
        return n

    def fit_animal(self) -> None:
        """Zoom to the current animal in this frame (Shift+F; F fits the frame)."""
        s = self.state
        inst = s.data.instance(s.frame, s.selection.track) if s.data is not None and \
            s.selection.track is not None else None
        if inst is None:
            self.view.fit()
            return
        xy = inst.xy[np.isfinite(inst.xy).all(axis=1) & inst.corrected & ~inst.hidden]
        box = inst.box.copy()
        if len(xy):  # the user's keypoints too, in case they lie outside the box
            box[:2], box[2:] = np.minimum(box[:2], xy.min(0)), np.maximum(box[2:], xy.max(0))
        self.view.fit_box(box)

    def swap_until_dialog(self) -> None:
        """Edit → Swap two animals from this frame until frame X."""
        s = self.state
        if s.selection.track is None or not s.editable or not self.interactive:
            return
        last, ok = QInputDialog.getInt(self, "Swap animals until…", "Last frame of the "
                                       "mix-up:", s.frame, s.frame, max(s.n_frames - 1, 0))
        if ok:
            self.editor.swap_tracks_until(last)

    def jump_corrected(self, direction: int) -> None:
        """The next / previous frame with corrections (C / Shift+C)."""
        if self.state.data is None:
            return
        frames = self.state.data.corrected_frames()
        f = self.state.frame
        candidates = frames[frames > f] if direction > 0 else frames[frames < f][::-1]
        if len(candidates):
            self.state.set_frame(int(candidates[0]))

    # ================================================================== edits
    def _instance_clicked(self, track: int, keypoint: int) -> None:
        self.state.select([track], None if keypoint < 0 else keypoint)

    def _keypoint_moved(self, track: int, keypoint: int, x: float, y: float) -> None:
        if not self.editor.move_keypoint(track, keypoint, x, y):
            self._refresh_overlays()  # read-only: put the marker back

    def confirm(self, title: str, question: str) -> bool:
        """Ask yes/no before throwing away the user's work (not interactive: no)."""
        return self.interactive and dialogs.ask(self, title, question)

    def choose_track(self, title: str, candidates: list[int]) -> int | None:
        """Ask which animal (None: cancelled, or not interactive)."""
        if not self.interactive:
            return None
        items = [f"animal {t}" for t in candidates]
        item, ok = QInputDialog.getItem(self, title, "With which animal?", items, 0, False)
        return candidates[items.index(item)] if ok else None

    def _instance_menu(self, track: int, keypoint: int, position) -> None:
        self.state.select([track], None if keypoint < 0 else keypoint)
        menu = QMenu(self)
        if keypoint >= 0:
            menu.addActions([self.act_occluded, self.act_reset])
            menu.addSeparator()
        menu.addAction(self.act_accept)
        menu.addSeparator()
        menu.addActions([self.act_delete_instance, self.act_delete_after, self.act_delete_track])
        menu.addSeparator()
        menu.addActions([self.act_swap, self.act_merge])
        menu.exec(position)

    def add_instance(self, at: tuple[float, float] | None = None) -> int | None:
        """Edit → Add animal (Ctrl+I), or "Add animal here" on a right click at ``at``.

        Without ``at``, :meth:`Editor.add_instance` places it: a new animal goes under the
        pointer or at the view's centre.
        """
        return self.editor.add_instance(at, centre=self.view.pointer_or_centre())

    def shortcut_rows(self) -> list[tuple[str, str, str]]:
        """``(menu, action, keys)`` of every menu action with a shortcut, from the menus."""
        rows, seen = [], set()
        for menu_action in self.menuBar().actions():
            menu = menu_action.menu()
            for action in menu.actions() if menu else []:
                if id(action) in seen:  # an action in two menus (Export) is listed once
                    continue
                seen.add(id(action))
                keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText)
                                 for k in action.shortcuts())
                if keys:
                    rows.append((menu.title().replace("&", ""),
                                 action.text().replace("&", "").rstrip("…"), keys))
        return rows

    def show_shortcuts(self) -> None:
        """Help → Keyboard shortcuts (F1)."""
        dialogs.show_shortcuts(self, self.shortcut_rows())

    def _background_menu(self, x: float, y: float, position) -> None:
        if self.state.store is None:
            return
        menu = QMenu(self)
        add = menu.addAction(self.act_add.text().replace("in this frame", "here"))
        add.setShortcut(self.act_add.shortcut())
        add.triggered.connect(lambda: self.add_instance((x, y)))
        self.behaviour.add_scale_actions(menu, x, y)
        menu.exec(position)

    def undo(self) -> None:
        """Edit → Undo (Ctrl+Z): one step, scored by the review queue on its result."""
        with self.state.batch(undo=True):
            self.undo_stack.undo()

    def redo(self) -> None:
        """Edit → Redo (Ctrl+Shift+Z)."""
        with self.state.batch():
            self.undo_stack.redo()

    def _edited(self) -> None:
        if self.state.store is not None:
            self.saved_label.setText(f"✓ saved to {self.state.store.path.name}")

    # ================================================================== background tasks
    def _start_task(self, worker: TaskWorker, title: str, on_success) -> dialogs.TaskPanel:
        """Start ``worker`` with its progress in the status bar (no modal dialog)."""
        worker.succeeded.connect(on_success)
        worker.failed.connect(lambda message: self.report_error(title, message))
        worker.cancelled.connect(lambda message: self.statusBar().showMessage(
            f"{title}: {message}", 10000))
        panel = self.task_panel = dialogs.TaskPanel(worker, title, self)
        self.statusBar().insertPermanentWidget(0, panel)
        worker.finished.connect(lambda: self._task_ended(worker, panel))
        self.tasks.append(worker)
        worker.start()
        return panel

    def _task_ended(self, worker: TaskWorker, panel: dialogs.TaskPanel) -> None:
        self.tasks.remove(worker)
        self.statusBar().removeWidget(panel)
        panel.hide()

    def run_dialog(self) -> None:
        """Run → Run pipeline: options, then the run in a worker thread."""
        video = self.state.video_path
        resumable = self.state.store is not None and not self.state.store.complete
        dialog = dialogs.RunDialog(video, resumable, self)
        if self.state.store is not None:  # start from the settings these results were made with
            dialog.use_settings(self.state.store.meta("config") or {})
        if dialog.exec() != dialogs.RunDialog.DialogCode.Accepted:
            return
        try:
            request = dialog.request()
        except ClampTrackError as exc:
            self.report_error("Run", str(exc))
            return
        self.start_run(request)

    def start_run(self, request: RunRequest) -> TaskWorker:
        """Run the pipeline in a worker; open its results when it finishes."""
        target = store_path(request.video, request.out_dir)
        if self.state.store is not None and self.state.store.path.resolve() == \
                target.resolve():
            self.close_session()  # the run rewrites this file
        worker = TaskWorker(run_task(request))
        self._start_task(worker, "Run pipeline", lambda summary: self.open_paths(
            request.video, summary.store))
        return worker

    def export_dialog(self) -> None:
        """Run → Export: formats and folder, then the export in a worker thread."""
        if self.state.store is None:
            return
        dialog = dialogs.ExportDialog(self.state.store.path, self.state.video_path, self)
        if dialog.exec() == dialogs.ExportDialog.DialogCode.Accepted:
            self.start_export(dialog.request())

    def start_export(self, request: ExportRequest) -> TaskWorker:
        """Export in a worker; list the written files when done."""
        worker = TaskWorker(export_task(request), cancellable=False)

        def done(paths) -> None:
            names = "\n".join(str(Path(p).absolute()) for p in paths)
            self.statusBar().showMessage(f"Exported {len(paths)} files", 10000)
            if self.interactive:
                dialogs.show_info(self, "Export", f"Written:\n{names}")

        self._start_task(worker, "Export", done)
        return worker

    def finetune(self) -> None:
        """Run → Fine-tune on corrections, then (if the user agrees) re-run with the result."""
        store = self.state.store
        if store is None or not store.corrected_frames():
            self.report_error("Fine-tune", "correct some keypoints first: fine-tuning learns "
                              "from the corrected frames")
            return
        worker = TaskWorker(finetune_task([store.path]))
        self._start_task(worker, "Fine-tune", self._finetuned)

    def _finetuned(self, result) -> None:
        weights = getattr(result, "weights", None)
        store = self.state.store
        question = (f"Fine-tuning finished: {result}.\n\nRun the video again with the new "
                    "weights now? The results go to a new folder beside these ones and your "
                    "corrections are carried over.")
        if weights is None or store is None or not self.interactive or \
                not dialogs.ask(self, "Fine-tune", question):
            self.statusBar().showMessage(f"Fine-tuning finished: {result}", 10000)
            return
        worker = TaskWorker(rerun_task(store.path, Path(weights), self.state.video_path))
        self._start_task(worker, "Run with the fine-tuned weights", lambda summary: (
            self.open_paths(self.state.video_path, summary.store)))

    # ================================================================== screenshots, closing
    def wait_for_frame(self, timeout_s: float = 60.0) -> bool:
        """Process events until the current frame's image is shown (or there is no video)."""
        loop = QEventLoop()
        timer = QTimer()
        timer.setSingleShot(True)
        timer.timeout.connect(loop.quit)
        check = QTimer()
        check.timeout.connect(lambda: loop.quit() if self._frame_done() else None)
        timer.start(int(timeout_s * 1000))
        check.start(20)
        if not self._frame_done():
            loop.exec()
        check.stop()
        return self._frame_done()

    def _frame_done(self) -> bool:
        return self.loader is None or self._shown_frame == self.state.frame

    def save_screenshot(self, path: str | Path) -> Path:
        """Render the whole window to a PNG."""
        path = Path(path)
        if not self.grab().save(str(path)):
            raise ClampTrackError(f"{path}: cannot write the screenshot")
        return path

    def closeEvent(self, event) -> None:
        """Close; with a task running, ask first, then stop it and end the process.

        A task that stops at its next progress report (a run, a fine-tune: their work so far
        is kept) gets :data:`STOP_WAIT_MS` to do so; one that cannot stop midway (an export,
        whose files are written atomically, so nothing half-written is left) is not waited
        for: the process exits instead of lingering without a window.
        """
        running = [w for w in self.tasks if w.isRunning()]
        if running and self.interactive and not dialogs.ask(
                self, "Quit", f"{len(running)} task(s) still running. Stop and quit? Their "
                "work so far is kept (an export in progress is dropped)."):
            event.ignore()
            return
        self.stop_playing()
        for worker in running:
            worker.cancel()
        stuck = [w for w in running if not w.wait(STOP_WAIT_MS if w.cancellable else 0)]
        self._stop_loader()
        self.state.close()
        super().closeEvent(event)
        if stuck:
            log.warning("quitting with %d task(s) that cannot stop midway", len(stuck))
            self.exit_now()

    def exit_now(self) -> None:  # pragma: no cover - ends the process (tested in a subprocess)
        """End the process at once (a task thread that cannot be stopped would keep it)."""
        import os
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
