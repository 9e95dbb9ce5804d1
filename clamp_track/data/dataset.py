"""Top-down samples from instance records, and the loaders that batch them.

:class:`TopDownDataset` turns each :class:`~clamp_track.data.records.Instance` into one crop:
box -> centre/scale (the model's aspect ratio, padding 1.25) -> optional augmentation
(:mod:`clamp_track.data.augment`) -> one affine warp. A sample holds the uint8 crop and the crop
keypoints; normalisation and the heatmap targets are computed per *batch* on the training device
by :func:`prepare_batch` (one vectorised call instead of per-sample Python and float copies, and
a quarter of the bytes through pinned memory).

The per-sample work in the workers is image decoding (``cv2.imread``) and one ``warpAffine``,
both in C; cv2's own thread pool is switched off in the workers so that they do not compete.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from clamp_track.data.augment import AugmentConfig, mirror_matrix, random_geometry
from clamp_track.data.records import Instance, load_image, records_to_coco
from clamp_track.data.transforms import (
    affine_matrix,
    box_to_center_scale,
    transform_points,
    warp_crop,
)
from clamp_track.models.config import ModelConfig
from clamp_track.models.heatmaps import generate_targets
from clamp_track.skeleton import KeypointSet

#: Heatmap Gaussian sigma in heatmap cells (official: 2).
TARGET_SIGMA = 2.0
#: Seed-stream tag of the per-instance centre jitter (kept apart from the per-epoch draws).
SHIFT_STREAM = 1_000_003


class TopDownDataset(torch.utils.data.Dataset):
    """Crops of labelled instances for training and evaluation.

    Indexing with an int gives the un-augmented sample (or epoch 0's draw); the training loader
    indexes with ``(epoch, index)`` keys (see :class:`EpochSampler`) so every epoch draws new,
    reproducible augmentations; the box-centre jitter is the instance's own, the same in every
    epoch, unless ``augment.shift_redraw`` (see :mod:`clamp_track.data.augment`).

    Args:
        records: The instances (keypoints in ``keypoints``' order).
        keypoints: The keypoint set (flip pairs, upper body).
        input_size: Model input (height, width) in pixels.
        augment: Augmentation settings; None for evaluation crops.
        seed: Seed of the augmentation draws.
        ground_truth: COCO ground truth for evaluating on these records (e.g. the annotation
            file's, which also holds unlabelled annotations); default: built from the records.
    """

    def __init__(
        self,
        records: Sequence[Instance],
        keypoints: KeypointSet,
        input_size: tuple[int, int] = (256, 256),
        augment: AugmentConfig | None = None,
        *,
        seed: int = 0,
        ground_truth: dict | None = None,
    ):
        self.records = list(records)
        self.keypoints = keypoints
        self.input_size = tuple(int(s) for s in input_size)
        self.augment = augment
        self.seed = int(seed)
        self._ground_truth = ground_truth
        self._flip = np.asarray(keypoints.flip_permutation())
        for rec in self.records:
            if rec.keypoints.shape[0] != keypoints.num_keypoints:
                raise ValueError(
                    f"{rec.describe()}: {rec.keypoints.shape[0]} keypoints, the keypoint set "
                    f"{keypoints.name!r} has {keypoints.num_keypoints}"
                )

    def __len__(self) -> int:
        return len(self.records)

    @property
    def aspect_ratio(self) -> float:
        """Model input width / height."""
        return self.input_size[1] / self.input_size[0]

    def ground_truth(self) -> dict:
        """COCO ground truth for these records (keypoints in the set's order)."""
        if self._ground_truth is None:
            self._ground_truth = records_to_coco(self.records, self.keypoints)
        return self._ground_truth

    def __getitem__(self, key) -> dict:
        """One sample.

        Args:
            key: ``index`` or ``(epoch, index)``.

        Returns:
            Dict of numpy arrays: ``image`` (3, H, W) uint8 RGB crop, ``keypoints`` (K, 2)
            float32 crop pixels, ``visible`` (K,) float32 (1 labelled, 0 not), ``center`` (2,)
            and ``scale`` (2,) float32 (200-px units), ``rotation`` float32 degrees, ``flipped``
            bool, ``index`` int64.
        """
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rec = self.records[index]
        center, scale = box_to_center_scale(rec.bbox[None], self.aspect_ratio)
        center, scale, rotation, flip = center[0], scale[0], 0.0, False
        if self.augment is not None:
            rng = np.random.default_rng((self.seed, int(epoch), int(index)))
            shift_rng = None  # official: the centre jitter is the instance's, in every epoch
            if not self.augment.shift_redraw:
                shift_rng = np.random.default_rng((self.seed, SHIFT_STREAM, int(index)))
            geo = random_geometry(rng, center, scale, rec.bbox, rec.keypoints, self.keypoints,
                                  self.augment, self.aspect_ratio, shift_rng)
            center, scale, rotation, flip = geo.center, geo.scale, geo.rotation, geo.flip
        height, width = self.input_size
        matrix = affine_matrix(center[None], scale[None], (width, height), rotation)[0]
        if flip:
            matrix = mirror_matrix(matrix, width)
        crop = warp_bgr_to_rgb_chw(load_image(rec.image, bgr=True), matrix, (width, height))
        points = transform_points(rec.keypoints[None, :, :2], matrix[None])[0]
        visible = (rec.keypoints[:, 2] > 0).astype(np.float32)
        if flip:
            points, visible = points[self._flip], visible[self._flip]
        return {
            "image": crop,
            "keypoints": points.astype(np.float32),
            "visible": visible,
            "center": np.asarray(center, np.float32),
            "scale": np.asarray(scale, np.float32),
            "rotation": np.float32(rotation),
            "flipped": flip,
            "index": np.int64(index),
        }


def warp_bgr_to_rgb_chw(image_bgr: np.ndarray, matrix: np.ndarray, size) -> np.ndarray:
    """Warp a BGR image (size = (width, height)); the crop as (3, H, W) RGB uint8."""
    crop = warp_crop(image_bgr, matrix, size)
    return np.ascontiguousarray(crop[:, :, ::-1].transpose(2, 0, 1))


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack samples into a batch of tensors (same keys; a leading batch dimension)."""
    return {key: torch.from_numpy(np.stack([s[key] for s in samples])) for key in samples[0]}


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` keys, shuffled per epoch with a seeded generator.

    The order of epoch ``e`` depends only on ``(seed, e)``, so a resumed run sees the same
    batches as an uninterrupted one. Call :meth:`set_epoch` before iterating.

    Args:
        size: Dataset length.
        shuffle: Random order (training) or index order.
        seed: Seed of the order.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0):
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order (and augmentations) to produce."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch, 7)).permutation(self.size)
        else:
            order = np.arange(self.size)
        return iter([(self.epoch, int(i)) for i in order])

    def __len__(self) -> int:
        return self.size


def _worker_init(_worker_id: int) -> None:
    import cv2

    cv2.setNumThreads(0)  # one decode per worker; no nested thread pools


def make_loader(
    dataset: TopDownDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    workers: int = 0,
    seed: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset`` with an :class:`EpochSampler`.

    Args:
        dataset: The samples.
        batch_size: Samples per batch.
        shuffle: Shuffle per epoch (training).
        workers: Worker processes (0: load in the calling process).
        seed: Seed of the order.
        pin_memory: Page-locked batches for fast, asynchronous copies to CUDA.
        drop_last: Drop a last, smaller batch.

    Returns:
        The loader; ``loader.sampler.set_epoch(e)`` selects the epoch.
    """
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), shuffle, seed),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=workers > 0,
        worker_init_fn=_worker_init if workers > 0 else None,
        prefetch_factor=4 if workers > 0 else None,
    )


def iters_per_epoch(size: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches per epoch."""
    return size // batch_size if drop_last else math.ceil(size / batch_size)


@dataclass
class Batch:
    """A batch ready for the model.

    Attributes:
        images: (B, 3, H, W) float32 normalised crops.
        targets: (B, K, h, w) heatmap targets.
        target_weights: (B, K) keypoint weights (labelled and near the crop).
        keypoints: (B, K, 2) crop-pixel keypoints (for L_feature).
        visible: (B, K) 1 for labelled keypoints (the official L_feature's weights).
    """

    images: torch.Tensor
    targets: torch.Tensor
    target_weights: torch.Tensor
    keypoints: torch.Tensor
    visible: torch.Tensor


def normalize_images(images: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """(B, 3, H, W) uint8 RGB -> float32 ``(x / 255 - mean) / std`` on the same device."""
    mean = torch.tensor(config.mean, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(config.std, device=images.device).view(1, 3, 1, 1) * 255
    return (images.float() - mean) / std


def prepare_batch(batch: dict, config: ModelConfig, device: torch.device) -> Batch:
    """Move a collated batch to ``device``, normalise it and make the heatmap targets."""
    images = batch["image"].to(device, non_blocking=True)
    keypoints = batch["keypoints"].to(device, non_blocking=True)
    visible = batch["visible"].to(device, non_blocking=True)
    targets, weights = generate_targets(
        keypoints, visible, config.input_size, config.heatmap_size, TARGET_SIGMA
    )
    return Batch(normalize_images(images, config), targets, weights, keypoints, visible)
