"""Video frames for the review GUI, decoded off the GUI thread with a small cache.

Random access into compressed video is slow: a decoder starts at the keyframe before the
target and decodes forward (measured on a 1080p H.264 file with a keyframe every 2 s: ~0.5 s
for a random frame, ~25-40 ms per following frame; one step *back* costs a whole random access
again). So :class:`FrameLoader` runs the decoder in its own thread and the GUI never waits:

* :meth:`FrameLoader.request` returns a cached frame at once, or None and the frame follows in
  :attr:`FrameLoader.frameReady`. Only the newest request is served: while a user drags the
  timeline, the frames they dragged past are never decoded.
* After serving a frame it decodes ahead (``ahead`` frames, sequential and cheap) so playing and
  stepping forward hit the cache.
* Stepping backward (a request 1-10 frames before the previous one) decodes the ``behind``
  frames before the target in one forward run, so the next steps back are cache hits instead
  of one keyframe seek each.
* The cache is an LRU bounded in bytes (default 384 MB: ~60 frames of 1080p, ~300 of 480p).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QThread, pyqtSignal
from PyQt6.QtGui import QImage

log = logging.getLogger(__name__)


class Direction(enum.Enum):
    """How a request relates to the previous one."""

    FORWARD = "forward"
    BACKWARD = "backward"
    JUMP = "jump"


def direction(previous: int | None, index: int, near: int = 10) -> Direction:
    """Classify a move from frame ``previous`` to ``index`` (steps up to ``near`` frames)."""
    if previous is None:
        return Direction.JUMP
    delta = index - previous
    if 0 < delta <= near:
        return Direction.FORWARD
    if -near <= delta < 0:
        return Direction.BACKWARD
    return Direction.JUMP


def to_qimage(rgb: np.ndarray) -> QImage:
    """A QImage that owns its pixels, in RGB32 (drawn without conversion), from RGB.

    The pixels are copied by numpy, which releases the GIL while copying; Qt's own
    ``convertToFormat`` holds it (measured: ~3 ms per 1080p frame, stalling the GUI thread
    for up to ~100 ms while the loader converts frames back to back).

    Args:
        rgb: (H, W, 3) uint8.
    """
    h, w, _ = rgb.shape
    image = QImage(w, h, QImage.Format.Format_RGB32)
    bits = image.bits()
    bits.setsize(image.sizeInBytes())
    bgrx = np.frombuffer(bits, np.uint8).reshape(h, image.bytesPerLine() // 4, 4)[:, :w]
    bgrx[..., 0] = rgb[..., 2]  # RGB32 is 0xffRRGGBB: bytes B, G, R, 255 in memory
    bgrx[..., 1] = rgb[..., 1]
    bgrx[..., 2] = rgb[..., 0]
    bgrx[..., 3] = 255
    return image


class FrameCache:
    """A thread-safe LRU of decoded frames, bounded in bytes.

    Args:
        max_bytes: Memory budget; at least ``min_frames`` frames are kept whatever their size.
        min_frames: Lower bound on the number of frames kept.
    """

    def __init__(self, max_bytes: int = 384 * 2**20, min_frames: int = 24):
        self.max_bytes = max_bytes
        self.min_frames = min_frames
        self._images: OrderedDict[int, QImage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __contains__(self, index: int) -> bool:
        with self._lock:
            return index in self._images

    def __len__(self) -> int:
        with self._lock:
            return len(self._images)

    def get(self, index: int) -> QImage | None:
        """The frame if cached (and mark it recently used), else None."""
        with self._lock:
            image = self._images.get(index)
            if image is not None:
                self._images.move_to_end(index)
            return image

    def put(self, index: int, image: QImage) -> None:
        """Add a frame, evicting the least recently used ones beyond the budget."""
        with self._lock:
            old = self._images.pop(index, None)
            if old is not None:
                self._bytes -= old.sizeInBytes()
            self._images[index] = image
            self._bytes += image.sizeInBytes()
            while len(self._images) > self.min_frames and self._bytes > self.max_bytes:
                _, evicted = self._images.popitem(last=False)
                self._bytes -= evicted.sizeInBytes()

    def clear(self) -> None:
        """Drop every frame."""
        with self._lock:
            self._images.clear()
            self._bytes = 0


@dataclass
class LoaderStats:
    """What the loader did, for the status bar and the scrubbing benchmark.

    Attributes:
        requests: Calls of :meth:`FrameLoader.request`.
        hits: Requests answered from the cache.
        decoded: Frames decoded (requested or prefetched).
        decode_s: Seconds spent decoding.
        served_s: Seconds from a missed request to its frame being ready, per missed request
            that was served (superseded requests are not counted).
    """

    requests: int = 0
    hits: int = 0
    decoded: int = 0
    decode_s: float = 0.0
    served_s: list[float] = field(default_factory=list)

    @property
    def hit_rate(self) -> float:
        """Fraction of requests answered from the cache."""
        return self.hits / self.requests if self.requests else 0.0


class FrameLoader(QThread):
    """Decodes requested frames of one video in a background thread.

    Args:
        path: The video.
        cache_bytes: Memory budget of the frame cache.
        ahead: Frames decoded after each served frame.
        behind: Frames decoded before a target reached by stepping backward.

    Signals:
        opened(VideoInfo): The video was opened (emitted once, from the thread).
        frameReady(int, QImage): A requested frame is decoded.
        frameFailed(int, str): A requested frame cannot be decoded (one-line reason).
        failed(str): The video cannot be opened (one-line reason); the thread ends.
    """

    opened = pyqtSignal(object)
    frameReady = pyqtSignal(int, QImage)
    frameFailed = pyqtSignal(int, str)
    failed = pyqtSignal(str)

    def __init__(self, path: str | Path, cache_bytes: int = 384 * 2**20, ahead: int = 8,
                 behind: int = 12, parent=None):
        super().__init__(parent)
        self.path = Path(path)
        self.cache = FrameCache(cache_bytes, min_frames=ahead + behind + 4)
        self.ahead, self.behind = ahead, behind
        self.stats = LoaderStats()
        self._cond = threading.Condition()
        self._target: tuple[int, Direction, float, bool] | None = None
        self._last: int | None = None
        self._stopping = False
        self.n_frames: int | None = None  # known once opened
        self.times_s: np.ndarray | None = None  # (n_frames,) presentation times, once opened

    # ------------------------------------------------------------------ GUI thread
    def request(self, index: int) -> QImage | None:
        """Ask for frame ``index``: the cached image now, or None and ``frameReady`` later.

        Every request (hit or miss) also moves the prefetch window to ``index``.
        """
        image = self.cache.get(index)
        self.stats.requests += 1
        self.stats.hits += image is not None
        with self._cond:
            move = direction(self._last, index)
            self._last = index
            self._target = (index, move, time.perf_counter(), image is None)
            self._cond.notify()
        return image

    def stop(self, wait: bool = True) -> None:
        """End the thread (after the frame being decoded, if any)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if wait:
            self.wait()

    # ------------------------------------------------------------------ loader thread
    def run(self) -> None:
        """Open the video, then serve requests until stopped."""
        from clamp_track.errors import ClampTrackError
        from clamp_track.io.video import VideoReader

        try:
            reader = VideoReader(self.path, prefetch=0)
        except ClampTrackError as exc:
            self.failed.emit(str(exc))
            return
        self.n_frames = reader.info.n_frames
        self.times_s = reader.times_s
        self.opened.emit(reader.info)
        try:
            while True:
                job = self._next_job()
                if job is None:
                    return
                self._serve(reader, *job)
        finally:
            reader.close()

    def _next_job(self):
        with self._cond:
            while not self._stopping and self._target is None:
                self._cond.wait()
            if self._stopping:
                return None
            job, self._target = self._target, None
            return job

    def _superseded(self) -> bool:
        with self._cond:
            return self._stopping or self._target is not None

    def _serve(self, reader, index: int, move: Direction, asked: float, missed: bool) -> None:
        """Decode the target (after the frames before it when stepping back), then prefetch."""
        if not 0 <= index < self.n_frames:
            return
        if index not in self.cache:
            first = max(0, index - self.behind) if move is Direction.BACKWARD else index
            for i in range(first, index + 1):
                if self._superseded():
                    return
                if i not in self.cache and not self._decode(reader, i, report=i == index):
                    return
        image = self.cache.get(index)
        if image is not None and missed:  # a hit was already answered by request()
            self.stats.served_s.append(time.perf_counter() - asked)
            self.frameReady.emit(index, image)
        for i in range(index + 1, min(index + 1 + self.ahead, self.n_frames)):
            if self._superseded():
                return
            if i not in self.cache:
                self._decode(reader, i, report=False)

    def _decode(self, reader, index: int, report: bool) -> bool:
        """Decode one frame into the cache; False (and a signal if ``report``) on failure."""
        from clamp_track.errors import ClampTrackError

        start = time.perf_counter()
        try:
            image = to_qimage(reader.read(index).image)
        except (ClampTrackError, IndexError) as exc:
            if report:
                self.frameFailed.emit(index, str(exc))
            return False
        self.stats.decoded += 1
        self.stats.decode_s += time.perf_counter() - start
        self.cache.put(index, image)
        return True
