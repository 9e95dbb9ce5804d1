"""The timeline's per-pixel rendering and seeking."""

from __future__ import annotations

import numpy as np
import pytest
from PyQt6.QtCore import QPoint, Qt
from PyQt6.QtGui import QColor

from clamp_track.gui.timeline import MAX_ROWS_HEIGHT, Timeline, TimelineRow, column_coverage

pytestmark = pytest.mark.usefixtures("qapp")


@pytest.mark.parametrize(("frames", "n", "width", "expected"), [
    ([0, 1, 2, 9], 10, 5, [1.0, 0.5, 0.0, 0.0, 0.5]),  # two frames per column
    ([0, 3], 4, 8, [1, 1, 0, 0, 0, 0, 1, 1]),  # a short video stretches over the width
    ([], 10, 3, [0, 0, 0]),
    ([5, 50], 10, 2, [0, 0.2]),  # frames outside the video are ignored
])
def test_column_coverage(frames, n, width, expected):
    np.testing.assert_allclose(column_coverage(np.array(frames, int), n, width), expected)


def test_renders_presence_low_confidence_and_marks(qtbot):
    timeline = Timeline()
    qtbot.addWidget(timeline)
    timeline.resize(600, timeline.height())
    frames = np.arange(0, 500)
    low = (frames >= 400)
    timeline.set_data(1000, [TimelineRow(1, QColor("#4e9bff"), frames, low)],
                      corrected=np.array([100]), flagged=np.array([700]))
    image = timeline.grab().toImage()
    rect = timeline._track_rect()
    top_row = rect.top() + 2 * (8 + 2) + 2  # inside the track's presence band
    bottom = rect.top() + 2 * (8 + 2) + 10  # its low-confidence strip

    def x(frame):
        return int(timeline.x_of(frame))

    assert image.pixelColor(x(200), top_row).name() == "#4e9bff"
    assert image.pixelColor(x(700), top_row).name() != "#4e9bff"  # absent there
    assert image.pixelColor(x(450), bottom).name() == "#e6194b"  # low confidence
    assert image.pixelColor(x(100), rect.top() + 12).name() == "#00d7ff"  # corrected
    assert image.pixelColor(x(700), rect.top() + 3).name() == "#ff9f1c"  # flagged
    with qtbot.waitSignal(timeline.seekRequested) as seek:
        qtbot.mouseClick(timeline, Qt.MouseButton.LeftButton, pos=QPoint(x(333), top_row))
    assert abs(seek.args[0] - 333) <= 1


def test_hundreds_of_tracks_keep_the_timeline_small(qtbot):
    timeline = Timeline()
    qtbot.addWidget(timeline)
    rows = [TimelineRow(t, QColor("#ffffff"), np.arange(t, t + 10), np.zeros(10, bool))
            for t in range(1, 301)]
    timeline.set_data(400, rows, np.zeros(0, int), np.zeros(0, int))
    assert timeline.height() <= 2 * 6 + 2 * (8 + 2) + MAX_ROWS_HEIGHT
    timeline.grab()  # renders without error
