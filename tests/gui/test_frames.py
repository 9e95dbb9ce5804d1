"""The frame loader: decoding off the GUI thread, the cache, prefetching, stepping back."""

from __future__ import annotations

import numpy as np
import pytest
from PyQt6.QtGui import QImage

from clamp_track.gui.frames import Direction, FrameCache, FrameLoader, direction, to_qimage
from clamp_track.io.video import VideoReader

pytestmark = pytest.mark.usefixtures("qapp")


def _rgb(image: QImage) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an RGB32 QImage."""
    bits = image.constBits()
    bits.setsize(image.sizeInBytes())
    bgra = np.frombuffer(bits, np.uint8).reshape(image.height(), image.bytesPerLine() // 4, 4)
    return bgra[:, :image.width(), 2::-1]


@pytest.fixture
def loader(qtbot, cows_results):
    loader = FrameLoader(cows_results.video, ahead=4, behind=6)
    with qtbot.waitSignal(loader.opened, timeout=20000) as opened:
        loader.start()
    assert opened.args[0].n_frames == 104 and len(loader.times_s) == 104
    yield loader
    loader.stop()


def test_a_requested_frame_arrives_exact_then_comes_from_the_cache(qtbot, loader,
                                                                   cows_results):
    with qtbot.waitSignal(loader.frameReady, timeout=20000) as ready:
        assert loader.request(20) is None  # not decoded yet: the GUI does not wait
    index, image = ready.args
    with VideoReader(cows_results.video) as reader:
        expected = reader.read(20).image
    assert index == 20 and np.array_equal(_rgb(image), expected)
    assert loader.request(20) == image and loader.stats.hits == 1
    qtbot.waitUntil(lambda: all(i in loader.cache for i in range(21, 25)))  # read ahead
    assert 25 not in loader.cache and loader.request(21) is not None


def test_stepping_back_decodes_the_frames_before_in_one_run(qtbot, loader):
    with qtbot.waitSignal(loader.frameReady, timeout=20000):
        loader.request(60)
    with qtbot.waitSignal(loader.frameReady, timeout=20000) as ready:
        assert loader.request(59) is None
    assert ready.args[0] == 59
    assert all(i in loader.cache for i in range(53, 60))  # behind=6 frames before 59
    hits = loader.stats.hits
    for i in range(58, 52, -1):  # the next steps back are instant
        assert loader.request(i) is not None
    assert loader.stats.hits == hits + 6


def test_only_the_newest_request_is_served(qtbot, loader):
    served = []
    loader.frameReady.connect(lambda i, _: served.append(i))
    loader.request(10)
    loader.request(80)
    loader.request(30)
    qtbot.waitUntil(lambda: 30 in served, timeout=20000)
    assert served[-1] == 30 and set(served) <= {10, 80, 30}
    loader.request(500)  # outside the video: ignored
    with qtbot.waitSignal(loader.frameReady, timeout=20000) as ready:
        loader.request(31 + 40)
    assert ready.args[0] == 71


def test_an_unreadable_video_fails_with_one_line(qtbot, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("field notes\n" * 50)
    loader = FrameLoader(fake)
    with qtbot.waitSignal(loader.failed, timeout=20000) as failed:
        loader.start()
    assert "notes.mp4" in failed.args[0] and "\n" not in failed.args[0]
    loader.wait()


@pytest.mark.parametrize(("previous", "index", "expected"), [
    (None, 5, Direction.JUMP), (5, 6, Direction.FORWARD), (5, 15, Direction.FORWARD),
    (5, 16, Direction.JUMP), (5, 4, Direction.BACKWARD), (15, 5, Direction.BACKWARD),
    (16, 5, Direction.JUMP), (5, 5, Direction.JUMP),
])
def test_direction(previous, index, expected):
    assert direction(previous, index) is expected


def test_cache_is_an_lru_bounded_in_bytes():
    image = to_qimage(np.zeros((10, 10, 3), np.uint8))  # 400 bytes as RGB32
    cache = FrameCache(max_bytes=2000, min_frames=2)
    for i in range(8):
        cache.put(i, image)
    assert len(cache) == 5 and 2 not in cache and 3 in cache
    assert cache.get(3) is image  # now most recently used
    cache.put(8, image)
    assert 3 in cache and 4 not in cache
    big = FrameCache(max_bytes=10, min_frames=2)
    for i in range(4):
        big.put(i, image)
    assert len(big) == 2  # never below min_frames, whatever the budget
