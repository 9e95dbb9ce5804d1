"""Reading and writing video: streaming, frame-exact, with real timestamps.

:class:`VideoReader` streams :class:`~clamp_track.types.Frame` objects with decoding running ahead
of the consumer in a background thread, so the pose model never waits for the decoder and the
whole video is never in memory (at most ``prefetch + batch`` frames are).

Backends. Both decoders are frame-exact here (decord's ``get_batch``/``vr[i]``, PyAV decoding
from a keyframe; decord's ``seek()`` lands on the previous keyframe and is not used). The default
(``"auto"``) streams with **PyAV**; decord is used when asked for (``backend="decord"``).
Measured with decord 0.6.0, its internal thread keeps decoding ahead without bound while the
consumer is busy (a slow consumer of a 1040-frame 854x480 clip held 849 MB, about the whole
clip, at 50 ms per 8-frame batch; PyAV stayed at 69 MB), which a pose model always is — the
known decord issues dmlc/decord#208 and #157. decord suits short clips read in one go, where it
decodes ~1.3x faster; it refuses a file when it disagrees with the container about the number
of frames (its ``get_batch`` is known to spin forever when asked for
frames a container over-reports). Both bundle their own FFmpeg; decord's log is silenced (its
H.264 4:4:4 decoding prints "error while decoding MB" lines for frames that are in fact right)
and PyAV's is off by default.

Seeking. Any decoder starts a range or a random access at the keyframe before it. Some files have
keyframes that do not decode on their own (measured: the DeepLabCut open-field video, H.264 High
4:4:4 Predictive; its keyframes decode to green noise unless decoding started at frame 0, with
decord and PyAV alike). So before the first seek the reader decodes the second keyframe both ways
(after a seek, and from the start); if they differ, ranges and random access decode from the start
with PyAV instead (correct, slower) and say so in the log.

Timestamps. At open the container's packets are demuxed once (no decoding; milliseconds for a
typical clip) to get every frame's presentation timestamp. ``Frame.time_s`` is that timestamp in
seconds from the start of the video stream, so it is right for variable-frame-rate files, and it
is the same whichever backend decodes.

Bad input. A missing file, a directory, a file that is not a video or a truncated mp4 without its
index raises a one-line :class:`~clamp_track.errors.InputError` naming the file. A file whose
frames are partly undecodable yields the frames it has, skips the others and logs one warning
with the counts at the end of the pass.

:class:`VideoWriter` writes H.264 (MPEG-4 Part 2 if no H.264 encoder is available) with PyAV to
a temporary file beside the target, renamed into place on close and removed on error.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import queue
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from clamp_track.config import temp_beside
from clamp_track.errors import InputError
from clamp_track.types import Frame, VideoInfo

log = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav")
# Stop a pass after this many consecutive frames fail to decode (the rest of the file is gone).
_MAX_CONSECUTIVE_FAILURES = 32
# The consumer gives up when the decoder has produced nothing for this long (a native hang).
_STALL_TIMEOUT_S = 300.0
# Forward jumps up to this many frames are decoded through instead of seeking (GUI scrubbing).
_MAX_DECODE_THROUGH = 48


# --------------------------------------------------------------------------------------------
# Opening and indexing


@dataclass(frozen=True)
class _Index:
    """Where every frame of a video stream is.

    Attributes:
        info: What the video is (``n_frames`` = frames present in the file).
        pts: (N,) int64 presentation timestamps in stream time-base units, ascending.
        time_s: (N,) float64 seconds from the start of the stream.
        time_base: Seconds per pts unit.
        claimed: Frames the container header claims (0 when it does not say).
        keyframes: (M,) int64 frame indices of the keyframes, ascending.
    """

    info: VideoInfo
    pts: np.ndarray
    time_s: np.ndarray
    time_base: Fraction
    claimed: int
    keyframes: np.ndarray


def _check_file(path: str | os.PathLike) -> Path:
    """The path as a :class:`Path`, or a one-line :class:`InputError` if it is no file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a video file; pass the video inside it")
    if not path.exists():
        raise InputError(f"{path}: video file not found; check the path")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: video file is not readable; check its permissions")
    return path


def _open_av(path: Path):
    """Open ``path`` with PyAV, turning FFmpeg's refusals into a one-line :class:`InputError`."""
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(
            f"{path}: not a readable video ({reason}); it may be truncated or not a video file"
        ) from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: the file has no video stream")
    return container


#: Scans of recent files, by path and file identity (see :func:`_scan`).
_SCANS: dict[tuple, _Index] = {}
_SCANS_KEPT = 8
_SCANS_LOCK = threading.Lock()


def _scan(path: Path) -> _Index:
    """The index of a video file, scanned once per version of the file.

    Opening a container decodes a few frames to learn the stream's parameters (62 ms for a
    1080p H.264 file here), and a run probes its video before reading it; so a scan is kept,
    keyed by the path and the file's device, inode, size and modification time: a file
    written again is scanned again. The arrays are read-only, as they are shared.
    """
    try:
        st = os.stat(path)
        key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    with _SCANS_LOCK:
        index = _SCANS.get(key)
    if index is not None:
        return index
    index = _scan_file(path)
    for array in (index.pts, index.time_s, index.keyframes):
        array.setflags(write=False)
    if key is not None:
        with _SCANS_LOCK:
            while len(_SCANS) >= _SCANS_KEPT:
                _SCANS.pop(next(iter(_SCANS)))
            _SCANS[key] = index
    return index


def _scan_file(path: Path) -> _Index:
    """Read the container header and demux (not decode) every packet for the frame timestamps."""
    import av

    with _open_av(path) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, 1)
        packets = []  # (pts, is keyframe)
        try:
            packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size > 0]
        except av.FFmpegError as exc:  # the packets stop where the file does
            log.debug("%s: demuxing stopped early: %s", path, exc)
        pts = [p for p, _ in packets]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        claimed = int(stream.frames or 0)
        width, height = stream.codec_context.width, stream.codec_context.height
        codec = stream.codec_context.name
        start = stream.start_time
    if not pts:
        raise InputError(f"{path}: the video stream has no frames; the file may be truncated")
    if any(p is None for p in pts):  # e.g. raw H.264 elementary streams carry no timestamps
        times = np.arange(len(pts), dtype=np.float64) / (fps or 1.0)
        order = pts_arr = np.arange(len(pts), dtype=np.int64)
    else:
        order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
        pts_arr = np.asarray(pts, dtype=np.int64)[order]
        origin = start if start is not None else int(pts_arr[0])
        times = (pts_arr - origin).astype(np.float64) * float(time_base)
    if not fps and len(times) > 1 and times[-1] > times[0]:
        fps = (len(times) - 1) / (times[-1] - times[0])
    info = VideoInfo(str(path), int(width), int(height), fps, len(pts_arr), codec,
                     display_rotation(path))
    is_key = np.asarray([k for _, k in packets], dtype=bool)[order]
    return _Index(info, pts_arr, times, time_base, claimed, np.flatnonzero(is_key))


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload start, payload end)`` of the ISO boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, start)
        header = 8
        if size == 1 and start + 16 <= end:
            size, header = struct.unpack_from(">Q", data, start + 8)[0], 16
        elif size == 0:
            size = end - start
        if size < header or start + size > end:
            return
        yield kind, start + header, start + size
        start += size


def _read_moov(path: Path) -> bytes | None:
    """The ``moov`` box of an ISO base media file (read alone: ``mdat`` is skipped), or None."""
    try:
        with open(path, "rb") as fh:
            size_total = os.fstat(fh.fileno()).st_size
            offset = 0
            while offset + 8 <= size_total:
                fh.seek(offset)
                head = fh.read(16)
                size, kind = struct.unpack_from(">I4s", head)
                if size == 1 and len(head) == 16:
                    size = struct.unpack_from(">Q", head, 8)[0]
                elif size == 0:
                    size = size_total - offset
                if size < 8:
                    return None
                if kind == b"moov":
                    fh.seek(offset)
                    return fh.read(min(size, 256 << 20))
                offset += size
    except OSError:
        return None
    return None


def display_rotation(path: str | os.PathLike) -> int:
    """Degrees (0, 90, 180, 270) a player turns a video clockwise to show it upright.

    Phones store a portrait video as landscape frames plus a display matrix in the video
    track's header (``tkhd``) of the mp4/mov file; FFmpeg-based players and OpenCV (what
    DeepLabCut reads videos with) apply it, the decoders used here do not. Other containers,
    or a file without a readable header, give 0.
    """
    moov = _read_moov(Path(path))
    if not moov:
        return 0
    for kind, start, end in _boxes(moov):
        if kind != b"moov":
            continue
        for trak, t0, t1 in _boxes(moov, start, end):
            if trak != b"trak":
                continue
            children = {k: (a, b) for k, a, b in _boxes(moov, t0, t1)}
            mdia, tkhd = children.get(b"mdia"), children.get(b"tkhd")
            if mdia is None or tkhd is None or tkhd[1] - tkhd[0] < 84:
                continue
            if not any(k == b"hdlr" and b - a >= 12 and moov[a + 8:a + 12] == b"vide"
                       for k, a, b in _boxes(moov, *mdia)):
                continue  # sound or data track
            # full box: version, flags, times and ids (v1: 64-bit times), reserved, layer,
            # group, volume, reserved; then the matrix a b u / c d v / x y w (a, b: 16.16)
            at = tkhd[0] + (52 if moov[tkhd[0]] == 1 else 40)
            a, b = struct.unpack_from(">2i", moov, at)
            if a == 0 and b == 0:
                return 0
            return int(round(math.degrees(math.atan2(b, a)) / 90.0)) * 90 % 360
    return 0


def probe(path: str | os.PathLike) -> VideoInfo:
    """Describe a video without decoding it.

    Args:
        path: A video file (any container/codec FFmpeg reads).

    Returns:
        Its :class:`VideoInfo`; ``n_frames`` counts the frames present in the file (fewer than
        the header claims when the file is truncated).

    Raises:
        InputError: The file is missing, a directory, or not a readable video.
    """
    return _scan(_check_file(path)).info


def creation_time(path: str | os.PathLike) -> datetime.datetime | None:
    """When the video was recorded, from its container's ``creation_time`` tag.

    Cameras and phones write it in MP4/MOV headers (UTC, ISO 8601). Returns a timezone-aware
    datetime, or None if the file is unreadable or has no such tag.
    """
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            tags = [container.metadata] + [s.metadata for s in container.streams.video]
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        return None
    for tag in (t.get("creation_time") for t in tags):
        if not tag:
            continue
        try:
            when = datetime.datetime.fromisoformat(tag.strip().replace("Z", "+00:00"))
        except ValueError:
            continue
        if when.year > 1970:  # 1970-01-01 / 1904-01-01: an unset clock, not a date
            return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)
    return None


def _silence_decord(decord) -> None:
    """Mute the FFmpeg bundled with decord (it logs harmless decoder complaints per frame)."""
    try:
        decord.logging.set_level(decord.logging.QUIET)
    except AttributeError:  # very old decord
        pass


# --------------------------------------------------------------------------------------------
# Backends: decode (index, image) pairs for a range, and single frames


def _import_decord():
    """Import decord after OpenCV.

    decord loads its bundled zlib 1.2.3 into the global symbol table (``RTLD_GLOBAL``);
    OpenCV's libpng, if loaded after it, binds to that old zlib and cannot read PNG files any
    more ("libpng error: bad parameters to zlib"; measured with decord 0.6.0 and
    opencv-python 5.0). Loading OpenCV first keeps it on its own zlib.
    """
    import cv2  # noqa: F401  (import order matters, see above)
    import decord

    return decord


class _DecordBackend:
    """Frame-exact decoding with decord's ``get_batch`` (batched) and ``vr[i]`` (single)."""

    name = "decord"

    def __init__(self, path: Path, index: _Index, batch: int):
        decord = _import_decord()
        _silence_decord(decord)
        self._decord = decord
        self._vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
        self._batch = batch
        if len(self._vr) != index.info.n_frames:
            raise RuntimeError(
                f"decord sees {len(self._vr)} frames, the container {index.info.n_frames}"
            )

    def read(self, i: int) -> np.ndarray:
        return self._vr[i].asnumpy()  # (H, W, 3) uint8 RGB

    def frames(self, start: int, end: int, lock: threading.Lock) -> Iterator[tuple[int, object]]:
        """Yield ``(index, image)``, or ``(index, exception)`` for a frame that failed."""
        for first in range(start, end, self._batch):
            indices = list(range(first, min(first + self._batch, end)))
            try:
                with lock:
                    batch = self._vr.get_batch(indices).asnumpy()  # (B, H, W, 3) uint8
            except self._decord.DECORDError:  # salvage what can be read one by one
                yield from self._one_by_one(indices, lock)
                continue
            yield from zip(indices, batch)

    def _one_by_one(self, indices: list[int], lock: threading.Lock):
        for i in indices:
            try:
                with lock:
                    image = self.read(i)
            except self._decord.DECORDError as exc:
                image = exc
            yield i, image

    def close(self) -> None:
        self._vr = None


class _PyAVBackend:
    """Sequential decoding with PyAV; seeks by timestamp unless ``can_seek`` is false.

    Without seeking, a range decodes from frame 0 and discards frames before its start, and
    random access decodes forward from the last frame read (or from frame 0 when going back).
    """

    name = "pyav"

    def __init__(self, path: Path, index: _Index, can_seek: bool = True):
        self._path = path
        self._index = index
        self._can_seek = can_seek
        self._random = None  # [container, frame iterator, last index] for read()

    def _open(self):
        container = _open_av(self._path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return container, stream

    def _index_of(self, frame, fallback: int) -> int:
        """The index of a decoded frame, from its timestamp (right across skipped packets)."""
        if frame.pts is None:
            return fallback
        i = int(np.searchsorted(self._index.pts, frame.pts))
        return i if i < len(self._index.pts) and self._index.pts[i] == frame.pts else fallback

    def _decode(self, container, stream, start: int) -> Iterator[tuple[int, object]]:
        """Decode frames ``>= start``: ``(index, av.VideoFrame)`` or ``(-1, exception)``."""
        import av

        expected = 0
        if start > 0 and self._can_seek:
            container.seek(int(self._index.pts[start]), stream=stream, backward=True)
            expected = start
        failures = 0
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
                failures = 0
            except av.FFmpegError as exc:
                failures += 1
                yield -1, exc
                if failures > _MAX_CONSECUTIVE_FAILURES:
                    return
                continue
            for frame in decoded:
                i = self._index_of(frame, expected)
                expected = i + 1
                if i >= start:
                    yield i, frame

    def frames(self, start: int, end: int, lock: threading.Lock) -> Iterator[tuple[int, object]]:
        """Yield ``(index, image)``, or ``(-1, exception)`` for a packet that failed."""
        container, stream = self._open()
        try:
            for i, frame in self._decode(container, stream, start):
                if i >= end:
                    return
                yield i, frame if isinstance(frame, Exception) else frame.to_ndarray(
                    format="rgb24")
        finally:
            container.close()

    def read(self, i: int) -> np.ndarray:
        state = self._random
        reach = _MAX_DECODE_THROUGH if self._can_seek else len(self._index.pts)
        if state is None or not state[2] < i <= state[2] + reach:
            self.close()
            container, stream = self._open()
            state = self._random = [container, self._decode(container, stream, i), i - 1]
        for j, frame in state[1]:
            if isinstance(frame, Exception):
                continue
            state[2] = j
            if j == i:
                return frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8 RGB
            if j > i:
                break
        self.close()
        raise InputError(f"{self._path}: frame {i} cannot be decoded (corrupt or truncated file)")

    def close(self) -> None:
        if self._random is not None:
            self._random[0].close()
            self._random = None


def _seeking_is_exact(path: Path, index: _Index) -> bool:
    """Whether a keyframe decodes the same after a seek as when decoding from frame 0.

    Decodes up to the second keyframe (one GOP) from the start, and that keyframe after a seek.
    """
    later = index.keyframes[index.keyframes > 0]
    if len(later) == 0:
        return True  # every seek lands on frame 0
    target = int(later[0])
    images = []
    for can_seek in (False, True):
        decoder = _PyAVBackend(path, index, can_seek=can_seek)
        try:
            images.append(decoder.read(target))  # (H, W, 3) uint8
        except InputError:
            return False
        finally:
            decoder.close()
    return np.array_equal(images[0], images[1])


def _make_backend(path: Path, index: _Index, backend: str, batch: int):
    """The decoder: PyAV (which already read the container at open), or decord if asked for."""
    if backend not in BACKENDS:
        raise InputError(f"unknown video backend {backend!r}; use one of {list(BACKENDS)}")
    if backend == "decord":
        try:
            return _DecordBackend(path, index, batch)
        except ImportError:
            raise InputError("the decord backend needs decord: pip install decord") from None
        except Exception as exc:  # noqa: BLE001 - report any decord failure in one line
            raise InputError(f"{path}: decord cannot read this file ({exc}); "
                             "use the default PyAV backend") from None
    return _PyAVBackend(path, index)


# --------------------------------------------------------------------------------------------
# Background decoding


class _Failure:
    """An exception raised in the decoding thread, carried to the consumer."""

    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()


class _Prefetcher:
    """Runs an iterator in a daemon thread, handing its items over through a bounded queue.

    The thread stops when the iterator ends, when it raises (the exception is re-raised in the
    consumer) or when :meth:`close` is called (the consumer broke off, or the reader closed).
    """

    def __init__(self, source: Iterator, size: int, name: str):
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the decoding thread is still running."""
        return self._thread.is_alive()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(_Failure(exc))
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()

    def __iter__(self):
        waited = 0.0
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                waited += 0.5
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the video decoding thread ended unexpectedly") from None
                if waited >= _STALL_TIMEOUT_S:
                    raise InputError(
                        f"video decoding stalled for {_STALL_TIMEOUT_S:.0f} s; the file may be "
                        "damaged: try backend='pyav'") from None
                continue
            waited = 0.0
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread: signal it, drain the queue so it is not blocked, and join it."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.debug("video decoding thread still busy after %.0f s; left as daemon", timeout)


# --------------------------------------------------------------------------------------------
# The reader


class VideoReader:
    """Stream the frames of a video, decoded ahead in a background thread.

    Example:
        >>> with VideoReader("video.mp4", start=100, end=200) as reader:  # doctest: +SKIP
        ...     for frame in reader:
        ...         frame.index, frame.time_s, frame.image.shape  # 100, 3.33, (480, 640, 3)

    Iterating again starts a new pass over ``[start, end)``. Breaking out of a loop stops its
    decoding thread; :meth:`close` (or leaving the ``with`` block) stops all of them.

    Args:
        path: The video file.
        start: First frame index (0-based).
        end: One past the last frame index; ``None`` = to the end. Clipped to the video.
        prefetch: Frames decoded ahead of the consumer (queue size); 0 decodes in the calling
            thread. Memory: about ``(prefetch + batch) * H * W * 3`` bytes.
        batch: Frames per decord ``get_batch`` call.
        backend: ``"auto"`` (= PyAV, see the module notes), ``"decord"`` or ``"pyav"``.

    Attributes:
        info: The :class:`VideoInfo` (``n_frames`` = frames present in the file).
        times_s: (n_frames,) float64 presentation time of every frame, seconds.
        backend: The decoder in use, ``"decord"`` or ``"pyav"``.
        skipped: Indices of frames in ``[start, end)`` the last complete pass could not decode.

    Raises:
        InputError: The file is missing, a directory or not a readable video, or the range is
            empty.
    """

    def __init__(self, path: str | os.PathLike, start: int = 0, end: int | None = None,
                 prefetch: int = 16, batch: int = 8, backend: str = "auto"):
        self.path = _check_file(path)
        self._index = _scan(self.path)
        self.info = self._index.info
        self.times_s = self._index.time_s
        self.start, self.end = self._check_range(start, end)
        if prefetch < 0 or batch < 1:
            raise ValueError(f"prefetch must be >= 0 and batch >= 1, got {prefetch}, {batch}")
        self.prefetch, self.batch = prefetch, batch
        self._lock = threading.Lock()
        self._decoder = _make_backend(self.path, self._index, backend, batch)
        self.backend = self._decoder.name
        self.skipped: list[int] = []
        self._passes: list[_Prefetcher] = []
        self._seek_lock = threading.Lock()
        self._seek_exact: bool | None = None  # checked before the first seek
        self._no_seek: _PyAVBackend | None = None
        self._warn_if_truncated()

    def _check_range(self, start: int, end: int | None) -> tuple[int, int]:
        n = self.info.n_frames
        end = n if end is None else min(int(end), n)
        if not 0 <= start < end:
            raise InputError(
                f"{self.path}: frame range [{start}, {end}) is empty; the video has {n} frames")
        return int(start), end

    def _warn_if_truncated(self) -> None:
        claimed, present = self._index.claimed, self.info.n_frames
        if claimed > present:
            log.warning("%s: the container lists %d frames but only %d are in the file "
                        "(truncated?); reading those %d", self.path, claimed, present, present)

    def _decoder_for(self, start: int):
        """The decoder for a pass or a read starting at ``start``: one that seeks only if exact."""
        if self._decoder is None:
            raise RuntimeError(f"{self.path}: the reader is closed")
        if start == 0:
            return self._decoder
        with self._seek_lock:
            if self._seek_exact is None:
                self._seek_exact = _seeking_is_exact(self.path, self._index)
                if not self._seek_exact:
                    log.info("%s: keyframes do not decode on their own, so ranges and random "
                             "access decode from the first frame (slower)", self.path)
                    self._no_seek = _PyAVBackend(self.path, self._index, can_seek=False)
        return self._decoder if self._seek_exact else self._no_seek

    def __len__(self) -> int:
        """Number of frames in ``[start, end)``."""
        return self.end - self.start

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        self._passes = [p for p in self._passes if p.alive]
        frames = self._frames(self.start, self.end)
        if self.prefetch == 0:
            yield from frames
            return
        prefetcher = _Prefetcher(frames, self.prefetch, name=f"decode:{self.path.name}")
        self._passes.append(prefetcher)
        try:
            yield from prefetcher
        finally:
            prefetcher.close()

    def _frames(self, start: int, end: int) -> Iterator[Frame]:
        """Decoded frames of ``[start, end)``; logs one warning for frames that failed."""
        decoder = self._decoder_for(start)
        got, failed_in_row, stopped = 0, 0, False
        seen = np.zeros(end - start, dtype=bool)
        for i, image in decoder.frames(start, end, self._lock):
            if isinstance(image, Exception):
                failed_in_row += 1
                log.debug("%s: frame %d failed to decode: %s", self.path, i, image)
                if failed_in_row > _MAX_CONSECUTIVE_FAILURES:
                    stopped = True
                    break
                continue
            failed_in_row = 0
            seen[i - start] = True
            got += 1
            yield Frame(i, float(self.times_s[i]), np.ascontiguousarray(image))
        self.skipped = (np.flatnonzero(~seen) + start).tolist()
        if self.skipped:
            more = "; decoding stopped there" if stopped else ""
            log.warning("%s: read %d of %d frames; %d could not be decoded (first: frame %d)%s "
                        "- the file looks corrupt or truncated", self.path, got, end - start,
                        len(self.skipped), self.skipped[0], more)

    def read(self, index: int) -> Frame:
        """Decode one frame (random access, frame-exact; for scrubbing).

        Args:
            index: 0-based frame index in the video (not limited to ``[start, end)``).

        Returns:
            The :class:`Frame`.

        Raises:
            IndexError: ``index`` is outside the video.
            InputError: The frame cannot be decoded.
        """
        if not 0 <= index < self.info.n_frames:
            raise IndexError(f"frame {index} is outside {self.path} ({self.info.n_frames} frames)")
        decoder = self._decoder_for(int(index))
        with self._lock:
            try:
                image = decoder.read(int(index))
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - decoder errors become one line
                raise InputError(f"{self.path}: frame {index} cannot be decoded ({exc})") from None
        return Frame(int(index), float(self.times_s[index]), np.ascontiguousarray(image))

    def close(self) -> None:
        """Stop all decoding threads and release the decoder. Safe to call twice."""
        for prefetcher in self._passes:
            prefetcher.close()
        self._passes = []
        with self._lock:
            for decoder in (self._decoder, self._no_seek):
                if decoder is not None:
                    decoder.close()
            self._decoder = self._no_seek = None


# --------------------------------------------------------------------------------------------
# Writing


_CODECS = ("libx264", "h264", "mpeg4")


def _pick_codec(preferred: str | None) -> str:
    """The first encoder PyAV has, of ``preferred`` then H.264 then MPEG-4 Part 2."""
    import av

    for name in ((preferred,) if preferred else ()) + _CODECS:
        if name in av.codecs_available:
            try:
                av.Codec(name, "w")
                return name
            except (av.FFmpegError, ValueError):
                continue
    raise InputError(f"PyAV has none of the video encoders {list(_CODECS)}; reinstall av")


class VideoWriter:
    """Write RGB frames to a video file with PyAV, atomically.

    The video goes to a hidden temporary file in the target's folder and is renamed to ``path``
    by :meth:`close`; if anything fails (or the ``with`` block raises) the temporary file is
    removed, so a half-written video never appears under the target name. Odd frame sizes are
    padded by one pixel (edge-replicated) because H.264 in yuv420p needs even ones.

    Args:
        path: Output file; its suffix picks the container (``.mp4``, ``.mkv``, ``.avi``...).
        fps: Frames per second (constant frame rate).
        size: ``(width, height)`` of the frames, in pixels.
        codec: Encoder name to prefer; default H.264 (``libx264``), else MPEG-4 Part 2.
        crf: H.264 constant-rate factor (lower = better, 18 is visually lossless).

    Raises:
        InputError: The folder does not exist or is not writable.
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int],
                 codec: str | None = None, crf: int = 20):
        import av

        self.path = Path(path)
        folder = self.path.parent
        if not folder.is_dir():
            raise InputError(f"{self.path}: output folder {folder} does not exist; create it")
        if not os.access(folder, os.W_OK):
            raise InputError(f"{self.path}: output folder {folder} is not writable")
        if fps <= 0 or min(size) <= 0:
            raise ValueError(f"fps and size must be positive, got {fps} and {size}")
        self.size = (int(size[0]), int(size[1]))
        self.codec = _pick_codec(codec)
        tmp = temp_beside(self.path, f".partial{self.path.suffix}")  # (removes a killed one's)
        self._tmp = tmp
        self.frames_written = 0
        try:
            self._container = av.open(str(tmp), "w", format=self._format())
            self._stream = self._add_stream(fps, crf)
        except Exception as exc:
            self._tmp.unlink(missing_ok=True)
            raise InputError(f"{self.path}: cannot write video ({exc})") from None

    def _format(self) -> str | None:
        import av

        suffix = self.path.suffix.lower().lstrip(".")
        return suffix if suffix in av.formats_available else None

    def _add_stream(self, fps: float, crf: int):
        rate = Fraction(fps).limit_denominator(100_000)
        self._time_base = 1 / rate
        h264 = self.codec in ("libx264", "h264")
        stream = self._container.add_stream(self.codec, rate=rate,
                                            options={"crf": str(crf)} if h264 else {})
        stream.width, stream.height = (s + s % 2 for s in self.size)
        stream.pix_fmt = "yuv420p"
        if not h264:
            stream.codec_context.bit_rate = 8_000_000
        return stream

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, image: np.ndarray) -> None:
        """Append one frame.

        Args:
            image: (H, W, 3) uint8 RGB with ``(W, H) == size``.
        """
        import av

        if self._container is None:
            raise RuntimeError(f"{self.path}: the writer is closed")
        w, h = self.size
        if image.shape != (h, w, 3) or image.dtype != np.uint8:
            raise ValueError(f"expected a ({h}, {w}, 3) uint8 RGB image, got "
                             f"{image.shape} {image.dtype}")
        if w % 2 or h % 2:
            image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts, frame.time_base = self.frames_written, self._time_base
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except BaseException:
            self.abort()
            raise
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder, finish the file and move it to ``path``."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Discard the video: close and delete the temporary file; ``path`` is not touched."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - discarding anyway
                pass
            self._container = None
        self._tmp.unlink(missing_ok=True)
