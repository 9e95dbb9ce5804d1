"""Edit gestures → checked undo commands.

:class:`Editor` is what the window's edit actions and the frame view's drags call. It checks
that an edit makes sense (something selected, the results writable, two tracks that may be
merged), says why not in one line otherwise, and pushes the matching undo command
(:mod:`clamp_track.gui.undo`) on the stack, which performs it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PyQt6.QtCore import QObject
from PyQt6.QtGui import QUndoStack

from clamp_track.gui.state import ReviewState
from clamp_track.gui.undo import (
    AddInstance,
    DeleteInstances,
    MergeTracks,
    SetKeypoint,
    SetKeypoints,
    SwapTracks,
)
from clamp_track.pipelines.review import Correction, place_instance


class Editor(QObject):
    """Turns the user's edits into undo commands on ``state``.

    Args:
        state: The session.
        undo_stack: Where commands go.
        report_error: Called with ``(title, one-line message)`` when an edit is refused.
        choose_track: Asks the user to pick one of several animals ``(title, candidates)``;
            returns None if cancelled (or when nobody can be asked).
    """

    def __init__(self, state: ReviewState, undo_stack: QUndoStack,
                 report_error: Callable[[str, str], None],
                 choose_track: Callable[[str, list[int]], int | None], parent=None):
        super().__init__(parent)
        self.state, self.undo_stack = state, undo_stack
        self.report_error, self.choose_track = report_error, choose_track

    def move_keypoint(self, track: int, keypoint: int, x: float, y: float) -> bool:
        """A dragged keypoint was dropped at ``(x, y)``; False if the results are read-only."""
        if not self.state.editable:
            return False
        name = self.state.data.keypoints.names[keypoint]
        self.undo_stack.push(SetKeypoint(self.state, self.state.frame, track, keypoint,
                                         Correction(float(x), float(y)),
                                         f"Move {name} of animal {track}"))
        return True

    def _selected_keypoint(self) -> tuple[int, int] | None:
        s = self.state
        if s.selection.track is None or s.selection.keypoint is None or not s.editable:
            return None
        if s.data.instance(s.frame, s.selection.track) is None:
            return None
        return s.selection.track, s.selection.keypoint

    def toggle_occluded(self) -> None:
        """Mark the selected keypoint occluded / absent, or visible again (O)."""
        chosen = self._selected_keypoint()
        if chosen is None:
            return
        track, k = chosen
        current = self.state.data.correction(self.state.frame, track, k)
        name = self.state.data.keypoints.names[k]
        if current is not None and not current.visible:
            new, text = None, f"Mark {name} of animal {track} visible"
        else:
            new, text = Correction.hidden(), f"Mark {name} of animal {track} occluded"
        self.undo_stack.push(SetKeypoint(self.state, self.state.frame, track, k, new, text))

    def reset_keypoint(self) -> None:
        """Drop the correction of the selected keypoint: back to the prediction (R)."""
        chosen = self._selected_keypoint()
        if chosen is None or self.state.data.correction(self.state.frame, *chosen) is None:
            return
        track, k = chosen
        name = self.state.data.keypoints.names[k]
        self.undo_stack.push(SetKeypoint(self.state, self.state.frame, track, k, None,
                                         f"Reset {name} of animal {track}"))

    def accept_instance(self) -> None:
        """Take the current animal's keypoints in this frame, as shown, as labels (A).

        For predictions that are right already: every keypoint that is not corrected or
        marked occluded yet becomes a correction at its shown (raw or smoothed) position, so
        the whole animal is training data, not only the keypoints that were dragged.
        """
        s = self.state
        track = s.selection.track
        if track is None or not s.editable:
            return
        inst = s.data.instance(s.frame, track, s.coordinates)
        if inst is None:
            return
        todo = {k: Correction(float(inst.xy[k, 0]), float(inst.xy[k, 1]))
                for k in range(len(inst.xy))
                if not inst.corrected[k] and np.isfinite(inst.xy[k]).all()}
        if todo:
            self.undo_stack.push(SetKeypoints(s, s.frame, track, todo,
                                              f"Accept {len(todo)} keypoints of animal "
                                              f"{track} as labels"))

    def delete_instance(self) -> None:
        """Delete the current animal in this frame only (Delete)."""
        track, f = self.state.selection.track, self.state.frame
        if track is not None and self.state.editable and \
                self.state.data.instance(f, track) is not None:
            self.undo_stack.push(DeleteInstances(self.state, track, f, f,
                                                 f"Delete animal {track} in frame {f}"))

    def delete_track(self) -> None:
        """Delete the current animal's whole track, e.g. a false detection (Shift+Delete)."""
        track = self.state.selection.track
        if track is not None and self.state.editable:
            self.undo_stack.push(DeleteInstances(self.state, track, 0, None,
                                                 f"Delete animal {track}"))

    def delete_track_after(self) -> None:
        """Delete the current animal from this frame to its end (Ctrl+Delete)."""
        track, f = self.state.selection.track, self.state.frame
        if track is not None and self.state.editable:
            self.undo_stack.push(DeleteInstances(self.state, track, f, None,
                                                 f"Delete animal {track} from frame {f}"))

    def add_instance(self, at: tuple[float, float] | None = None,
                     centre: tuple[float, float] | None = None) -> int | None:
        """Add an animal the detector missed in this frame (Ctrl+I); returns its track id.

        If the current animal is absent here (a missed detection inside its track), it is
        added with its shape from the nearest frame where it is present; otherwise a new
        animal gets the next free id. ``at`` (frame pixels, e.g. where the user right-clicked)
        centres the new keypoints, else ``centre`` does for a new animal (e.g. the pointer);
        they are not labels until the user drags them.
        """
        s = self.state
        if s.data is None or not s.editable or s.video_info is None:
            return None
        current = s.selection.track
        if current is not None and s.data.instance(s.frame, current) is None:
            track, text = current, f"Add animal {current} in frame {s.frame}"
        else:
            track = max(s.data.track_ids, default=0) + 1
            text = f"Add new animal {track} in frame {s.frame}"
            at = at or centre
        if not s.store.complete:
            self.report_error("Add animal", "resume the run first (Run → Run pipeline): when it "
                              "finishes it re-links the tracks, and an added animal would be "
                              "dropped as too short a track")
            return None
        if not s.store.has_frame(s.frame):
            self.report_error("Add animal", f"frame {s.frame} was not processed by the run "
                              "(it is outside --start/--end); animals can be added only to "
                              "processed frames")
            return None
        size = (s.video_info.width, s.video_info.height)
        xy, box = place_instance(s.data, s.frame, track, at, size)
        self.undo_stack.push(AddInstance(s, track, xy, box, text))
        return track

    def _partner(self, title: str, candidates: list[int]) -> int | None:
        """The second animal of a swap or merge: the other selected one, else asked for."""
        selected = self.state.selection.tracks
        if len(selected) >= 2:
            return selected[1]
        if len(candidates) == 1:
            return candidates[0]
        return self.choose_track(title, candidates) if candidates else None

    def swap_tracks(self) -> None:
        """Exchange the current animal's identity with another's from this frame on (Ctrl+T)."""
        s = self.state
        a = s.selection.track
        if a is None or not s.editable:
            return
        others = [t for t in s.data.tracks_at(s.frame) if t != a]
        b = self._partner("Swap animals", others or [t for t in s.data.track_ids if t != a])
        if b is None:
            self.report_error("Swap animals", "select two animals (Ctrl+click in the animal "
                              "list) to swap their identities from this frame on")
            return
        self.undo_stack.push(SwapTracks(s, a, b, s.frame))

    def merge_tracks(self) -> None:
        """Give another animal's track the current animal's id (Ctrl+M)."""
        s = self.state
        keep = s.selection.track
        if keep is None or not s.editable:
            return
        candidates = [t for t in s.data.track_ids if t != keep and s.data.shared_frames(
            keep, t) == 0]
        other = self._partner("Merge animals", candidates)
        if other is None:
            self.report_error("Merge animals", "select two animals that are never in the same "
                              "frame (Ctrl+click in the animal list) to merge them")
            return
        shared = s.data.shared_frames(keep, other)
        if shared:
            self.report_error("Merge animals", f"animals {keep} and {other} are both present "
                              f"in {shared} frames; swap or delete one of them there first")
            return
        self.undo_stack.push(MergeTracks(s, keep, other))
