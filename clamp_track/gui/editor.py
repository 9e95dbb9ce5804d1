"""Edit gestures → checked undo commands.

:class:`Editor` is what the window's edit actions and the frame view's drags call. It checks
that an edit makes sense (something selected, the results writable, two tracks that may be
merged), says why not in one line otherwise, and pushes the matching undo command
(:mod:`clamp_track.gui.undo`) on the stack, which performs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from PyQt6.QtCore import QObject
from PyQt6.QtGui import QUndoStack

from clamp_track.gui.state import ReviewState
from clamp_track.gui.undo import (
    AddInstance,
    DeleteInstances,
    MarkItem,
    MergeTracks,
    SetKeypoint,
    SetKeypoints,
    SwapTracks,
)
from clamp_track.io.labels import added_instance_box
from clamp_track.pipelines.qc import Action, Reason, Status, Suggestion, Suspect, pair_name
from clamp_track.pipelines.review import (
    Correction,
    gap_proposals,
    is_proposal,
    place_instance,
)


class Editor(QObject):
    """Turns the user's edits into undo commands on ``state``.

    Args:
        state: The session.
        undo_stack: Where commands go.
        report_error: Called with ``(title, one-line message)`` when an edit is refused.
        choose_track: Asks the user to pick one of several animals ``(title, candidates)``;
            returns None if cancelled (or when nobody can be asked).
        confirm: Asks a yes/no question ``(title, question)`` before an edit that throws
            away the user's work (default: always yes).
    """

    def __init__(self, state: ReviewState, undo_stack: QUndoStack,
                 report_error: Callable[[str, str], None],
                 choose_track: Callable[[str, list[int]], int | None], parent=None,
                 confirm: Callable[[str, str], bool] | None = None):
        super().__init__(parent)
        self.state, self.undo_stack = state, undo_stack
        self.report_error, self.choose_track = report_error, choose_track
        self.confirm = confirm or (lambda title, question: True)

    def move_keypoint(self, track: int, keypoint: int, x: float, y: float) -> bool:
        """A dragged keypoint was dropped at ``(x, y)``; False if the results are read-only."""
        if not self.state.editable:
            return False
        name = self.state.data.keypoints.source_names[keypoint]
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
        name = self.state.data.keypoints.source_names[k]
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
        name = self.state.data.keypoints.source_names[k]
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

    def _delete(self, track: int, first: int, last: int | None, text: str) -> None:
        """Delete ``[first, last]`` of a track, asking first if it holds corrections."""
        frames = self.state.data.corrected_frames(track)
        lost = frames[(frames >= first) & (frames <= (last if last is not None else 2**62))]
        if len(lost) and not self.confirm(
                "Delete animal", f"Animal {track} has corrections in {len(lost)} "
                f"frame{'s' if len(lost) > 1 else ''} there ({_frame_list(lost)}); delete "
                "them too? (Ctrl+Z brings them back.)"):
            return
        self.undo_stack.push(DeleteInstances(self.state, track, first, last, text))

    def delete_instance(self) -> None:
        """Delete the current animal in this frame only (Delete)."""
        track, f = self.state.selection.track, self.state.frame
        if track is not None and self.state.editable and \
                self.state.data.instance(f, track) is not None:
            self._delete(track, f, f, f"Delete animal {track} in frame {f}")

    def delete_track(self) -> None:
        """Delete the current animal's whole track, e.g. a false detection (Shift+Delete)."""
        track = self.state.selection.track
        if track is not None and self.state.editable:
            self._delete(track, 0, None, f"Delete animal {track}")

    def delete_track_after(self) -> None:
        """Delete the current animal from this frame to its end (Ctrl+Delete)."""
        track, f = self.state.selection.track, self.state.frame
        if track is not None and self.state.editable:
            self._delete(track, f, None, f"Delete animal {track} from frame {f}")

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

    def swap_tracks_until(self, last: int) -> None:
        """Exchange two animals' identities from this frame to ``last`` only.

        Two swaps in one undo step: from this frame on, then back from ``last + 1`` on.
        """
        s = self.state
        a, first = s.selection.track, s.frame
        if a is None or not s.editable:
            return
        if last < first:
            self.report_error("Swap animals", f"frame {last} is before this frame ({first}); "
                              "go to the first frame of the mix-up and swap until a later one")
            return
        others = [t for t in s.data.tracks_at(s.frame) if t != a]
        b = self._partner("Swap animals", others or [t for t in s.data.track_ids if t != a])
        if b is None:
            self.report_error("Swap animals", "select two animals (Ctrl+click in the animal "
                              "list) to swap their identities")
            return
        with self._macro(f"Swap animals {a} and {b} on frames {first}–{last}"):
            self.undo_stack.push(SwapTracks(s, a, b, first))
            self.undo_stack.push(SwapTracks(s, a, b, last + 1))
        s.set_frame(first)

    def merge_tracks(self, keep_current: bool = False) -> None:
        """Merge two animals that are never in the same frame: one track broken in two (Ctrl+M).

        The merged track keeps the lower id (the first animal, in id order), or the current
        animal's id with ``keep_current`` (Ctrl+Shift+M: the user's choice).
        """
        s = self.state
        current = s.selection.track
        if current is None or not s.editable or current not in s.data.tracks:
            return
        candidates = [t for t in s.data.track_ids if t != current and s.data.shared_frames(
            current, t) == 0]
        other = self._partner("Merge animals", candidates)
        if other is None:
            self.report_error("Merge animals", "select two animals that are never in the same "
                              "frame (Ctrl+click in the animal list) to merge them")
            return
        keep, gone = (current, other) if keep_current else sorted((current, other))
        self.merge(keep, gone)

    def merge(self, keep: int, other: int) -> bool:
        """Give ``other``'s frames the id ``keep``; False (after saying why) if they overlap."""
        if keep not in self.state.data.tracks or other not in self.state.data.tracks:
            return False
        shared = self.state.data.shared_frames(keep, other)
        if shared:
            self.report_error("Merge animals", f"animals {keep} and {other} are both present "
                              f"in {shared} frames; swap or delete one of them there first")
            return False
        self.undo_stack.push(MergeTracks(self.state, keep, other))
        return True

    # ------------------------------------------------------------------ left / right
    def swap_pair(self, track: int, a: int, b: int, first: int, last: int,
                  text: str | None = None) -> int:
        """Exchange keypoints ``a`` and ``b`` of an animal on frames ``[first, last]``.

        Each frame's two keypoints become corrections at each other's shown positions (an
        occluded mark moves with its keypoint); one undo step. Returns the frames changed.
        """
        s = self.state
        if not s.editable or track not in s.data.tracks:
            return 0
        frames = self._frames_of(track, first, last)
        if not len(frames):
            return 0
        names = s.data.keypoints.source_names
        with self._macro(text or f"Swap {pair_name(names[a], names[b])} of animal "
                         f"{track} on {len(frames)} frames"):
            for f in frames:
                inst = s.data.instance(int(f), track, s.coordinates)
                todo = {}
                for k, src in ((a, b), (b, a)):
                    if inst.hidden[src]:
                        todo[k] = Correction.hidden()
                    else:
                        todo[k] = Correction(float(inst.xy[src, 0]), float(inst.xy[src, 1]))
                self.undo_stack.push(SetKeypoints(s, int(f), track, todo, "swap"))
        s.set_frame(int(frames[0]) if first <= s.frame <= last else s.frame)
        return len(frames)

    def swap_selected_pair(self, from_here: bool = False) -> None:
        """Exchange the selected keypoint with its partner: here (X) or from here on (Shift+X).

        "From here on" ends before the swap back (the next left/right item of this pair in the
        review queue), else at the end of the track.
        """
        s = self.state
        track, k = s.selection.track, s.selection.keypoint
        if track is None or not s.editable or s.data.instance(s.frame, track) is None:
            return
        pairs = dict(s.data.keypoints.flip_pairs)
        pairs.update({b: a for a, b in s.data.keypoints.flip_pairs})
        if k is None or k not in pairs:
            self.report_error("Swap left/right", "select a left or right keypoint first "
                              "(click it, or pick it in the keypoint list)")
            return
        left, right = sorted((k, pairs[k]))
        last = s.frame
        if from_here:
            arrays = s.data.tracks[track]
            last = int(arrays.frames[-1])
            back = [e.frame for e in s.suspects if e.reason is Reason.LEFT_RIGHT_SWAP and
                    e.track == track and e.keypoint in (left, right) and e.frame > s.frame]
            if back:
                last = min(back) - 1
        self.swap_pair(track, left, right, s.frame, last)

    @contextmanager
    def _macro(self, text: str) -> Iterator[None]:
        """One undo step of several edits, scored by the review queue once (its result)."""
        with self.state.batch():
            self.undo_stack.beginMacro(text)
            try:
                yield
            finally:
                self.undo_stack.endMacro()

    # ------------------------------------------------------------------ queue actions
    def apply(self, suspect: Suspect, suggestion: Suggestion) -> bool:
        """Do a review-queue item's suggested fix, and mark the item fixed (one undo step).

        FIX_KEYPOINT and CHECK change nothing here (the window arms placing or just shows the
        item); False for those, and when the edit was refused.
        """
        s, g = self.state, suggestion
        if not s.editable or g.action in (Action.FIX_KEYPOINT, Action.CHECK):
            return False
        if g.action is Action.MERGE and (not {g.track, g.other} <= set(s.data.tracks) or
                                         s.data.shared_frames(g.track, g.other)):
            return self.merge(g.track, g.other)  # refused (with the reason if they overlap)
        if g.action is Action.SWAP_PAIR and not len(self._frames_of(g.track, g.first, g.last)):
            return False
        with self._macro(g.label):
            if g.action is Action.MERGE:
                self.merge(g.track, g.other)
            elif g.action is Action.SWAP_TRACKS:
                self.undo_stack.push(SwapTracks(s, g.track, g.other, g.first))
            elif g.action is Action.SWAP_PAIR:
                self.swap_pair(g.track, g.keypoint, g.partner, g.first, g.last)
            self.undo_stack.push(MarkItem(s, suspect, Status.FIXED, g.label))
        return True

    def _frames_of(self, track: int, first: int, last: int) -> np.ndarray:
        """The frames of ``[first, last]`` where ``track`` is present."""
        arrays = self.state.data.tracks.get(track)
        if arrays is None:
            return np.zeros(0, np.int64)
        return arrays.frames[(arrays.frames >= first) & (arrays.frames <= last)]

    # ------------------------------------------------------------------ gaps
    def propose_gap(self) -> int:
        """Fill the current animal's gap here with interpolated proposals (Ctrl+G).

        The frames between its two nearest frames get keypoints linear in time between them
        (labelled positions where the user labelled them). They are proposals, like an added
        animal: not labels until accepted (A on a frame, or Accept proposals). Returns the
        frames proposed.
        """
        s = self.state
        track = s.selection.track
        if track is None or not s.editable:
            return 0
        proposal = gap_proposals(s.data, track, s.frame)
        if proposal is None:
            self.report_error("Interpolate gap", f"animal {track} has no gap of a few frames "
                              f"at frame {s.frame}: go to a frame where it is missing between "
                              "two frames where it is present")
            return 0
        if not s.store.complete:
            self.report_error("Interpolate gap", "resume the run first (Run → Run pipeline)")
            return 0
        size = (s.video_info.width, s.video_info.height)
        frames = [(int(f), xy) for f, xy in zip(proposal.frames, proposal.xy)
                  if s.store.has_frame(int(f))]
        if not frames:
            return 0
        with self._macro(f"Interpolate animal {track} on "
                         f"{len(frames)} frames ({frames[0][0]}–{frames[-1][0]})"):
            for f, xy in frames:
                self.undo_stack.push(AddInstance(s, track, xy, added_instance_box(xy, size),
                                                 f"Propose animal {track} in frame {f}", frame=f))
        s.set_frame(frames[0][0], force=True)
        return len(frames)

    def accept_proposals(self) -> int:
        """Take every proposal of the current animal as labels (Ctrl+Shift+A)."""
        s = self.state
        track = s.selection.track
        if track is None or not s.editable:
            return 0
        frames = [int(f) for f in s.data.tracks[track].frames if is_proposal(s.data, int(f),
                                                                              track)]
        if not frames:
            return 0
        with self._macro(f"Accept {len(frames)} proposed frames of animal {track}"):
            for f in frames:
                inst = s.data.instance(f, track)
                todo = {k: Correction(float(x), float(y)) for k, (x, y) in enumerate(inst.xy)}
                self.undo_stack.push(SetKeypoints(s, f, track, todo, "accept"))
        return len(frames)


def _frame_list(frames, most: int = 5) -> str:
    """``"frames 3, 7, 9"`` or ``"frames 3, 7, 9, … 120"``."""
    shown = [str(int(f)) for f in frames[:most]]
    if len(frames) > most:
        shown[-1:] = ["…", str(int(frames[-1]))]
    return ("frame " if len(frames) == 1 else "frames ") + ", ".join(shown)
