from __future__ import annotations

import numpy as np
import pytest
import torch

from clamp_track.data.transforms import affine_matrix, box_to_center_scale, normalize, warp_crop
from clamp_track.models import create_model, decode_heatmaps
from clamp_track.pipelines.pose import PoseConfig, PoseEstimator, PoseWorker
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


def _boxes():
    return [Detections([[100, 80, 400, 300], [500, 100, 700, 420]], [0.9, 0.8], track_ids=[1, 2]),
            Detections.empty(),
            Detections([[300, 50, 650, 460]], [0.7], track_ids=[1])]


@pytest.mark.parametrize("flip", [True, False])
def test_device_input_is_normalize_then_flip_bit_for_bit(frames, flip):
    """The uint8 crops become exactly today's float32 input, on either path."""
    pose = PoseEstimator(create_model("clamp_tiny_rn50"), PoseConfig(flip_test=flip))
    crops = pose.crop(frames, _boxes())
    assert crops.images.dtype == np.uint8 and crops.images.shape == (3, 256, 256, 3)
    x = normalize(crops.images, pose.model.config.mean, pose.model.config.std)
    expected = torch.cat([x, x.flip(3)]) if flip else x
    table = pose.input_batch(torch.from_numpy(crops.images))  # the CPU's table lookup
    on_device = pose._input_batch_torch(torch.from_numpy(crops.images))  # as on CUDA
    for batch in (table, on_device):
        assert torch.equal(batch, expected)
        assert batch.is_contiguous(memory_format=torch.channels_last)


def test_worker_batches_across_groups_and_returns_them_in_order(frames):
    """Groups of 1, 0 and 2 boxes in batches of 2: same predictions as one group at a time."""
    model = create_model("clamp_tiny_rn50")
    pose = PoseEstimator(model, PoseConfig(batch_size=2))
    images, dets = frames[::-1], _boxes()[::-1]
    expected = [pose.predict([f], [d], [i])[0] for i, (f, d) in enumerate(zip(images, dets))]
    with PoseWorker(pose) as worker:
        worker.submit("group 0", [images[0]], [dets[0]], [0])
        worker.submit("group 1", [images[1]], [dets[1]], [1])
        # one crop does not fill a batch, and the empty group waits for the one before it
        assert worker.ready() == [] and worker.pending == 2
        worker.submit("group 2", [images[2]], [dets[2]], [2])  # batch: group 0's + one of 2's
        seen = worker.drain()
        assert worker.pending == 0
    assert [tag for tag, _ in seen] == ["group 0", "group 1", "group 2"]
    for (_, [got]), want in zip(seen, expected):
        assert got.frame_index == want.frame_index
        assert got.track_ids.tolist() == want.track_ids.tolist()
        np.testing.assert_array_equal(got.keypoints, want.keypoints)
        np.testing.assert_array_equal(got.scores, want.scores)


def test_an_error_in_the_worker_is_raised_in_the_caller(frames):
    model = create_model("clamp_tiny_rn50")

    def broken(images):
        raise RuntimeError("out of memory on the device")

    model.forward = broken
    with PoseWorker(PoseEstimator(model)) as worker:
        worker.submit(0, frames[:1], _boxes()[:1], [0])
        with pytest.raises(RuntimeError, match="out of memory on the device"):
            worker.wait()
