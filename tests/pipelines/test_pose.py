from __future__ import annotations

import numpy as np
import pytest
import torch

from clamp_track.data.transforms import affine_matrix, box_to_center_scale, normalize, warp_crop
from clamp_track.models import create_model, decode_heatmaps
from clamp_track.pipelines.pose import PoseConfig, PoseEstimator
from clamp_track.types import Detections


@pytest.fixture(scope="module")
def frames(shared_data):
    import cv2

    folder = shared_data / "badja-davis" / "DAVIS" / "JPEGImages" / "480p" / "cows"
    return [cv2.cvtColor(cv2.imread(str(folder / f"{i:05d}.jpg")), cv2.COLOR_BGR2RGB)
            for i in range(3)]


def test_batched_predictions_equal_a_single_crop_by_hand(frames):
    model = create_model("clamp_tiny_rn50")
    dets = [Detections([[100, 80, 400, 300], [500, 100, 700, 420]], [0.9, 0.8], track_ids=[1, 2]),
            Detections.empty(),
            Detections([[300, 50, 650, 460]], [0.7], track_ids=[1])]
    poses = PoseEstimator(model, PoseConfig(batch_size=2, flip_test=False)).predict(
        frames, dets, [10, 11, 12])
    assert [len(p) for p in poses] == [2, 0, 1] and [p.frame_index for p in poses] == [10, 11, 12]
    assert poses[0].track_ids.tolist() == [1, 2] and poses[0].keypoints.shape == (2, 17, 2)

    # the same crop done by hand: x, y, w, h box -> centre/scale -> warp -> model -> decode
    center, scale = box_to_center_scale([[300, 50, 350, 410]])
    crop = warp_crop(frames[2], affine_matrix(center, scale, (256, 256))[0], (256, 256))
    with torch.no_grad():
        heat = model(normalize(crop[None], model.config.mean, model.config.std))["heatmaps"]
    kp, conf = decode_heatmaps(heat, torch.from_numpy(center), torch.from_numpy(scale))
    np.testing.assert_allclose(poses[2].keypoints[0], kp[0].numpy(), atol=1e-3)
    np.testing.assert_allclose(poses[2].scores[0], conf[0].numpy(), atol=1e-5)


def test_flip_test_and_batch_size_do_not_change_the_mapping(frames):
    model = create_model("clamp_tiny_vitb16")
    dets = [Detections([[100, 80, 400, 300], [500, 100, 700, 420]], [0.9, 0.8], track_ids=[3, 4])]
    one = PoseEstimator(model, PoseConfig(batch_size=1)).predict(frames[:1], dets, [0])[0]
    many = PoseEstimator(model, PoseConfig(batch_size=8)).predict(frames[:1], dets, [0])[0]
    np.testing.assert_allclose(one.keypoints, many.keypoints, atol=1e-3)
    # keypoints decode into the square, 1.25x padded crop of their own box
    for box, kp in zip(dets[0].boxes, one.keypoints):
        centre = (box[:2] + box[2:]) / 2
        half = 1.25 * (box[2:] - box[:2]).max() / 2
        assert (np.abs(kp - centre) <= half).all()
