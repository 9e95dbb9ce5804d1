"""Dialogs: run the pipeline, export, messages, and the progress panel of a background task.

Messages go through :func:`show_error` / :func:`show_info` so every user-facing error is one
line in a message box (never a traceback), and tests can replace them.
"""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from clamp_track.gui.workers import ExportRequest, RunRequest, TaskWorker
from clamp_track.pipelines.megadetector import MEGADETECTOR_MODELS

#: Pose model variants offered in the run dialog (any registered name can be typed).
POSE_MODELS = ("clamp_rn50", "clamp_vitb16")
DETECTORS = ("torchvision", "megadetector", "motion", "file", "mmdet")
#: ``--detector-model`` choices offered per detector, the default first (any can be typed).
DETECTOR_MODELS = {"torchvision": ("fast", "accurate"),
                   "megadetector": tuple(MEGADETECTOR_MODELS),
                   "mmdet": ()}
EXPORT_FORMATS = (("csv", "Tidy CSV (one row per frame, animal and keypoint)"),
                  ("dlc", "DeepLabCut .h5 / .csv"),
                  ("sleap", "SLEAP .slp (opens in SLEAP) and analysis .h5"),
                  ("nwb", "NWB with ndx-pose (.nwb)"),
                  ("video", "Annotated video (.mp4)"),
                  ("plot", "Trajectory and confidence plots (PNG)"))


def show_error(parent: QWidget | None, title: str, message: str) -> None:
    """A one-line error in a message box."""
    QMessageBox.critical(parent, title, message)


def ask(parent: QWidget | None, title: str, question: str) -> bool:
    """A yes/no question; True for yes."""
    answer = QMessageBox.question(parent, title, question)
    return answer == QMessageBox.StandardButton.Yes


def locate_box(parent: QWidget | None, title: str, message: str) -> QMessageBox:
    """The refusal of a video, with Locate… and Review without frames (not shown yet)."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, message, parent=parent)
    box.setInformativeText("These results were made from another video. Locate the right "
                           "one, or review without frames.")
    box.addButton("Locate…", QMessageBox.ButtonRole.AcceptRole)
    box.addButton("Review without frames", QMessageBox.ButtonRole.RejectRole)
    return box


def offer_locate(parent: QWidget | None, title: str, message: str) -> bool:
    """Show :func:`locate_box`; True if the user chose Locate…."""
    box = locate_box(parent, title, message)
    box.exec()
    return box.buttonRole(box.clickedButton()) == QMessageBox.ButtonRole.AcceptRole


def show_info(parent: QWidget | None, title: str, message: str) -> None:
    """An information message box."""
    QMessageBox.information(parent, title, message)


def show_shortcuts(parent: QWidget | None, rows: list[tuple[str, str, str]]) -> None:
    """Help → Keyboard shortcuts: ``(menu, action, keys)`` rows in a non-modal table."""
    from PyQt6.QtWidgets import QDialog, QTableWidget, QTableWidgetItem, QVBoxLayout

    dialog = QDialog(parent)
    dialog.setWindowTitle("Keyboard shortcuts")
    table = QTableWidget(len(rows), 3, dialog)
    table.setHorizontalHeaderLabels(["Menu", "Action", "Keys"])
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            table.setItem(r, c, QTableWidgetItem(text))
    table.resizeColumnsToContents()
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setStretchLastSection(True)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    layout = QVBoxLayout(dialog)
    layout.addWidget(table)
    dialog.resize(560, 640)
    dialog.show()


def _path_row(edit: QLineEdit, pick) -> QWidget:
    """A line edit with a "..." button calling ``pick(edit)``."""
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    button = QPushButton("…")
    button.setFixedWidth(32)
    button.clicked.connect(lambda: pick(edit))
    layout.addWidget(edit, 1)
    layout.addWidget(button)
    return row


def _pick_file(edit: QLineEdit, caption: str, filters: str = "") -> None:
    path, _ = QFileDialog.getOpenFileName(edit, caption, edit.text(), filters)
    if path:
        edit.setText(path)


def _pick_folder(edit: QLineEdit, caption: str) -> None:
    path = QFileDialog.getExistingDirectory(edit, caption, edit.text())
    if path:
        edit.setText(path)


class RunDialog(QDialog):
    """The main options of ``clamp-track run`` for one video.

    Args:
        video: The video to run on (editable).
        resumable: Offer "Resume" checked (an interrupted run exists).
    """

    def __init__(self, video: Path | None, resumable: bool = False, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Run the pipeline")
        self.video = QLineEdit(str(Path(video).absolute()) if video else "")
        self.pose_model = QComboBox()
        self.pose_model.setEditable(True)
        self.pose_model.addItems(POSE_MODELS)
        self.weights = QLineEdit()
        self.weights.setPlaceholderText("auto: the official weights (fetched once), or a file")
        self.detector = QComboBox()
        self.detector.addItems(DETECTORS)
        self.detector_model = QComboBox()
        self.detector_model.setEditable(True)
        self.detector_model.setToolTip("torchvision: fast / accurate; megadetector: its variant "
                                       "(MDV6-mit-yolov9-c is the cheapest); mmdet: the config")
        self.boxes = QLineEdit()
        self.boxes.setPlaceholderText("MegaDetector JSON or MOT det.txt (file detector)")
        self.detect_every = QSpinBox()
        self.detect_every.setRange(1, 100)
        self.device = QComboBox()
        self.device.setEditable(True)
        self.device.addItems(["auto", "cpu", "cuda"])
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 512)
        self.batch_size.setValue(16)
        self.flip_test = QCheckBox("Flip test (more accurate, half the speed)")
        self.flip_test.setChecked(True)
        self.extra = QLineEdit()
        self.extra.setPlaceholderText("more settings: KEY=VALUE ..., e.g. "
                                      "tracker.min_track_length=20")
        self.out_dir = QLineEdit()
        self.out_dir.setPlaceholderText(f"beside the video ({Path(video).absolute().parent})"
                                        if video else "beside the video")
        self.resume = QCheckBox("Resume the interrupted run")
        self.resume.setChecked(resumable)
        self.resume.setVisible(resumable)
        self.overwrite = QCheckBox("Replace existing results, even corrected ones")
        form = QFormLayout()
        form.addRow("Video", _path_row(self.video, lambda e: _pick_file(e, "Video")))
        form.addRow("Pose model", self.pose_model)
        form.addRow("Pose weights", _path_row(self.weights, lambda e: _pick_file(
            e, "Pose weights", "Checkpoints (*.pt *.pth);;All files (*)")))
        form.addRow("Detector", self.detector)
        form.addRow("Detector model", self.detector_model)
        form.addRow("Boxes file", _path_row(self.boxes, lambda e: _pick_file(e, "Boxes")))
        form.addRow("Detect every", self.detect_every)
        form.addRow("Device", self.device)
        form.addRow("Batch size", self.batch_size)
        form.addRow("", self.flip_test)
        form.addRow("Output folder", _path_row(self.out_dir, lambda e: _pick_folder(
            e, "Output folder")))
        form.addRow("Advanced", self.extra)
        form.addRow("", self.resume)
        form.addRow("", self.overwrite)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Run")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.detector.currentTextChanged.connect(self._detector_changed)
        self._detector_changed(self.detector.currentText())
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def _detector_changed(self, name: str) -> None:
        self.boxes.setEnabled(name == "file")
        self.detector_model.clear()
        self.detector_model.addItems(DETECTOR_MODELS.get(name, ()))
        self.detector_model.setEnabled(name in DETECTOR_MODELS)

    def use_settings(self, config: dict) -> None:
        """Start from a run's own settings (a store's ``config``), e.g. to resume or re-run it.

        The main options fill their fields; every other setting that differs from the
        defaults goes to ``Advanced`` as ``KEY=VALUE``, so the same run is asked for again.
        """
        from clamp_track.config import to_dict
        from clamp_track.pipelines.run import RunConfig

        config = dict(config or {})
        detect, pose = dict(config.get("detect") or {}), dict(config.get("pose") or {})
        if config.get("pose_model"):
            self.pose_model.setCurrentText(str(config["pose_model"]))
        weights = config.get("pose_weights")
        self.weights.setText("" if weights in (None, "auto") else str(weights))
        if detect.get("name") in DETECTORS:
            self.detector.setCurrentText(detect["name"])
        self.boxes.setText(str(detect.get("boxes") or ""))
        self.detect_every.setValue(int(detect.get("every", 1) or 1))
        self.device.setCurrentText(str(pose.get("device", "auto")))
        self.batch_size.setValue(int(pose.get("batch_size", 16)))
        self.flip_test.setChecked(bool(pose.get("flip_test", True)))
        shown = {("pose_model",), ("detect", "name"), ("detect", "boxes"),
                 ("detect", "every"), ("pose", "device"), ("pose", "batch_size"),
                 ("pose", "flip_test")}
        if weights is not None:  # None (random weights) has no field: it goes to Advanced
            shown.add(("pose_weights",))
        extra = [f"{'.'.join(key)}={_yaml(value)}" for key, value in _leaves(config)
                 if key not in shown and value != _leaf(to_dict(RunConfig()), key)]
        self.extra.setText(" ".join(extra))

    def request(self) -> RunRequest:
        """The run the user asked for.

        Raises:
            InputError: A setting is malformed (e.g. an ``Advanced`` item without ``=``).
        """
        from clamp_track.config import merge, parse_overrides

        settings = {
            "pose_model": self.pose_model.currentText().strip(),
            "detect": {"name": self.detector.currentText(), "every": self.detect_every.value()},
            "pose": {"device": self.device.currentText().strip() or "auto",
                     "batch_size": self.batch_size.value(),
                     "flip_test": self.flip_test.isChecked()},
        }
        if self.weights.text().strip():
            settings["pose_weights"] = self.weights.text().strip()
        if self.detector.currentText() == "file":
            settings["detect"]["boxes"] = self.boxes.text().strip()
        model = self.detector_model.currentText().strip()
        if self.detector.currentText() in DETECTOR_MODELS and model:
            settings["detect"]["model"] = model
        settings = merge(settings, parse_overrides(self.extra.text().split()))
        out = self.out_dir.text().strip()
        return RunRequest(Path(self.video.text().strip()), settings, Path(out) if out else None,
                          resume=self.resume.isChecked(), overwrite=self.overwrite.isChecked())


def _leaves(tree: dict, prefix: tuple = ()):
    """``(key path, value)`` of every non-dict value of a nested dict."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _leaf(tree: dict, key: tuple):
    for part in key:
        if not isinstance(tree, dict) or part not in tree:
            return object()  # differs from anything
        tree = tree[part]
    return tree


def _yaml(value) -> str:
    """A value as ``parse_overrides`` reads it back (flow-style YAML, one token)."""
    import yaml

    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip() \
        .removesuffix("...").strip().replace(" ", "")


class ExportDialog(QDialog):
    """Choose export formats and a folder (``clamp-track export``).

    Args:
        store: The result store.
        video: The video in use (for the annotated video).
    """

    def __init__(self, store: Path, video: Path | None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Export")
        self.store, self.video = store, video
        self.checks = {}
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Export the results of <b>{store.name}</b>, with your "
                                "corrections (animals numbered 1, 2, 3… without gaps):"))
        for name, label in EXPORT_FORMATS:
            box = QCheckBox(label)
            box.setChecked(name in ("csv", "dlc"))
            self.checks[name] = box
            layout.addWidget(box)
        self.out_dir = QLineEdit(str(store.absolute().parent))
        form = QFormLayout()
        form.addRow("Folder", _path_row(self.out_dir, lambda e: _pick_folder(e, "Folder")))
        layout.addLayout(form)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def request(self) -> ExportRequest:
        """The export the user asked for."""
        formats = tuple(name for name, box in self.checks.items() if box.isChecked())
        out = self.out_dir.text().strip()
        return ExportRequest(self.store, formats, Path(out) if out else None, self.video)


class TaskPanel(QWidget):
    """Progress of a :class:`TaskWorker` in the status bar, with a Cancel button.

    Not a dialog: it takes no keyboard focus, so Enter and Esc keep working in the window and
    never cancel a task. Cancel asks first; a task that cannot stop midway (an export) says so
    on its button instead of pretending.

    Args:
        worker: The task (not started yet).
        title: What the task is, e.g. ``"Fine-tune"``.
    """

    def __init__(self, worker: TaskWorker, title: str, parent=None):
        super().__init__(parent)
        self.worker, self.title = worker, title
        self.label = QLabel(f"{title}: starting…")
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)
        self.bar.setMaximumWidth(220)
        self.cancel_button = QPushButton("Cancel" if worker.cancellable else "Cannot cancel")
        self.cancel_button.setEnabled(worker.cancellable)
        if not worker.cancellable:
            self.cancel_button.setToolTip(f"{title} cannot be stopped midway; it finishes "
                                          "on its own")
        self.cancel_button.clicked.connect(self.cancel)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.bar)
        layout.addWidget(self.cancel_button)
        for widget in (self, self.bar, self.cancel_button):
            widget.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        worker.progressed.connect(self._progress)

    def _progress(self, done: int, total: int, message: str) -> None:
        if self.worker.cancel_requested:
            return
        if total > 0:
            self.bar.setRange(0, total)
            self.bar.setValue(done)
            self.label.setText(f"{self.title}: {done} / {total}  {message}")
        else:
            self.label.setText(f"{self.title}: {message}")

    def cancel(self) -> bool:
        """Ask, then ask the task to stop (at its next progress report); True if asked to."""
        if not self.worker.cancellable or self.worker.cancel_requested:
            return False
        keep = ("The best weights so far are kept." if "tune" in self.title.lower() else
                "What is done so far is kept.")
        if not ask(self.window(), f"Cancel {self.title.lower()}?",
                   f"Stop {self.title.lower()} now? {keep}"):
            return False
        self.worker.cancel()
        self.cancel_button.setEnabled(False)
        self.label.setText(f"{self.title}: cancelling…")
        return True
