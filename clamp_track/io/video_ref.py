"""The result store's link to its video: where it is, and how to know it is the same video.

A store keeps one :class:`VideoRef` (meta key ``video_ref``): the video's absolute path, its path
relative to the store's folder, and a :class:`Fingerprint` (frame count, duration, frame size
and a hash of a few decoded frames). Every reader of a store's frames (the review GUI,
``export --format video``, fine-tuning, label export, ``rerun``) finds the video through
:func:`store_video`, which tries, in order:

1. a video the user named (``--video``, File → Locate video…);
2. the recorded absolute path;
3. the recorded path relative to the store (store and video moved together, or the folder was
   mounted elsewhere);
4. a file of the same name beside the store.

A candidate whose fingerprint differs is refused with one line naming both files (camera-trap
names such as ``IMAG0001.AVI`` repeat on every card, so a same-named file is often another
video); the next candidate is tried, and if none matches the refusal is raised as
:class:`VideoMismatch`. A video found anywhere but the recorded absolute path is written back
to the store, so it is not asked for again.

Stores written before the fingerprint existed have only the path as typed. They open with a
warning that the fingerprint is new: their video is looked for relative to the store first
(never relative to the current folder first), checked by frame size and count, and its
fingerprint is then recorded.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from clamp_track.errors import InputError

log = logging.getLogger(__name__)

META_KEY = "video_ref"
# Frames sampled for the hash, in seconds from the start: decoded in one short pass from the
# first frame, so fingerprinting never seeks (slow, or decoding everything, in some files).
_SAMPLES_S = (0.0, 0.5, 1.0)
# Side of the grey thumbnail each sampled frame is reduced to before hashing.
_THUMB = 8
# Mean absolute thumbnail difference (grey levels, 0-255) still taken as the same frames:
# decoders may round colour conversion differently; different footage differs by tens.
_THUMB_TOLERANCE = 6.0
# Durations closer than this (seconds) are the same.
_DURATION_TOLERANCE = 0.05


class VideoMismatch(InputError):
    """A candidate video is not the one the store was made from.

    Attributes:
        store: The store file.
        recorded: Where the store's video was.
        candidate: The file that was refused.
        reason: How it differs, e.g. ``90 frames instead of 104``.
    """

    def __init__(self, message: str, store: Path, recorded: Path, candidate: Path,
                 reason: str = ""):
        super().__init__(message)
        self.store, self.recorded, self.candidate = store, recorded, candidate
        self.reason = reason


class VideoMissing(InputError):
    """No candidate video exists.

    Attributes:
        store: The store file.
        recorded: Where the store's video was.
    """

    def __init__(self, message: str, store: Path, recorded: Path):
        super().__init__(message)
        self.store, self.recorded = store, recorded


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a video's content, cheaply.

    Attributes:
        n_frames: Frames present in the file.
        duration_s: ``n_frames / fps`` in seconds.
        width: Frame width in pixels.
        height: Frame height in pixels.
        frames_hash: Hex of the 8x8 grey thumbnails of the frames at 0, 0.5 and 1 s (64
            bytes each): compared with a small tolerance, so two decoders that round
            differently still agree while other footage does not.
        file_size: Size of the file in bytes (a fast path: same path, size and mtime is
            accepted without decoding).
        mtime_ns: Modification time of the file.
        partial: Whether ``frames_hash`` holds only the first of the sampled frames (a run
            stopped before it decoded them all; see :meth:`unsampled`).
    """

    n_frames: int
    duration_s: float
    width: int
    height: int
    frames_hash: str
    file_size: int = 0
    mtime_ns: int = 0
    partial: bool = False

    @classmethod
    def of(cls, video: str | os.PathLike) -> Fingerprint:
        """Fingerprint a video file (probes it and decodes its first second).

        Raises:
            InputError: The file is missing or not a readable video.
        """
        from clamp_track.io.video import VideoReader

        path = Path(video)
        with VideoReader(path, prefetch=0) as reader:
            sampler = FrameSampler(reader.info)
            reader.end = sampler.frames[-1] + 1
            for frame in reader:
                sampler.see(frame.index, frame.image)
        return cls.unsampled(path, reader.info).sampled(sampler.frames_hash)

    @classmethod
    def unsampled(cls, video: str | os.PathLike, info) -> Fingerprint:
        """The fingerprint of ``video`` (:class:`~clamp_track.types.VideoInfo` ``info``), unhashed.

        A run fills the frame hash in from the frames it decodes anyway
        (:class:`FrameSampler`) instead of decoding the first second twice.
        """
        stat = Path(video).stat()
        return cls(int(info.n_frames), round(float(info.duration_s), 4), int(info.width),
                   int(info.height), "", int(stat.st_size), int(stat.st_mtime_ns), partial=True)

    def sampled(self, frames_hash: str, partial: bool = False) -> Fingerprint:
        """This fingerprint with its frame hash (``partial``: of the first sampled frames)."""
        return replace(self, frames_hash=frames_hash, partial=partial)

    @property
    def complete(self) -> bool:
        """Whether the frame hash covers every sampled frame (see :meth:`unsampled`)."""
        return not self.partial

    @classmethod
    def from_dict(cls, data: dict) -> Fingerprint:
        """Read the stored form (unknown keys ignored)."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def differences(self, other: Fingerprint) -> list[str]:
        """How ``other`` differs from this fingerprint (empty: the same video)."""
        out = []
        if (self.width, self.height) != (other.width, other.height):
            out.append(f"{other.width}x{other.height} instead of {self.width}x{self.height}")
        if self.n_frames != other.n_frames:
            out.append(f"{other.n_frames} frames instead of {self.n_frames}")
        elif abs(self.duration_s - other.duration_s) > _DURATION_TOLERANCE:
            out.append(f"{other.duration_s:.2f} s instead of {self.duration_s:.2f} s")
        if out:
            return out
        mine, theirs = self.frames_hash, other.frames_hash
        if mine and theirs:
            if self.partial or other.partial:  # a run stopped early: the frames both have
                n = min(len(mine), len(theirs))
                mine, theirs = mine[:n], theirs[:n]
            if _thumb_distance(mine, theirs) > _THUMB_TOLERANCE:
                out.append("different picture in the sampled frames")
        elif self.file_size != other.file_size:  # no frame hashed yet: the bytes must agree
            out.append(f"{other.file_size} bytes instead of {self.file_size}")
        return out


class FrameSampler:
    """Collects the fingerprint's frame thumbnails from frames decoded for another purpose.

    Args:
        info: The video's :class:`~clamp_track.types.VideoInfo`.

    Attributes:
        frames: The frame indices sampled (at 0, 0.5 and 1 s).
    """

    def __init__(self, info):
        n, fps = info.n_frames, info.fps or 25.0
        self.frames = sorted({min(n - 1, int(round(t * fps))) for t in _SAMPLES_S})
        self._thumbs: dict[int, bytes] = {}

    def see(self, index: int, image: np.ndarray) -> None:
        """Take frame ``index`` ((H, W, 3) uint8 RGB) if it is one of :attr:`frames`."""
        if index in self.frames and index not in self._thumbs:
            self._thumbs[index] = _thumbnail(image)

    @property
    def done(self) -> bool:
        """Whether every sampled frame was seen."""
        return len(self._thumbs) == len(self.frames)

    @property
    def frames_hash(self) -> str:
        """The frame hash of :class:`Fingerprint`, of the sampled frames seen so far.

        (Up to the first one not seen: a damaged frame ends it.)
        """
        thumbs = []
        for index in self.frames:
            if index not in self._thumbs:
                break
            thumbs.append(self._thumbs[index])
        return b"".join(thumbs).hex()


def _thumbnail(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 RGB -> 64 bytes: the grey image averaged down to 8x8."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (_THUMB, _THUMB), interpolation=cv2.INTER_AREA).tobytes()


def _thumb_distance(a: str, b: str) -> float:
    """Mean absolute difference of two thumbnail hashes in grey levels (inf if incomparable)."""
    x, y = np.frombuffer(bytes.fromhex(a), np.uint8), np.frombuffer(bytes.fromhex(b), np.uint8)
    if x.shape != y.shape or not len(x):
        return float("inf")
    return float(np.abs(x.astype(np.int16) - y.astype(np.int16)).mean())


def frames_digest(fingerprint: Fingerprint) -> str:
    """A short stable digest of a fingerprint's frame hash (for logs and reports)."""
    return hashlib.sha1(fingerprint.frames_hash.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class VideoRef:
    """A store's link to its video.

    Attributes:
        absolute: The video's absolute path when it was last found.
        relative: Its path relative to the store's folder (None across drives).
        fingerprint: What the video is (None for a store written before fingerprints).
    """

    absolute: str
    relative: str | None
    fingerprint: Fingerprint | None

    @classmethod
    def make(cls, video: str | os.PathLike, store_file: str | os.PathLike,
             fingerprint: Fingerprint | None = None) -> VideoRef:
        """The ref of ``video`` for a store at ``store_file`` (fingerprints it if not given)."""
        absolute = os.path.abspath(video)
        try:
            relative = os.path.relpath(absolute, os.path.dirname(os.path.abspath(store_file)))
        except ValueError:  # another drive (Windows)
            relative = None
        return cls(absolute, relative, fingerprint or Fingerprint.of(absolute))

    @classmethod
    def from_meta(cls, data: dict | None, video_meta: dict, store_file: Path) -> VideoRef:
        """The stored ref, or one made from a legacy store's path as typed (no fingerprint)."""
        if data:
            fp = data.get("fingerprint")
            return cls(data["absolute"], data.get("relative"),
                       Fingerprint.from_dict(fp) if fp else None)
        typed = str(video_meta.get("path", ""))
        if os.path.isabs(typed):
            return cls(typed, None, None)
        # a legacy path was typed relative to an unknown folder: the store's is the best guess
        return cls(os.path.abspath(store_file.parent / typed), typed, None)

    def to_dict(self) -> dict:
        """The stored (JSON) form."""
        return {"absolute": self.absolute, "relative": self.relative,
                "fingerprint": asdict(self.fingerprint) if self.fingerprint else None}

    @property
    def legacy(self) -> bool:
        """Whether the store predates fingerprints."""
        return self.fingerprint is None

    def candidates(self, store_file: Path) -> list[Path]:
        """Where to look, in order: absolute, relative to the store, beside the store."""
        folder = Path(os.path.abspath(store_file)).parent
        out = [Path(self.absolute)]
        if self.relative:
            out.append(folder / self.relative)
        out.append(folder / Path(self.absolute).name)
        seen, unique = set(), []
        for path in out:
            key = os.path.normpath(os.path.abspath(path))
            if key not in seen:
                seen.add(key)
                unique.append(Path(key))
        return unique

    def check(self, candidate: Path, store_file: Path, info=None) -> VideoMismatch | None:
        """Why ``candidate`` is not this video (None: it is).

        Args:
            candidate: An existing file.
            store_file: The store (named in the message).
            info: The store's :class:`~clamp_track.types.VideoInfo` (legacy stores: compared
                by size and frame count, the only facts they kept).
        """
        fp = self.fingerprint
        if fp is not None:
            stat = candidate.stat()
            if (os.path.abspath(candidate) == self.absolute and stat.st_size == fp.file_size
                    and stat.st_mtime_ns == fp.mtime_ns):
                return None  # the very file it was made from, untouched
            diff = fp.differences(Fingerprint.of(candidate))
        else:
            from clamp_track.io.video import probe

            other = probe(candidate)
            diff = []
            if info is not None and (other.width, other.height) != (info.width, info.height):
                diff.append(f"{other.width}x{other.height} instead of "
                            f"{info.width}x{info.height}")
            if info is not None and other.n_frames != info.n_frames:
                diff.append(f"{other.n_frames} frames instead of {info.n_frames}")
        if not diff:
            return None
        reason = ", ".join(diff)
        return VideoMismatch(
            f"{candidate}: not the video of {Path(store_file).name} (made from "
            f"{self.absolute}): {reason}; locate the right video (--video PATH, or File > "
            "Locate video in the GUI)", Path(store_file), Path(self.absolute), candidate,
            reason)


def resolve_video(store, given: str | os.PathLike | None = None, *,
                  remember: bool = True) -> Path:
    """The video of an open store, found and checked (module docstring); the one way in.

    Args:
        store: An open :class:`~clamp_track.io.store.ResultStore`.
        given: A video the user named; checked like every candidate, and never replaced by
            another (a wrong ``--video`` is an error, not a hint).
        remember: Write a video found anywhere but the recorded path (and a legacy store's
            new fingerprint) back to the store.

    Returns:
        The video file.

    Raises:
        VideoMismatch: ``given``, or every existing candidate, is another video.
        VideoMissing: No candidate exists.
    """
    ref, store_file, info = store.video_ref, Path(store.path), store.video_info
    if ref.legacy:
        log.warning("%s: written before clamp-track fingerprinted videos; its video is matched "
                    "by frame size and count only, and its fingerprint is new from now on",
                    store_file)
    candidates = [Path(given)] if given is not None else ref.candidates(store_file)
    refusal = None
    for candidate in candidates:
        if not candidate.is_file():
            if given is not None:
                raise VideoMissing(f"{candidate}: video file not found; check the path",
                                   store_file, Path(ref.absolute))
            continue
        why = ref.check(candidate, store_file, info)
        if why is None:
            unsampled = ref.fingerprint is not None and not ref.fingerprint.complete
            if remember and (ref.legacy or unsampled
                             or os.path.abspath(candidate) != ref.absolute):
                remember_video(store, candidate, None if unsampled else ref.fingerprint)
            return candidate
        log.warning("%s", why)
        refusal = refusal or why
    if refusal is not None:
        raise refusal
    raise VideoMissing(f"{store_file}: its video {ref.absolute} is missing (moved or "
                       "deleted?); point at it with --video PATH (File > Locate video in the "
                       "GUI)", store_file, Path(ref.absolute))


def video_among(store, videos: Sequence[str | os.PathLike]) -> Path | None:
    """The video among the ones a user listed (``--video``: files or folders) meant for ``store``.

    A file of the store's video's name, or one in a listed folder; a single listed file is
    taken for a store whose recorded video is missing, whatever its name; None when none is
    (the store's own reference is then used). The pick is then checked like any video the user
    names (:func:`resolve_video`).
    """
    if not videos:
        return None
    name = Path(store.video_ref.absolute).name
    for video in map(Path, videos):
        if video.is_dir() and (video / name).is_file():
            return video / name
        if video.is_file() and video.name == name:
            return video
    files = [Path(v) for v in videos if Path(v).is_file()]
    if len(files) == 1 and not Path(store.video_ref.absolute).is_file():
        return files[0]
    return None


def remember_video(store, video: Path, fingerprint: Fingerprint | None = None) -> VideoRef:
    """Record ``video`` as the store's video (absolute, relative, fingerprint).

    Written through the store when it is writable, else through a short writable connection
    of its own; a store on a read-only medium keeps its old ref (logged, not an error).
    """
    from clamp_track.io.store import ResultStore

    if fingerprint is not None:  # same content, maybe another copy: refresh the fast path
        stat = Path(video).stat()
        fingerprint = replace(fingerprint, file_size=int(stat.st_size),
                              mtime_ns=int(stat.st_mtime_ns))
    ref = VideoRef.make(video, store.path, fingerprint)
    if not store.readonly:
        store.set_video_ref(ref)
        return ref
    try:
        with ResultStore.open(store.path) as writable:
            writable.set_video_ref(ref)
        store.forget_cached_meta()
    except Exception as exc:  # noqa: BLE001 - remembering is a convenience, never a failure
        log.info("%s: could not record the video's new place (%s)", store.path, exc)
    return ref
