"""Review-queue state kept in the result store: which items are fixed or look right.

A table of its own (``review_marks``) beside the store's tables, written through the store's
transaction helper, so the state survives closing the GUI and travels with the results. A
row keeps the whole item (frames, animal, reason, score, detail) because an item that was
fixed is no longer flagged and could not be rebuilt from the tracks; the queue still counts
it as reviewed (``12 / 39 reviewed``).
"""

from __future__ import annotations

import sqlite3
import time

from clamp_track.pipelines.qc import Reason, Status, Suspect

_TABLE = """
CREATE TABLE IF NOT EXISTS review_marks (
    reason TEXT NOT NULL, track INTEGER NOT NULL, frame INTEGER NOT NULL,
    end_frame INTEGER NOT NULL, status TEXT NOT NULL, score REAL NOT NULL,
    detail TEXT NOT NULL, keypoint INTEGER, other INTEGER, marked_at REAL NOT NULL,
    PRIMARY KEY (reason, track, frame))
"""


def read_marks(store) -> dict[tuple, tuple[Suspect, Status]]:
    """Every marked item, by :meth:`ReviewQueue.key`, with its status ({} if none yet).

    Rows with an unknown reason or status (a newer clamp-track) are skipped.
    """
    try:
        rows = store._db.execute(
            "SELECT reason, track, frame, end_frame, status, score, detail, keypoint, other "
            "FROM review_marks").fetchall()
    except sqlite3.OperationalError:  # no table: nothing marked yet (or a read-only old file)
        return {}
    out = {}
    for reason, track, frame, end, status, score, detail, keypoint, other in rows:
        try:
            suspect = Suspect(int(frame), int(end), int(track), Reason(reason), float(score),
                              detail, keypoint, other)
            out[(suspect.frame, suspect.track, suspect.reason)] = (suspect, Status(status))
        except ValueError:
            continue
    return out


def write_marks(store, marks: dict[tuple, tuple[Suspect, Status] | None]) -> None:
    """Set (or, with None, drop) the marks of some items, in one transaction."""
    if not marks:
        return
    now = time.time()
    with store._transaction() as db:
        db.execute(_TABLE)
        for key, value in marks.items():
            frame, track, reason = key
            if value is None or value[1] is Status.OPEN:
                db.execute("DELETE FROM review_marks WHERE reason = ? AND track = ? AND "
                           "frame = ?", (reason.value, track, frame))
                continue
            s, status = value
            db.execute(
                "INSERT OR REPLACE INTO review_marks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (s.reason.value, s.track, s.frame, s.end, status.value, s.score, s.detail,
                 s.keypoint, s.other, now))
