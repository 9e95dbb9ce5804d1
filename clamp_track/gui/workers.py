"""Long jobs of the GUI (run the pipeline, export, fine-tune) in worker threads.

:class:`TaskWorker` runs one plain function in a ``QThread`` and turns what happens into
signals: progress, success with the function's result, a one-line failure, or cancellation.
The functions below are the same calls the CLI makes (``run_video``, ``export``), with heavy
imports (torch) inside them, so opening a dialog never stalls the window. Cancelling sets a flag
that the function's progress callback checks; the pipeline then stops at its next chunk with
everything committed so far, and the store can be resumed.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PyQt6.QtCore import QThread, pyqtSignal

from clamp_track.errors import ClampTrackError

log = logging.getLogger(__name__)

FINETUNE_MODULE = "clamp_track.engine.finetune"


class Reporter:
    """Handed to a task: report progress, and learn whether the user cancelled."""

    def __init__(self, worker: TaskWorker):
        self._worker = worker

    def report(self, done: int, total: int, message: str = "") -> None:
        """Tell the GUI how far the task is."""
        self._worker.progressed.emit(int(done), int(total), message)

    @property
    def cancelled(self) -> bool:
        """Whether the user asked to stop."""
        return self._worker.cancel_requested


class TaskWorker(QThread):
    """Runs ``task(reporter)`` in a thread.

    Signals:
        progressed(int, int, str): done, total, message.
        succeeded(object): The task's return value.
        failed(str): A one-line message (a user error's own; other errors name their type and
            are logged with their traceback).
        cancelled(str): The task stopped because the user cancelled.

    Attributes:
        outcome: ``(signal name, argument)`` of the signal :meth:`run` emitted, set just before
            emitting it (None while running), so a caller that connects late cannot miss how
            the task ended.
        cancellable: Whether the task checks :attr:`Reporter.cancelled` as it goes (False:
            it cannot stop midway, and the GUI says so instead of offering Cancel).
    """

    progressed = pyqtSignal(int, int, str)
    succeeded = pyqtSignal(object)
    failed = pyqtSignal(str)
    cancelled = pyqtSignal(str)

    def __init__(self, task: Callable[[Reporter], object], parent=None,
                 cancellable: bool = True):
        super().__init__(parent)
        self._task = task
        self.cancellable = cancellable
        self._cancel = threading.Event()
        self.outcome: tuple[str, object] | None = None

    @property
    def cancel_requested(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the task to stop at its next progress report."""
        self._cancel.set()

    def run(self) -> None:
        """Run the task and emit exactly one of succeeded / failed / cancelled."""
        try:
            result = self._task(Reporter(self))
        except ClampTrackError as exc:
            self._finish("cancelled" if self.cancel_requested else "failed", str(exc))
        except Exception as exc:  # noqa: BLE001 - shown in a message box, logged in full
            log.exception("background task failed")
            self._finish("failed", f"{type(exc).__name__}: {exc}")
        else:
            self._finish("succeeded", result)

    def _finish(self, signal: str, value: object) -> None:
        self.outcome = (signal, value)
        getattr(self, signal).emit(value)


# ---------------------------------------------------------------------------- run
@dataclass(frozen=True)
class RunRequest:
    """What the run dialog asks for.

    Attributes:
        video: The video file.
        settings: :class:`~clamp_track.pipelines.run.RunConfig` as plain data (the YAML form).
        out_dir: Folder for the store and exports (None: beside the video).
        resume: Continue an interrupted run.
        overwrite: Replace results even if they hold corrections.
    """

    video: Path
    settings: dict = field(default_factory=dict)
    out_dir: Path | None = None
    resume: bool = False
    overwrite: bool = False


def run_task(request: RunRequest) -> Callable[[Reporter], object]:
    """The pipeline on one video; the task returns its ``RunSummary``."""

    def task(reporter: Reporter):
        from clamp_track.config import from_dict
        from clamp_track.pipelines.run import Cancelled, RunConfig, run_video

        cfg = from_dict(RunConfig, request.settings, source="the run dialog")

        def progress(p) -> None:
            reporter.report(p.done, p.total, f"{p.fps:.1f} frames/s, {p.animals} animals")
            if reporter.cancelled:
                raise Cancelled(f"cancelled at frame {p.done} of {p.total}; "
                                "choose Resume to continue")

        reporter.report(0, 0, "loading the model")
        return run_video(request.video, cfg, request.out_dir, resume=request.resume,
                         overwrite=request.overwrite, progress=progress)

    return task


def rerun_task(store: Path, weights: Path, video: Path | None) -> Callable[[Reporter], object]:
    """Run a store's video again with new weights, carrying the corrections over."""

    def task(reporter: Reporter):
        from clamp_track.pipelines.run import Cancelled, rerun

        def progress(p) -> None:
            reporter.report(p.done, p.total, f"{p.fps:.1f} frames/s, {p.animals} animals")
            if reporter.cancelled:
                raise Cancelled(f"cancelled at frame {p.done} of {p.total}")

        reporter.report(0, 0, "loading the model")
        return rerun(store, weights, video=video, progress=progress)

    return task


# ---------------------------------------------------------------------------- export
@dataclass(frozen=True)
class ExportRequest:
    """What the export dialog asks for.

    Attributes:
        store: The result store.
        formats: Any of ``csv``, ``dlc``, ``video``, ``plot``.
        out_dir: Destination folder (None: beside the store).
        video: The video, if it is not where the store says (for ``video``).
    """

    store: Path
    formats: tuple[str, ...]
    out_dir: Path | None = None
    video: Path | None = None


def export_task(request: ExportRequest) -> Callable[[Reporter], object]:
    """``clamp-track export`` from its own read-only connection; returns the written files."""

    def task(reporter: Reporter):
        from clamp_track.errors import InputError
        from clamp_track.io.store import ResultStore
        from clamp_track.pipelines.run import export

        reporter.report(0, 0, "exporting " + ", ".join(request.formats))
        with ResultStore.open(request.store, readonly=True) as store:
            if not store.complete:
                raise InputError(f"{request.store.name}: the run did not finish; resume it "
                                 "before exporting")
            return export(store, request.formats, request.out_dir, video=request.video)

    return task


# ---------------------------------------------------------------------------- fine-tune
def finetune_task(stores: list[Path]) -> Callable[[Reporter], object]:
    """Fine-tune on the corrections of ``stores``; returns what ``finetune`` returns.

    The one integration point with the fine-tuning feature: it calls
    ``clamp_track.engine.finetune.finetune(stores, cfg, progress=None, cancel=None)`` with the
    module's default config (``FinetuneConfig()`` if it defines one), a progress callback
    taking ``(done, total)`` or an object with those attributes, and a ``cancel`` callable
    returning True once the user cancelled.
    """

    def task(reporter: Reporter):
        module = importlib.import_module(FINETUNE_MODULE)
        cfg = module.FinetuneConfig() if hasattr(module, "FinetuneConfig") else None

        def progress(*args) -> None:
            done, total = args if len(args) == 2 else (args[0].done, args[0].total)
            reporter.report(done, total, "fine-tuning")

        return module.finetune(stores, cfg, progress=progress,
                               cancel=lambda: reporter.cancelled)

    return task
