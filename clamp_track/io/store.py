"""The result store: one SQLite file per video (``<video>.clamp.sqlite``).

It holds everything a run produces and everything a user corrects, so the GUI, the exports,
resuming and fine-tuning all read the same file:

* ``meta``: JSON values (resolved run config, model, keypoint set, video info, status);
* ``frames``: every processed frame with its real timestamp;
* ``instances``: one row per (frame, track): the box and the keypoints, raw and smoothed, as
  float32 ``(K, 3)`` blobs (``x, y, confidence`` and ``x, y, variance``) — compact and fast to
  load for long videos;
* ``corrections``: the user's keypoint edits, kept apart from the predictions (which are never
  overwritten), so corrected frames are known exactly and become training data;
* ``edits``: a log of identity edits (swap, merge, delete).

The file uses WAL journaling; every write is one transaction, so a killed process leaves the
store at its last commit and a run resumes from there. The WAL is folded back into the file
(checkpointed) when a writer closes the store and when a store left with a WAL by a crash is
opened, so that the one ``.clamp.sqlite`` file a user sees and copies holds all the data.

A run builds its store under a hidden working name beside the final one
(:func:`partial_path`) and moves it into place only when it is complete
(:meth:`ResultStore.commit_to`), so a finished store is never replaced by a run that fails or is
stopped. :func:`store_lock` keeps two processes from working on one video's store at once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clamp_track.errors import InputError
from clamp_track.skeleton import KeypointSet
from clamp_track.types import PosePredictions, VideoInfo

SCHEMA_VERSION = 1
SUFFIX = ".clamp.sqlite"
VIDEO_REF = "video_ref"  # meta key of the link to the video (io.video_ref)
# Frames on each side of a swap whose boxes identify the animals in a re-run.
_SWAP_WINDOW = 30

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS frames (
    frame INTEGER PRIMARY KEY, time_s REAL NOT NULL, detected INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS instances (
    frame INTEGER NOT NULL, track INTEGER NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    box_score REAL NOT NULL, raw BLOB NOT NULL, smooth BLOB,
    PRIMARY KEY (frame, track));
CREATE INDEX IF NOT EXISTS instances_by_track ON instances (track, frame);
CREATE TABLE IF NOT EXISTS corrections (
    frame INTEGER NOT NULL, track INTEGER NOT NULL, keypoint INTEGER NOT NULL,
    x REAL, y REAL, visible INTEGER NOT NULL, edited_at REAL NOT NULL,
    PRIMARY KEY (frame, track, keypoint));
CREATE TABLE IF NOT EXISTS edits (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
    detail TEXT NOT NULL);
"""


def store_path(video: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """``<video>.clamp.sqlite`` beside the video, or in ``out_dir``."""
    video = Path(video)
    return Path(out_dir or video.parent) / (video.name + SUFFIX)


def partial_path(path: str | os.PathLike) -> Path:
    """The hidden working file a run builds the store ``path`` in (``.<name>.partial``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@contextmanager
def store_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the exclusive lock of the store ``path`` (and its working file) inside the block.

    The lock is an OS file lock (``flock``) on a hidden ``.<name>.lock`` file beside the
    store, holding the process id; the file is removed when the block ends. The OS releases
    the lock when the process ends, however it ends, so a killed run never leaves the store
    locked (only the stale file, which the next run takes over). Where ``flock`` is
    unavailable (Windows) the block runs unlocked.

    Raises:
        InputError: Another process holds the lock (naming its process id).
    """
    path = Path(path)
    lock = _lock_path(path)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield path
        return
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise InputError(f"{lock}: cannot create the lock file of {path.name} "
                             f"({exc.strerror}); choose another output folder with -o DIR"
                             ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise InputError(f"{path}: another clamp-track (process {holder}) is working on "
                             "this video's results; wait until it ends, or write elsewhere "
                             "with -o DIR") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed that file as we opened it: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        Path(lock).unlink(missing_ok=True)  # while still holding it: the next run makes a new one
        os.close(fd)


def _sqlite_error(path: Path, exc: sqlite3.Error) -> InputError:
    """A one-line error for a failure of SQLite itself (disk full, locked, corrupt)."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return InputError(f"{path}: the result store is in use by another program (database is "
                          "locked); close it there (e.g. the review window) and try again")
    if "full" in text or "I/O error" in text:
        return InputError(f"{path}: the disk is full; free some space and run the command "
                          "again (a run continues with --resume)")
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return InputError(f"{path}: the result store is damaged ({text}); re-run the video with "
                          "--overwrite")
    return InputError(f"{path}: cannot write the result store ({text}); check the disk and the "
                      "folder's permissions")


def fold_wal(path: str | os.PathLike) -> None:
    """Fold a WAL that a crashed writer left beside ``path`` back into the file (best effort).

    Nothing happens when there is no WAL, the folder or file is read-only, or another process
    holds the store (its own close folds the WAL in).
    """
    path = Path(path)
    wal = Path(str(path) + "-wal")
    try:
        if (not wal.is_file() or wal.stat().st_size == 0 or not os.access(path, os.W_OK)
                or not os.access(path.parent, os.W_OK)):
            return
    except OSError:
        return
    try:
        db = sqlite3.connect(path, timeout=0.2)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
    except sqlite3.Error:
        pass  # locked by a live writer, or not a store: opening it says what is wrong


def _fits(blob, size: int) -> bool:
    return isinstance(blob, bytes) and len(blob) == size


def _blob(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=np.float32).tobytes()


@dataclass(frozen=True)
class Snapshot:
    """Rows of one track copied out of the store, to put back later (undo of a delete).

    Attributes:
        track: The track the rows belong to.
        instances: ``instances`` rows, all columns in table order.
        corrections: ``corrections`` rows, all columns in table order.
        rule: The rule the delete recorded, dropped when the rows are put back.
    """

    track: int
    instances: tuple[tuple, ...]
    corrections: tuple[tuple, ...]
    rule: int | None = None  # the rule the delete recorded (dropped again by an undo)


class ResultStore:
    """Read and write one video's results.

    Open with :meth:`create` (a new run) or :meth:`open` (resume, review, export). Use as a
    context manager or call :meth:`close`.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection, readonly: bool = False):
        self.path = path
        self.readonly = readonly
        self._db = connection
        self._meta_cache: dict = {}
        self._keypoints: KeypointSet | None = None
        self._closed = False

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, path: str | os.PathLike, meta: dict) -> ResultStore:
        """Create a new store (replacing an existing file) with the given metadata."""
        path = Path(path)
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        store = None
        try:
            store = cls(path, cls._connect(path))
            store._db.executescript(_SCHEMA)  # (executescript manages its own transaction)
            with store._transaction():
                store._set_meta({"schema_version": SCHEMA_VERSION, "status": "running", **meta})
        except (sqlite3.Error, InputError) as exc:
            if store is not None:
                store._db.close()
            for suffix in ("", "-wal", "-shm"):  # nothing half-made stays behind
                Path(str(path) + suffix).unlink(missing_ok=True)
            if isinstance(exc, InputError):
                raise
            raise _sqlite_error(path, exc) from None
        return store

    @classmethod
    def open(cls, path: str | os.PathLike, readonly: bool = False,
             check: bool = False) -> ResultStore:
        """Open an existing store; a missing, foreign or corrupt file is a one-line error.

        A WAL left beside the file by a crash is folded back into it first (when the folder is
        writable), so that the file alone holds the data from then on.

        Args:
            path: The ``.clamp.sqlite`` file.
            readonly: Open without write access.
            check: Also run SQLite's ``PRAGMA quick_check`` over the whole file (seconds for a
                long video), as the exports and fine-tuning do before trusting its contents.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: result store not found; run `clamp-track run` first")
        store = None
        try:
            fold_wal(path)
            store = cls(path, cls._connect(path, readonly), readonly)
            version = store.meta("schema_version")
            if check:
                problems = [r[0] for r in store._db.execute("PRAGMA quick_check").fetchall()]
                if problems != ["ok"]:
                    raise sqlite3.DatabaseError(f"quick_check: {problems[0]}")
        except sqlite3.DatabaseError as exc:
            if store is not None:
                store._db.close()
            raise InputError(
                f"{path}: not a clamp-track result store or corrupt ({exc}); re-run the video "
                "with --overwrite"
            ) from None
        except InputError:
            store._db.close()
            raise
        if version != SCHEMA_VERSION:
            store._db.close()
            raise InputError(f"{path}: store schema {version} is not supported (expects "
                             f"{SCHEMA_VERSION}); re-run the video with this clamp-track")
        return store

    @staticmethod
    def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
        if readonly:
            db = ResultStore._connect_readonly(path)
        else:
            db = sqlite3.connect(path, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.isolation_level = None  # explicit transactions only
        return db

    @staticmethod
    def _connect_readonly(path: Path) -> sqlite3.Connection:
        """A connection that cannot write the store, opened the tidiest way that works.

        First read-only through SQL but able to tidy up (the last connection to close removes
        the -wal/-shm files, so looking at a store leaves no files behind); then SQLite's
        read-only mode; then, where even that cannot start (a full disk: no room for the -shm
        file), the file read as immutable.
        """
        attempts = []
        if os.access(path, os.W_OK) and os.access(path.parent, os.W_OK):
            attempts.append((str(path), False, "PRAGMA query_only=1"))
        attempts += [(f"file:{path}?mode=ro", True, None),
                     (f"file:{path}?mode=ro&immutable=1", True, None)]
        error = None
        for target, uri, pragma in attempts:
            db = sqlite3.connect(target, uri=uri, check_same_thread=False)
            try:
                if pragma:
                    db.execute(pragma)
                db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                return db
            except sqlite3.DatabaseError as exc:
                db.close()
                error = exc
                if "I/O" not in str(exc) and "readonly" not in str(exc) and \
                        "unable to open" not in str(exc):
                    raise
        raise error

    def close(self) -> None:
        """Close the connection (the data are already committed) and fold the WAL back in.

        A transaction still open (an interruption between its start and its guard) holds
        nothing committed: it is rolled back, so that the WAL can be folded in. Closing twice
        is harmless.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if not self.readonly:
                self.checkpoint()
        finally:
            self._db.close()

    def checkpoint(self) -> None:
        """Fold the WAL back into the store file (a commit boundary: the file alone is whole).

        Raises:
            InputError: The disk is full or the store is locked by another program.
        """
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise _sqlite_error(self.path, exc) from None

    def commit_to(self, final: str | os.PathLike) -> Path:
        """Close this (working) store and move it to ``final``, replacing what is there.

        The WAL is folded in first and the old store's own WAL files are removed, so the new
        file is whole on its own; the move is one ``os.replace``: ``final`` is always either
        the old store or the new one.

        Returns:
            ``final``.
        """
        final = Path(final)
        self.close()
        if final != self.path:
            for suffix in ("-wal", "-shm"):
                Path(str(final) + suffix).unlink(missing_ok=True)
            os.replace(self.path, final)
            for suffix in ("-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
        return final

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _transaction(self):
        try:
            # BEGIN is inside the guarded block: a Ctrl+C delivered while it waited for the
            # lock is raised once it returns, with the transaction already open
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _sqlite_error(self.path, exc) from None
            yield self._db
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _sqlite_error(self.path, exc) from None
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise _sqlite_error(self.path, exc) from None

    # ------------------------------------------------------------------ metadata
    def meta(self, key: str, default=None):
        """A metadata value (JSON-decoded)."""
        if key not in self._meta_cache:
            try:
                row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            except sqlite3.OperationalError as exc:  # no meta table: not our file
                raise sqlite3.DatabaseError(str(exc)) from None
            if row is None:
                return default
            try:
                self._meta_cache[key] = json.loads(row[0])
            except (TypeError, ValueError):
                raise InputError(f"{self.path}: its metadata {key!r} is not valid JSON (the "
                                 "file was edited or damaged); re-run the video with --overwrite"
                                 ) from None
        return self._meta_cache[key]

    def set_meta(self, **values) -> None:
        """Store metadata values (JSON-encodable), in one transaction."""
        with self._transaction():
            self._set_meta(values)

    def _set_meta(self, values: dict) -> None:
        texts = {k: json.dumps(v) for k, v in values.items()}
        self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             list(texts.items()))
        for key in texts:  # read back (and cached) when asked for: what the file holds
            self._meta_cache.pop(key, None)

    @property
    def keypoints(self) -> KeypointSet:
        """The keypoint set of the stored predictions."""
        if self._keypoints is None:
            try:
                self._keypoints = KeypointSet.from_dict(self.meta("keypoints"))
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - any malformed value is the same error
                raise self._bad_meta("keypoints", exc) from None
        return self._keypoints

    @property
    def video_info(self) -> VideoInfo:
        """The video the results belong to (``path``: its absolute path when last found)."""
        try:
            info = dict(self.meta("video"))
            ref = self.meta(VIDEO_REF)
            if ref is not None:
                info["path"] = ref["absolute"]
            return VideoInfo(**info)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any malformed value is the same error
            raise self._bad_meta("video", exc) from None

    def _bad_meta(self, key: str, exc: Exception) -> InputError:
        what = "missing" if self.meta(key) is None else f"malformed ({type(exc).__name__})"
        return InputError(f"{self.path}: its {key!r} metadata is {what}; the file was edited "
                          "or damaged: re-run the video with --overwrite")

    @property
    def video_ref(self):
        """The store's link to its video (:class:`~clamp_track.io.video_ref.VideoRef`)."""
        from clamp_track.io.video_ref import VideoRef

        return VideoRef.from_meta(self.meta(VIDEO_REF), self.meta("video") or {}, self.path)

    def set_video_ref(self, ref) -> None:
        """Record where the video is now (see :func:`~clamp_track.io.video_ref.resolve_video`)."""
        self.set_meta(**{VIDEO_REF: ref.to_dict()})

    def forget_cached_meta(self) -> None:
        """Read metadata afresh (another connection changed it)."""
        self._meta_cache.clear()

    # ------------------------------------------------------------------ track names
    def track_names(self) -> dict[int, str]:
        """Names the user gave tracks (``{track: "female"}``); unnamed tracks are absent."""
        return {int(t): str(n) for t, n in (self.meta("track_names") or {}).items()}

    def set_track_name(self, track: int, name: str | None) -> None:
        """Name a track (None or blank: remove its name).

        Raises:
            InputError: Another track has the name, or it holds ``/`` (exports use names as
                DeepLabCut individuals, SLEAP tracks and NWB object names).
        """
        names = {str(t): n for t, n in self.track_names().items()}
        name = (name or "").strip()
        if "/" in name:
            raise InputError(f"{self.path.name}: a track name cannot hold '/' ({name!r})")
        taken = [t for t, n in names.items() if n == name and t != str(int(track))]
        if name and taken:
            raise InputError(f"{self.path.name}: track {taken[0]} is already named {name!r}; "
                             "choose another name")
        if name:
            names[str(int(track))] = name
        else:
            names.pop(str(int(track)), None)
        self.set_meta(track_names=names)

    # ------------------------------------------------------------------ edit rules
    def rules(self) -> list[dict]:
        """Identity and visibility edits as rules, in the order made (replayed on re-runs)."""
        return list(self.meta("rules") or [])

    def _add_rule(self, rule: dict) -> int:
        rules = self.rules()
        rule_id = 1 + max([r["id"] for r in rules], default=0)
        self._set_meta({"rules": [*rules, {"id": rule_id, **rule}]})
        return rule_id

    def _drop_rule(self, rule_id: int | None) -> None:
        if rule_id is not None:
            self._set_meta({"rules": [r for r in self.rules() if r["id"] != rule_id]})

    def track_signature(self, track: int, first: int = 0, last: int | None = None,
                        limit: int = 64) -> dict[str, list[float]]:
        """Boxes of ``track`` in ``[first, last]`` by frame (at most ``limit``, evenly spread).

        What finds the same animal among a re-run's tracks (:mod:`clamp_track.pipelines.replay`).
        """
        rows = self._db.execute(
            "SELECT frame, x1, y1, x2, y2 FROM instances WHERE track = ? AND frame BETWEEN ? "
            "AND ? ORDER BY frame", (track, first, 2**62 if last is None else last)).fetchall()
        if len(rows) > limit:
            rows = [rows[int(i)] for i in np.linspace(0, len(rows) - 1, limit).round()]
        return {str(r[0]): [round(float(v), 2) for v in r[1:]] for r in rows}

    @property
    def complete(self) -> bool:
        """Whether the run finished (tracks finalised, smoothing done)."""
        return self.meta("status") == "complete"

    # ------------------------------------------------------------------ pipeline writes
    def write_chunk(
        self,
        frames: Iterable[tuple[int, float, bool]],
        poses: Iterable[PosePredictions],
        state: dict | None = None,
    ) -> None:
        """Commit processed frames and their instances in one transaction.

        Args:
            frames: ``(frame index, time in seconds, detector ran)`` per processed frame.
            poses: The predictions of those frames.
            state: Metadata to store in the same transaction (e.g. the resume state).
        """
        rows = []
        for pose in poses:
            raw = np.concatenate([pose.keypoints, pose.scores[..., None]], axis=-1)  # (N, K, 3)
            for i, track in enumerate(pose.track_ids):
                rows.append((pose.frame_index, int(track), *map(float, pose.boxes[i]),
                             float(pose.box_scores[i]), _blob(raw[i])))
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO frames (frame, time_s, detected) VALUES (?, ?, ?)",
                [(int(f), float(t), int(d)) for f, t, d in frames],
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO instances (frame, track, x1, y1, x2, y2, box_score, raw) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows,
            )
            if state:
                self._set_meta(state)

    def last_frame(self) -> int | None:
        """The highest processed frame index, or None before the first commit."""
        return self._db.execute("SELECT MAX(frame) FROM frames").fetchone()[0]

    def has_frame(self, frame: int) -> bool:
        """Whether the run processed ``frame``."""
        return self._db.execute("SELECT 1 FROM frames WHERE frame = ?",
                                (int(frame),)).fetchone() is not None

    def frame_times(self) -> tuple[np.ndarray, np.ndarray]:
        """``(frames, times)`` of every processed frame, in order."""
        rows = self._db.execute("SELECT frame, time_s FROM frames ORDER BY frame").fetchall()
        data = np.array(rows, dtype=np.float64).reshape(-1, 2)
        return data[:, 0].astype(np.int64), data[:, 1]

    def remap_tracks(self, mapping: dict[int, int | None]) -> None:
        """Rename tracks (``None`` deletes a track), e.g. after re-linking; one transaction."""
        with self._transaction():
            self._remap(mapping)

    def _remap(self, mapping: dict, min_frame: int = -1) -> None:
        offset = 1 + max([0, *[abs(v) for v in mapping.values() if v is not None],
                          *map(abs, mapping)])
        for table in ("instances", "corrections"):
            for old, new in mapping.items():
                if new is None:
                    self._db.execute(f"DELETE FROM {table} WHERE track = ? AND frame >= ?",
                                     (old, min_frame))
                else:  # two steps through a free range, so swaps and merges never collide
                    self._db.execute(
                        f"UPDATE {table} SET track = ? WHERE track = ? AND frame >= ?",
                        (-(new + offset), old, min_frame))
            self._db.execute(f"UPDATE {table} SET track = -track - ? WHERE track < 0", (offset,))

    def reassign(self, moves, *, forget: int | None = None) -> None:
        """Move single instances to other tracks: ``(frame, track, new track or None)``.

        ``forget``: a rule to drop in the same transaction (undoing a merge).
        """
        with self._transaction():
            self._drop_rule(forget)
            for frame, track, new in moves:
                for table in ("instances", "corrections"):
                    if new is None:
                        self._db.execute(f"DELETE FROM {table} WHERE frame = ? AND track = ?",
                                         (frame, track))
                    else:
                        self._db.execute(
                            f"UPDATE {table} SET track = ? WHERE frame = ? AND track = ?",
                            (new, frame, track))

    def write_smoothed(self, track: int, frames: np.ndarray, xy: np.ndarray, var: np.ndarray):
        """Store smoothed keypoints of one track.

        Args:
            track: Track id.
            frames: (T,) frame indices of the track's instances.
            xy: (T, K, 2) smoothed positions (NaN where not estimated).
            var: (T, K) smoothed position variance in px².
        """
        smooth = np.concatenate([xy, var[..., None]], axis=-1)  # (T, K, 3)
        with self._transaction():
            self._db.executemany(
                "UPDATE instances SET smooth = ? WHERE frame = ? AND track = ?",
                [(_blob(s), int(f), int(track)) for f, s in zip(frames, smooth)],
            )

    # ------------------------------------------------------------------ reading
    def track_ids(self) -> list[int]:
        """All track ids, ascending."""
        rows = self._db.execute("SELECT DISTINCT track FROM instances ORDER BY track")
        return [r[0] for r in rows]

    def track(self, track: int) -> dict[str, np.ndarray]:
        """One track's arrays, ordered by frame.

        Returns:
            Dict with ``frames`` (T,), ``boxes`` (T, 4), ``box_scores`` (T,), ``raw`` (T, K, 3)
            (x, y, confidence) and ``smooth`` (T, K, 3) (x, y, variance; NaN if not smoothed).
        """
        rows = self._db.execute(
            "SELECT frame, x1, y1, x2, y2, box_score, raw, smooth FROM instances "
            "WHERE track = ? ORDER BY frame", (track,),
        ).fetchall()
        return self._arrays(rows)

    def frame_instances(self, frame: int) -> dict[str, np.ndarray]:
        """All instances of one frame (same arrays as :meth:`track`, plus ``tracks``)."""
        rows = self._db.execute(
            "SELECT track, x1, y1, x2, y2, box_score, raw, smooth FROM instances "
            "WHERE frame = ? ORDER BY track", (frame,),
        ).fetchall()
        out = self._arrays(rows)
        out["tracks"] = out.pop("frames")
        return out

    def _arrays(self, rows) -> dict[str, np.ndarray]:
        k = self.keypoints.num_keypoints
        nan = np.full((k, 3), np.nan, np.float32)
        size = k * 3 * 4
        for r in rows:
            if not _fits(r[6], size) or (r[7] is not None and not _fits(r[7], size)):
                raise InputError(f"{self.path}: the keypoints of instance (frame/track {r[0]}) "
                                 f"do not fit its {k}-keypoint set (damaged store); re-run the "
                                 "video with --overwrite")
        return {
            "frames": np.array([r[0] for r in rows], dtype=np.int64),
            "boxes": np.array([r[1:5] for r in rows], dtype=np.float32).reshape(-1, 4),
            "box_scores": np.array([r[5] for r in rows], dtype=np.float32),
            "raw": np.stack([np.frombuffer(r[6], np.float32).reshape(k, 3) for r in rows])
            if rows else np.zeros((0, k, 3), np.float32),
            "smooth": np.stack([np.frombuffer(r[7], np.float32).reshape(k, 3) if r[7] else nan
                                for r in rows]) if rows else np.zeros((0, k, 3), np.float32),
        }

    def tidy(self, corrected: bool = True):
        """All results as a tidy pandas DataFrame, one row per (frame, track, keypoint).

        Columns: ``frame, time_s, track, keypoint`` (the keypoint's dataset spelling), ``x, y,
        confidence`` (raw prediction, or the user's correction with confidence 1 when
        ``corrected``), ``x_smooth, y_smooth, variance`` and ``corrected`` (bool).
        """
        import pandas as pd

        kps = self.keypoints
        frames, times = self.frame_times()
        time_of = dict(zip(frames.tolist(), times.tolist()))
        parts = []
        for track in self.track_ids():
            a = self.track(track)
            t, k = len(a["frames"]), kps.num_keypoints
            raw = a["raw"].copy()
            fixed = np.zeros((t, k), bool)
            if corrected:
                self._apply_corrections(track, a["frames"], raw, fixed)
            parts.append(pd.DataFrame({
                "frame": np.repeat(a["frames"], k),
                "time_s": np.repeat([time_of.get(int(f), np.nan) for f in a["frames"]], k),
                "track": track,
                "keypoint": np.tile(np.array(kps.source_names, dtype=object), t),
                "x": raw[..., 0].ravel(), "y": raw[..., 1].ravel(),
                "confidence": raw[..., 2].ravel(),
                "x_smooth": a["smooth"][..., 0].ravel(), "y_smooth": a["smooth"][..., 1].ravel(),
                "variance": a["smooth"][..., 2].ravel(),
                "corrected": fixed.ravel(),
            }))
        columns = ["frame", "time_s", "track", "keypoint", "x", "y", "confidence", "x_smooth",
                   "y_smooth", "variance", "corrected"]
        if not parts:
            return pd.DataFrame(columns=columns)
        return pd.concat(parts, ignore_index=True).sort_values(
            ["frame", "track"], kind="stable", ignore_index=True)[columns]

    def boxes(self):
        """Boxes as a DataFrame: ``frame, time_s, track, x1, y1, x2, y2, score``."""
        import pandas as pd

        rows = self._db.execute(
            "SELECT i.frame, f.time_s, i.track, i.x1, i.y1, i.x2, i.y2, i.box_score "
            "FROM instances i JOIN frames f ON f.frame = i.frame ORDER BY i.frame, i.track"
        ).fetchall()
        return pd.DataFrame(rows, columns=["frame", "time_s", "track", "x1", "y1", "x2", "y2",
                                           "score"])

    def boxes_in(self, frames) -> list[tuple[int, int, float, float, float, float]]:
        """``(frame, track, x1, y1, x2, y2)`` of every instance in ``frames``."""
        frames = sorted({int(f) for f in frames})
        out: list = []
        for i in range(0, len(frames), 500):  # SQLite's limit on bound parameters
            part = frames[i:i + 500]
            out += self._db.execute(
                "SELECT frame, track, x1, y1, x2, y2 FROM instances WHERE frame IN "
                f"({','.join('?' * len(part))}) ORDER BY frame, track", part).fetchall()
        return out

    # ------------------------------------------------------------------ corrections
    def _apply_corrections(self, track, frames, raw, fixed) -> None:
        index = {int(f): i for i, f in enumerate(frames)}
        for frame, kp, x, y, visible in self._db.execute(
            "SELECT frame, keypoint, x, y, visible FROM corrections WHERE track = ?", (track,)
        ):
            i = index.get(frame)
            if i is None:
                continue
            if not 0 <= kp < raw.shape[1]:
                raise InputError(f"{self.path}: a correction in frame {frame} names keypoint "
                                 f"{kp}, but the set has {raw.shape[1]} (damaged store); delete "
                                 "that correction or re-run the video with --overwrite")
            raw[i, kp] = (x, y, 1.0) if visible else (np.nan, np.nan, 0.0)
            fixed[i, kp] = True

    def set_correction(self, frame: int, track: int, keypoint: int, x: float | None,
                       y: float | None, visible: bool = True) -> None:
        """Record the user's position for a keypoint (``visible=False``: occluded / absent)."""
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO corrections VALUES (?, ?, ?, ?, ?, ?, ?)",
                (frame, track, keypoint, x, y, int(visible), time.time()),
            )

    def set_corrections(self, frame: int, track: int, positions: dict) -> None:
        """Several keypoints of one instance in one transaction.

        Args:
            frame: The frame.
            track: The track.
            positions: keypoint -> ``(x, y, visible)``, or None to remove its correction.
        """
        now = time.time()
        with self._transaction():
            for keypoint, value in positions.items():
                if value is None:
                    self._db.execute("DELETE FROM corrections WHERE frame = ? AND track = ? AND "
                                     "keypoint = ?", (frame, track, keypoint))
                else:
                    x, y, visible = value
                    self._db.execute(
                        "INSERT OR REPLACE INTO corrections VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (frame, track, keypoint, x, y, int(visible), now))

    def clear_correction(self, frame: int, track: int, keypoint: int) -> None:
        """Remove a correction (back to the prediction)."""
        with self._transaction():
            self._db.execute(
                "DELETE FROM corrections WHERE frame = ? AND track = ? AND keypoint = ?",
                (frame, track, keypoint),
            )

    def corrections(self, frame: int | None = None) -> list[tuple]:
        """``(frame, track, keypoint, x, y, visible)`` rows, optionally of one frame."""
        sql = "SELECT frame, track, keypoint, x, y, visible FROM corrections"
        args: tuple = ()
        if frame is not None:
            sql, args = sql + " WHERE frame = ?", (frame,)
        return self._db.execute(sql + " ORDER BY frame, track, keypoint", args).fetchall()

    def correction(self, frame: int, track: int, keypoint: int) -> tuple | None:
        """The user's correction of one keypoint as ``(x, y, visible)``, or None if there is none.

        Undo uses it to put back what an edit replaced.
        """
        row = self._db.execute(
            "SELECT x, y, visible FROM corrections WHERE frame = ? AND track = ? AND keypoint = ?",
            (frame, track, keypoint),
        ).fetchone()
        return None if row is None else (row[0], row[1], bool(row[2]))

    def corrected_frames(self) -> list[int]:
        """Frames where the user corrected at least one keypoint."""
        rows = self._db.execute("SELECT DISTINCT frame FROM corrections ORDER BY frame")
        return [r[0] for r in rows]

    # ------------------------------------------------------------------ identity edits
    def swap_tracks(self, a: int, b: int, from_frame: int = 0, *, record: bool = True,
                    forget: int | None = None) -> int | None:
        """Exchange the identities of tracks ``a`` and ``b`` from ``from_frame`` on.

        Args:
            a: One track.
            b: The other.
            from_frame: First frame swapped.
            record: Record the edit as a rule for re-runs (see :meth:`rules`).
            forget: A rule to drop in the same transaction (undoing the edit that made it).

        Returns:
            The recorded rule's id (None if not recorded).
        """
        w = _SWAP_WINDOW
        rule = None if not record else {
            "kind": "swap", "a": a, "b": b, "from_frame": from_frame,
            "before_a": self.track_signature(a, from_frame - w, from_frame - 1),
            "before_b": self.track_signature(b, from_frame - w, from_frame - 1),
            "after_a": self.track_signature(a, from_frame, from_frame + w),
            "after_b": self.track_signature(b, from_frame, from_frame + w)}
        with self._transaction():
            self._remap({a: b, b: a}, min_frame=from_frame)
            self._log("swap", {"a": a, "b": b, "from_frame": from_frame})
            self._drop_rule(forget)
            return self._add_rule(rule) if rule else None

    def merge_tracks(self, keep: int, other: int, *, record: bool = True) -> int | None:
        """Give ``other``'s instances the id ``keep`` (they must not share a frame).

        Returns:
            The id of the rule recorded for re-runs (None if ``record`` is False).
        """
        shared = self._db.execute(
            "SELECT COUNT(*) FROM instances a JOIN instances b ON a.frame = b.frame "
            "WHERE a.track = ? AND b.track = ?", (keep, other),
        ).fetchone()[0]
        if shared:
            raise InputError(f"tracks {keep} and {other} are both present in {shared} frames; "
                             "swap or delete one of them there first")
        rule = None if not record else {
            "kind": "merge", "keep": keep, "other": other,
            "keep_boxes": self.track_signature(keep), "other_boxes": self.track_signature(other)}
        names = self.track_names()
        with self._transaction():
            self._remap({other: keep})
            self._log("merge", {"keep": keep, "other": other})
            if other in names:  # the merged track keeps a name: its own, else the other's
                names.setdefault(keep, names.pop(other))
                self._set_meta({"track_names": {str(t): n for t, n in names.items()}})
            return self._add_rule(rule) if rule else None

    def delete_track(self, track: int, from_frame: int = 0, to_frame: int | None = None, *,
                     record: bool = True) -> int | None:
        """Delete a (false) track, or the part of it in ``[from_frame, to_frame]``.

        Returns:
            The id of the rule recorded for re-runs (None if ``record`` is False).
        """
        last = 2**62 if to_frame is None else to_frame
        rule = None if not record else {
            "kind": "delete", "track": track, "from_frame": from_frame, "to_frame": to_frame,
            "boxes": self.track_signature(track, from_frame, to_frame)}
        with self._transaction():
            for table in ("instances", "corrections"):
                self._db.execute(
                    f"DELETE FROM {table} WHERE track = ? AND frame BETWEEN ? AND ?",
                    (track, from_frame, last),
                )
            self._log("delete", {"track": track, "from_frame": from_frame, "to_frame": to_frame})
            return self._add_rule(rule) if rule else None

    def add_instance(self, frame: int, track: int, box, xy: np.ndarray) -> None:
        """Add an animal the detector missed, placed by the user in a processed frame.

        It is stored like a prediction with no confidence (box score 0, keypoint confidence 0),
        so only the keypoints the user then corrects count as labels.

        Args:
            frame: A frame of the run.
            track: Its track id (an existing track absent in ``frame``, or a new one).
            box: ``x1, y1, x2, y2`` in frame pixels.
            xy: (K, 2) keypoint positions in frame pixels.
        """
        xy = np.asarray(xy, np.float32)
        if xy.shape != (self.keypoints.num_keypoints, 2):
            raise ValueError(f"expected ({self.keypoints.num_keypoints}, 2) keypoints, "
                             f"got {xy.shape}")
        if not self.has_frame(frame):
            raise InputError(f"{self.path.name}: frame {frame} was not processed by the run")
        if self._db.execute("SELECT 1 FROM instances WHERE frame = ? AND track = ?",
                            (frame, track)).fetchone():
            raise InputError(f"{self.path.name}: animal {track} is already in frame {frame}")
        raw = np.concatenate([xy, np.zeros((len(xy), 1), np.float32)], axis=1)
        with self._transaction():
            self._db.execute(
                "INSERT INTO instances (frame, track, x1, y1, x2, y2, box_score, raw) "
                "VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                (frame, track, *map(float, box), _blob(raw)))
            self._log("add", {"frame": frame, "track": track})

    def snapshot(self, track: int, from_frame: int = 0, to_frame: int | None = None) -> Snapshot:
        """Copy the rows :meth:`delete_track` with the same arguments would delete."""
        last = 2**62 if to_frame is None else to_frame
        args = (track, from_frame, last)
        where = "WHERE track = ? AND frame BETWEEN ? AND ? ORDER BY frame"
        instances = self._db.execute(
            "SELECT frame, track, x1, y1, x2, y2, box_score, raw, smooth FROM instances " + where,
            args).fetchall()
        corrections = self._db.execute(
            "SELECT frame, track, keypoint, x, y, visible, edited_at FROM corrections " + where,
            args).fetchall()
        return Snapshot(track, tuple(instances), tuple(corrections))

    def restore(self, snapshot: Snapshot, *, forget: int | None = None) -> None:
        """Put the rows of a :meth:`snapshot` back (replacing rows at the same keys), atomically.

        ``forget``: the rule of the delete being undone (default: the snapshot's), dropped in
        the same transaction.
        """
        with self._transaction():
            self._drop_rule(snapshot.rule if forget is None else forget)
            self._db.executemany(
                "INSERT OR REPLACE INTO instances (frame, track, x1, y1, x2, y2, box_score, raw, "
                "smooth) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", snapshot.instances)
            self._db.executemany(
                "INSERT OR REPLACE INTO corrections VALUES (?, ?, ?, ?, ?, ?, ?)",
                snapshot.corrections)
            self._log("restore", {"track": snapshot.track, "instances": len(snapshot.instances)})

    def _log(self, kind: str, detail: dict) -> None:
        self._db.execute("INSERT INTO edits (at, kind, detail) VALUES (?, ?, ?)",
                         (time.time(), kind, json.dumps(detail)))
