"""Every edit of the review GUI as a ``QUndoCommand`` (Ctrl+Z / Ctrl+Shift+Z).

A command records what it needs to undo itself when it first runs (the previous correction,
the deleted rows, the frames a merge moved) and goes through :class:`ReviewState`'s edit
methods, so redo and undo are store transactions like the edit itself: an undone edit is undone
on disk too. Commands also bring the user back to the frame and animal they concern, so undoing
something far away shows what changed.
"""

from __future__ import annotations

from PyQt6.QtGui import QUndoCommand

from clamp_track.gui.state import ReviewState
from clamp_track.pipelines.review import Correction


class _Command(QUndoCommand):
    """Shared: the state, and the frame and tracks to show after redo or undo."""

    def __init__(self, state: ReviewState, text: str, frame: int, tracks: tuple[int, ...]):
        super().__init__(text)
        self.state, self.frame, self.tracks = state, frame, tracks

    def _show(self, keypoint: int | None = None) -> None:
        self.state.set_frame(self.frame)
        present = [t for t in self.tracks if t in self.state.data.tracks]
        if present:
            self.state.select(present, keypoint)


class SetKeypoint(_Command):
    """Move a keypoint, mark it occluded, or reset it to the prediction (``None``)."""

    def __init__(self, state: ReviewState, frame: int, track: int, keypoint: int,
                 correction: Correction | None, text: str):
        super().__init__(state, text, frame, (track,))
        self.track, self.keypoint, self.new = track, keypoint, correction
        self.old = state.data.correction(frame, track, keypoint)

    def redo(self) -> None:
        """Write the new correction."""
        self.state.write_correction(self.frame, self.track, self.keypoint, self.new)
        self._show(self.keypoint)

    def undo(self) -> None:
        """Put the previous correction (or none) back."""
        self.state.write_correction(self.frame, self.track, self.keypoint, self.old)
        self._show(self.keypoint)


class SetKeypoints(_Command):
    """Set several keypoints of one animal at once, e.g. accept its predictions as labels."""

    def __init__(self, state: ReviewState, frame: int, track: int,
                 corrections: dict[int, Correction | None], text: str):
        super().__init__(state, text, frame, (track,))
        self.track, self.new = track, dict(corrections)
        self.old = {k: state.data.correction(frame, track, k) for k in corrections}

    def redo(self) -> None:
        """Write the new corrections."""
        self.state.write_corrections(self.frame, self.track, self.new)
        self._show()

    def undo(self) -> None:
        """Put the previous ones (or none) back."""
        self.state.write_corrections(self.frame, self.track, self.old)
        self._show()


class DeleteInstances(_Command):
    """Delete a track's instances in ``[first, last]`` (``last=None``: to its end)."""

    def __init__(self, state: ReviewState, track: int, first: int, last: int | None,
                 text: str):
        super().__init__(state, text, state.frame, (track,))
        self.track, self.first, self.last = track, first, last
        self.snapshot = None

    def redo(self) -> None:
        """Delete, keeping the rows for undo."""
        self.snapshot = self.state.delete_instances(self.track, self.first, self.last)
        self._show()

    def undo(self) -> None:
        """Put the deleted rows back."""
        self.state.restore(self.snapshot)
        self._show()


class SwapTracks(_Command):
    """Exchange two tracks' identities from a frame on."""

    def __init__(self, state: ReviewState, a: int, b: int, from_frame: int):
        super().__init__(state, f"Swap animals {a} and {b} from frame {from_frame}",
                         from_frame, (a, b))
        self.a, self.b = a, b

    def redo(self) -> None:
        """Swap."""
        self.rule = self.state.swap(self.a, self.b, self.frame)
        self._show()

    def undo(self) -> None:
        """Swap back (a swap is its own inverse), dropping the swap's rule."""
        self.state.swap(self.a, self.b, self.frame, undo_rule=self.rule)
        self._show()


class MergeTracks(_Command):
    """Give one track's instances another's id (a track broken in two)."""

    def __init__(self, state: ReviewState, keep: int, other: int):
        super().__init__(state, f"Merge animal {other} into {keep}", state.frame, (keep,))
        self.keep, self.other = keep, other
        self.frames = None

    def redo(self) -> None:
        """Merge, remembering which frames were ``other``'s."""
        self.frames = self.state.merge(self.keep, self.other)
        self.rule = self.state.last_rule
        self.tracks = (self.keep,)
        self._show()

    def undo(self) -> None:
        """Move those frames back to ``other``."""
        self.state.unmerge(self.keep, self.other, self.frames, self.rule)
        self.tracks = (self.keep, self.other)
        self._show()


class AddInstance(_Command):
    """Add an animal the detector missed to the current frame or ``frame`` (undo deletes it)."""

    def __init__(self, state: ReviewState, track: int, xy, box, text: str,
                 frame: int | None = None):
        super().__init__(state, text, state.frame if frame is None else frame, (track,))
        self.track, self.xy, self.box = track, xy, box

    def redo(self) -> None:
        """Insert the instance."""
        self.state.add_instance(self.frame, self.track, self.xy, self.box)
        self._show()

    def undo(self) -> None:
        """Delete it (with any correction made to it since: those commands were undone)."""
        self.state.delete_instances(self.track, self.frame, self.frame, record=False)
        self._show()


class MarkItem(QUndoCommand):
    """Mark a review-queue item (fixed by its suggested action); undo restores the mark.

    Pushed inside the action's macro, so undoing the action reopens the item too.
    """

    def __init__(self, state: ReviewState, suspect, status, text: str = "Mark review item"):
        super().__init__(text)
        self.state, self.suspect, self.status = state, suspect, status
        self.before = None

    def redo(self) -> None:
        """Set the mark."""
        self.before = self.state.set_mark(self.suspect, self.status)

    def undo(self) -> None:
        """Put the previous mark back."""
        self.state.set_mark(self.suspect, self.before)
