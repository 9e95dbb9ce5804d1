"""The review session's state: what is open, which frame and animal are current, and the edits.

Views observe :class:`ReviewState` through its signals and never change each other. Every
change of results goes through one of its edit methods, each a single store transaction (the
autosave: a closed window or a crash loses nothing), followed by the in-memory mirror
(:class:`~clamp_track.pipelines.review.ReviewData`) and the review queue being brought up to
date. Only the undo commands (:mod:`clamp_track.gui.undo`) call the edit methods, so every edit
can be undone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QObject, pyqtSignal

from clamp_track.errors import InputError
from clamp_track.io.queue_marks import read_marks, write_marks
from clamp_track.io.store import ResultStore, Snapshot
from clamp_track.pipelines.qc import (
    QCConfig,
    Reason,
    ReviewQueue,
    Status,
    Suspect,
    corrected_in,
    pair_suspects,
    rank,
    track_suspects,
)
from clamp_track.pipelines.review import Coordinates, Correction, ReviewData
from clamp_track.types import VideoInfo


@dataclass(frozen=True)
class Selection:
    """The animals (first = current) and the keypoint the user selected.

    Attributes:
        tracks: Selected track ids; the first is the current animal.
        keypoint: Selected keypoint index of the current animal, or None.
    """

    tracks: tuple[int, ...] = ()
    keypoint: int | None = None

    @property
    def track(self) -> int | None:
        """The current animal, or None."""
        return self.tracks[0] if self.tracks else None


class ReviewState(QObject):
    """One review session.

    Signals:
        sessionChanged: A store or video was opened or closed.
        frameChanged(int): The current frame changed.
        selectionChanged: The selected animals or keypoint changed.
        dataChanged(object): Results changed (an edit, an undo, a reload): a frozenset of the
            tracks concerned, or None for all.
        coordinatesChanged: Raw / smoothed keypoints toggled.
        queueChanged: The review queue was recomputed or refiltered.
    """

    sessionChanged = pyqtSignal()
    frameChanged = pyqtSignal(int)
    selectionChanged = pyqtSignal()
    dataChanged = pyqtSignal(object)
    coordinatesChanged = pyqtSignal()
    queueChanged = pyqtSignal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.store: ResultStore | None = None
        self.data: ReviewData | None = None
        self.video_path: Path | None = None
        self.last_rule: int | None = None  # of the last merge (its undo drops it)
        self.video_info: VideoInfo | None = None  # of the opened video (or the store's)
        self.frame = 0
        self.selection = Selection()
        self.coordinates = Coordinates.RAW
        self.qc = QCConfig()
        self.reasons: set[Reason] | None = None  # queue filter; None = all
        self.suspects: list[Suspect] = []
        self.queue = ReviewQueue([])
        self._track_events: dict[int, list[Suspect]] = {}  # review-queue events per track
        self._pair_events: list[Suspect] = []  # events between tracks
        # queue items marked fixed / looks right, by ReviewQueue.key (kept in the store)
        self.marks: dict[tuple, tuple[Suspect, Status]] = {}
        self._pending: tuple[set[int], bool] | None = None  # changes held back by batch()
        self._undoing = False  # in a batch(undo=True)

    # ------------------------------------------------------------------ session
    @property
    def editable(self) -> bool:
        """Whether results are open for editing."""
        return self.store is not None and not self.store.readonly

    @property
    def n_frames(self) -> int:
        """Frames on the timeline (the video's, or the results' when there is no video)."""
        if self.data is not None:
            return self.data.n_frames
        return self.video_info.n_frames if self.video_info else 0

    def open_store(self, path: str | os.PathLike) -> None:
        """Open a result store (read-only if the file is not writable).

        Raises:
            InputError: The file is missing, corrupt or not a store (one-line message).
        """
        path = Path(path)
        readonly = path.is_file() and not os.access(path, os.W_OK)
        store = ResultStore.open(path, readonly=readonly)
        try:
            data = ReviewData.from_store(store)
        except Exception as exc:  # noqa: BLE001 - a damaged store must not crash the GUI
            store.close()
            raise InputError(f"{path}: cannot read the results ({exc}); re-run the video") \
                from None
        self.close()
        self.store, self.data = store, data
        self.video_info = store.video_info
        self.marks = read_marks(store)
        self._rescore(None)
        self._recompute_queue(visited=set())
        self.sessionChanged.emit()
        self.set_frame(0, force=True)

    def set_video(self, path: str | os.PathLike | None, info: VideoInfo | None = None) -> None:
        """Use this video file for the frames (None: results without frames)."""
        self.video_path = Path(path) if path else None
        if info is not None and self.store is None:
            self.video_info = info
        self.sessionChanged.emit()

    def close(self) -> None:
        """Close the store (everything is already saved) and forget the video."""
        if self.store is not None:
            self.store.close()
        self.store = self.data = None
        self.video_path = self.video_info = None
        self.selection = Selection()
        self.suspects, self.queue = [], ReviewQueue([])
        self._track_events, self._pair_events = {}, []
        self.marks = {}
        self.frame = 0
        self.sessionChanged.emit()

    # ------------------------------------------------------------------ navigation
    def set_frame(self, frame: int, force: bool = False) -> None:
        """Go to ``frame`` (clipped to the video)."""
        frame = int(np.clip(frame, 0, max(self.n_frames - 1, 0)))
        if frame != self.frame or force:
            self.frame = frame
            self.frameChanged.emit(frame)

    def select(self, tracks=(), keypoint: int | None = None) -> None:
        """Select animals (first = current) and optionally one of its keypoints."""
        selection = Selection(tuple(int(t) for t in tracks), keypoint)
        if selection != self.selection:
            self.selection = selection
            self.selectionChanged.emit()

    def set_coordinates(self, coordinates: Coordinates) -> None:
        """Show raw or smoothed keypoints."""
        if coordinates is not self.coordinates:
            self.coordinates = coordinates
            self.coordinatesChanged.emit()

    def set_reasons(self, reasons: set[Reason] | None) -> None:
        """Filter the review queue by kind (None: all)."""
        self.reasons = reasons
        self._recompute_queue(rescored=False)

    # ------------------------------------------------------------------ edits (undo commands)
    def write_correction(self, frame: int, track: int, keypoint: int,
                         correction: Correction | None) -> None:
        """Store a keypoint correction (None: back to the prediction)."""
        self.write_corrections(frame, track, {keypoint: correction})

    def write_corrections(self, frame: int, track: int,
                          corrections: dict[int, Correction | None]) -> None:
        """Store several keypoints' corrections of one animal at once (one transaction)."""
        self._writable().set_corrections(frame, track, {
            k: None if c is None else (c.x, c.y, c.visible) for k, c in corrections.items()})
        for k, c in corrections.items():
            self.data.set_correction(frame, track, k, c)
        self._changed({track}, boxes=False)

    def delete_instances(self, track: int, first: int, last: int | None,
                         record: bool = True) -> Snapshot:
        """Delete a track's instances in ``[first, last]`` and return what was deleted.

        ``record``: keep the delete as a rule for re-runs (not when undoing an added animal).
        """
        from dataclasses import replace

        store = self._writable()
        snapshot = store.snapshot(track, first, last)
        rule = store.delete_track(track, first, last, record=record)
        self._reload([track])
        return replace(snapshot, rule=rule)

    def add_instance(self, frame: int, track: int, xy: np.ndarray, box: np.ndarray) -> None:
        """Add an animal the detector missed (see :meth:`ResultStore.add_instance`)."""
        self._writable().add_instance(frame, track, box, xy)
        self._reload([track])

    def restore(self, snapshot: Snapshot) -> None:
        """Put deleted instances back."""
        self._writable().restore(snapshot)
        self._reload([snapshot.track])

    def swap(self, a: int, b: int, from_frame: int, undo_rule: int | None = None) -> int | None:
        """Exchange two tracks' identities from ``from_frame`` on (its own inverse).

        Returns the rule recorded for re-runs; undoing passes it as ``undo_rule`` (dropped).
        """
        rule = self._writable().swap_tracks(a, b, from_frame, record=undo_rule is None,
                                            forget=undo_rule)
        self._reload([a, b])
        return rule

    def merge(self, keep: int, other: int) -> np.ndarray:
        """Give ``other``'s instances the id ``keep``; returns the frames that moved.

        The rule recorded for re-runs is in :attr:`last_rule`.
        """
        frames = self.data.tracks[other].frames.copy()
        self.last_rule = self._writable().merge_tracks(keep, other)
        self._reload([keep, other])
        return frames

    def unmerge(self, keep: int, other: int, frames: np.ndarray,
                rule: int | None = None) -> None:
        """Undo :meth:`merge`: move ``frames`` of ``keep`` back to ``other``; drop ``rule``."""
        self._writable().reassign([(int(f), keep, other) for f in frames], forget=rule)
        self._reload([keep, other])

    def name_track(self, track: int, name: str | None) -> None:
        """Name a track ("female"); the name reaches every export and survives re-runs."""
        self._writable().set_track_name(track, name)
        self.dataChanged.emit(frozenset({track}))

    def _writable(self) -> ResultStore:
        if not self.editable:
            raise InputError("these results are open read-only; edits are disabled")
        return self.store

    def _reload(self, tracks) -> None:
        self.data.reload(self.store, tracks)
        present = set(self.data.track_ids)
        kept = tuple(t for t in self.selection.tracks if t in present)
        if kept != self.selection.tracks:
            self.selection = Selection(kept, self.selection.keypoint if kept else None)
            self.selectionChanged.emit()
        self._changed(set(tracks), boxes=True)

    @contextmanager
    def batch(self, undo: bool = False) -> Iterator[None]:
        """Edits made inside reach the review queue and the views once, at the end.

        For a step of several edits (a macro, its undo and redo): the queue is scored on the
        step's result, not on the states in between, which would flag (and count as fixed)
        events that only existed halfway through, e.g. with half of a left/right stretch
        swapped.

        Args:
            undo: The edits undo a step: items they make go away are ones the step made, not
                fixed ones (items the step fixed come back open either way).
        """
        if self._pending is not None:  # nested: the outer batch reports
            yield
            return
        self._pending, self._undoing = (set(), False), undo
        try:
            yield
        finally:
            tracks, boxes = self._pending
            self._pending = None
            try:
                if tracks:
                    self._changed(tracks, boxes)
            finally:
                self._undoing = False

    def _changed(self, tracks: set[int], boxes: bool) -> None:
        """Bring the review queue up to date for changed ``tracks`` and tell the views.

        Only the changed tracks are rescored; events between tracks are rescored only when
        boxes changed (identity edits), not after keypoint corrections.
        """
        if self._pending is not None:
            self._pending = (self._pending[0] | set(tracks), self._pending[1] or boxes)
            return
        self._rescore(tracks, boxes)
        self._recompute_queue(edited=set(tracks))
        self.dataChanged.emit(frozenset(tracks))

    def _rescore(self, tracks: set[int] | None, boxes: bool = True) -> None:
        if self.data is None:
            self._track_events, self._pair_events = {}, []
            return
        present = set(self.data.track_ids)
        for track in present if tracks is None else tracks:
            if track in present:
                self._track_events[track] = track_suspects(self.data, track, self.qc)
        for track in set(self._track_events) - present:
            del self._track_events[track]
        if boxes:
            self._pair_events = pair_suspects(self.data, self.qc)

    def set_mark(self, suspect: Suspect, status: Status) -> Status:
        """Mark a queue item fixed / looking right (OPEN: unmark); returns its previous mark.

        Kept in the store (when writable) so the queue's progress survives the session.
        """
        key = ReviewQueue.key(suspect)
        before = self.marks.get(key, (suspect, Status.OPEN))[1]
        if status is Status.OPEN:
            self.marks.pop(key, None)
        else:
            self.marks[key] = (suspect, status)
        if self.editable:
            write_marks(self.store, {key: (suspect, status)})
        self._recompute_queue(rescored=False)
        return before

    @staticmethod
    def _superseded(gone: Suspect, live, edited: set[int]) -> bool:
        """Whether an item that left the queue lives on in another one, not fixed.

        That is an item of the same kind over some of its frames, of the same animal (a jump
        event that shrank) or of another animal the edit concerned (an identity edit moves
        frames, and their items, between ids).
        """
        tracks = set(edited) | {gone.track}
        return any(s.reason is gone.reason and s.frame <= gone.end and gone.frame <= s.end
                   and s.track in tracks for s in live)

    def _recompute_queue(self, visited: set | None = None, rescored: bool = True,
                         edited: set[int] | None = None) -> None:
        """Rank the events again and work out each one's status.

        After an edit of the tracks ``edited``, an item no longer flagged was fixed by it: it
        is marked fixed (in the store) and stays countable, unless another item carries it on
        (:meth:`_superseded`); one that comes back (an undo) is open again.
        An item whose keypoints the user corrected is fixed while the corrections last.
        """
        old = self.queue
        current = old.items[old.cursor] if 0 <= old.cursor < len(old) else None
        before = {ReviewQueue.key(s): s for s in self.suspects}
        if rescored:
            events = [e for per_track in self._track_events.values() for e in per_track]
            self.suspects = rank(events + self._pair_events) if self.data else []
        live = {ReviewQueue.key(s): s for s in self.suspects}
        changes: dict = {}
        if edited is not None and not self._undoing:
            for key, s in before.items():
                if key not in live and key not in self.marks and \
                        not self._superseded(s, live.values(), edited):
                    changes[key] = (s, Status.FIXED)
            for key in live.keys() - before.keys():
                if key in self.marks and self.marks[key][1] is Status.FIXED:
                    changes[key] = None
        for key, value in changes.items():
            if value is None:
                del self.marks[key]
            else:
                self.marks[key] = value
        if changes and self.editable:
            write_marks(self.store, changes)
        statuses = {key: mark[1] for key, mark in self.marks.items() if key in live}
        for key, s in live.items():
            if key not in statuses and corrected_in(self.data, s):
                statuses[key] = Status.FIXED
        done = [mark for key, mark in self.marks.items() if key not in live]
        done.sort(key=lambda m: (-m[0].score, m[0].frame, m[0].track))
        self.queue = ReviewQueue(self.suspects, self.reasons,
                                 old.visited if visited is None else visited, statuses, done)
        if current is not None:  # stay at the item the user was at, or at its rank if fixed
            keys = [ReviewQueue.key(s) for s in self.queue.items]
            key = ReviewQueue.key(current)
            self.queue.cursor = keys.index(key) if key in keys else min(old.cursor,
                                                                        len(keys)) - 1
        self.queueChanged.emit()
