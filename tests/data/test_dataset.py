from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from clamp_track.data.augment import AugmentConfig
from clamp_track.data.coco import load_coco
from clamp_track.data.dataset import (
    EpochSampler,
    TopDownDataset,
    collate,
    iters_per_epoch,
    make_loader,
    prepare_batch,
)
from clamp_track.data.records import Instance, load_image, records_to_coco
from clamp_track.data.transforms import normalize
from clamp_track.errors import InputError
from clamp_track.models import generate_targets, get_config
from clamp_track.skeleton import AP10K


@pytest.fixture()
def ap10k(shared_data):
    root = shared_data / "mmpose-tests" / "ap10k"
    return load_coco(root / "test_ap10k.json", root)


def test_sample_layout_on_real_images(ap10k):
    dataset = TopDownDataset(ap10k.records, AP10K, augment=AugmentConfig())
    sample = dataset[(0, 1)]
    assert sample["image"].shape == (3, 256, 256) and sample["image"].dtype == np.uint8
    assert sample["keypoints"].shape == (17, 2) and sample["keypoints"].dtype == np.float32
    assert sample["visible"].tolist().count(1.0) == 16
    assert sample["index"] == 1
    # RGB: the un-augmented crop equals a crop of the RGB image
    plain = TopDownDataset(ap10k.records, AP10K)[1]
    rgb = load_image(ap10k.records[1].image)
    assert rgb.shape == (683, 1024, 3)
    from clamp_track.data.transforms import affine_matrix, warp_crop

    m = affine_matrix(plain["center"][None], plain["scale"][None], (256, 256))[0]
    np.testing.assert_array_equal(plain["image"].transpose(1, 2, 0), warp_crop(rgb, m, (256, 256)))


def test_callable_image_sources(ap10k):
    image = load_image(ap10k.records[0].image)
    rec = ap10k.records[0]
    from_frame = Instance(functools.partial(np.copy, image), rec.bbox, rec.keypoints)
    a = TopDownDataset([from_frame], AP10K)[0]
    b = TopDownDataset([rec], AP10K)[0]
    np.testing.assert_array_equal(a["image"], b["image"])
    broken = Instance(functools.partial(np.zeros, (4, 4)), rec.bbox, rec.keypoints)
    with pytest.raises(InputError, match=r"must return an \(H, W, 3\) uint8 RGB array"):
        TopDownDataset([broken], AP10K)[0]
    with pytest.raises(ValueError, match="keypoint set 'ap10k' has 17"):
        TopDownDataset([Instance("x.jpg", rec.bbox, np.zeros((5, 3)))], AP10K)


def test_prepare_batch_normalises_and_makes_the_targets(ap10k):
    config = get_config("clamp_tiny_rn50")
    dataset = TopDownDataset(ap10k.records, AP10K, augment=AugmentConfig())
    batch = collate([dataset[(2, 0)], dataset[(2, 1)]])
    assert batch["image"].shape == (2, 3, 256, 256) and batch["image"].dtype == torch.uint8
    prepared = prepare_batch(batch, config, torch.device("cpu"))
    expected = normalize(batch["image"].permute(0, 2, 3, 1).numpy(), config.mean, config.std)
    torch.testing.assert_close(prepared.images, expected, rtol=1e-5, atol=1e-5)
    targets, weights = generate_targets(batch["keypoints"], batch["visible"], (256, 256), (64, 64))
    torch.testing.assert_close(prepared.targets, targets)
    torch.testing.assert_close(prepared.target_weights, weights)
    assert prepared.targets.shape == (2, 17, 64, 64)


def test_worker_processes_give_the_same_batches(ap10k):
    dataset = TopDownDataset(ap10k.records * 3, AP10K, augment=AugmentConfig(), seed=4)

    def epoch_batches(workers):
        loader = make_loader(dataset, 4, shuffle=True, workers=workers, seed=9)
        loader.sampler.set_epoch(3)
        return list(loader)

    serial, parallel = epoch_batches(0), epoch_batches(2)
    assert [len(b["index"]) for b in serial] == [4, 2] == [len(b["index"]) for b in parallel]
    for a, b in zip(serial, parallel):
        for key in a:
            torch.testing.assert_close(a[key], b[key])


def test_epoch_sampler_order_is_a_function_of_seed_and_epoch():
    s = EpochSampler(10, shuffle=True, seed=1)
    s.set_epoch(2)
    first = list(s)
    assert sorted(i for _, i in first) == list(range(10)) and {e for e, _ in first} == {2}
    assert list(s) == first
    s.set_epoch(3)
    assert list(s) != first
    assert [i for _, i in EpochSampler(4, shuffle=False)] == [0, 1, 2, 3]
    assert iters_per_epoch(10, 4) == 3 and iters_per_epoch(10, 4, drop_last=True) == 2


def test_records_to_coco_round_trip(ap10k):
    gt = records_to_coco(ap10k.records, AP10K)
    assert [a["id"] for a in gt["annotations"]] == [r.instance_id for r in ap10k.records]
    assert gt["categories"][0]["keypoints"] == list(AP10K.source_names)
    assert gt["annotations"][0]["num_keypoints"] == 16
    assert gt["annotations"][0]["area"] == pytest.approx(559104)


def test_package_exports_resolve_lazily():
    import clamp_track.data as data

    assert all(getattr(data, name) is not None for name in data.__all__)
    with pytest.raises(AttributeError):
        data.nothing_here  # noqa: B018
