from __future__ import annotations

import numpy as np
import pytest

from clamp_track.types import Detections, Frame, PosePredictions, VideoInfo


def test_detections_are_validated_and_defaulted():
    d = Detections([[0, 0, 10, 10], [5, 5, 20, 30]], [0.9, 0.5])
    assert d.boxes.dtype == np.float32 and d.track_ids.tolist() == [-1, -1]
    assert len(d[d.scores > 0.6]) == 1 and len(Detections.empty()) == 0
    with pytest.raises(ValueError, match="scores"):
        Detections([[0, 0, 10, 10]], [0.9, 0.5])
    with pytest.raises(ValueError, match="boxes"):
        Detections([[0, 0, 10]], [0.9])


def test_pose_predictions_shapes():
    p = PosePredictions(3, [1, 2], np.zeros((2, 4)), np.zeros((2, 17, 2)), np.ones((2, 17)))
    assert p.box_scores.tolist() == [1.0, 1.0] and len(p) == 2
    with pytest.raises(ValueError, match="scores"):
        PosePredictions(3, [1], np.zeros((1, 4)), np.zeros((1, 17, 2)), np.ones((1, 16)))


def test_frame_and_video_info():
    with pytest.raises(ValueError, match="uint8 RGB"):
        Frame(0, 0.0, np.zeros((4, 4, 3), np.float32))
    assert VideoInfo("v.mp4", 640, 480, 25.0, 100).duration_s == 4.0
