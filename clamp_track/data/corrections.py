"""Training data from labels: instances, a held-out split, replay mixing, colour augmentation.

:func:`to_instances` turns :class:`~clamp_track.io.labels.Labels` (corrected video frames,
DeepLabCut or COCO labels) into the :class:`~clamp_track.data.records.Instance` records every
dataset is made of; :func:`split_images` holds out whole images (all animals of a frame go to
the same side, so the validation set never shows the model a frame it trained on);
:class:`FinetuneDataset` is a :class:`~clamp_track.data.dataset.TopDownDataset` that adds a
fresh, seeded draw of replay samples from a base dataset to every epoch and jitters the colours
of its crops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clamp_track.config import check_fractions
from clamp_track.data.augment import AugmentConfig
from clamp_track.data.dataset import TopDownDataset
from clamp_track.data.records import Instance
from clamp_track.errors import InputError
from clamp_track.io.labels import Label, Labels, VideoFrame, label_box
from clamp_track.skeleton import KeypointSet


def to_instances(items: Sequence[Label], keypoints: KeypointSet, *, first_image_id: int = 1,
                 first_instance_id: int = 1, **margins) -> list[Instance]:
    """Training records of the labels with at least one labelled keypoint.

    Args:
        items: Labels in ``keypoints`` order (image file paths or :class:`VideoFrame` sources).
        keypoints: Their keypoint set.
        first_image_id: Image ids are given per distinct image from here.
        first_instance_id: Instance ids are given per record from here.
        **margins: ``margin_px`` / ``margin_frac`` of keypoint-derived boxes.

    Returns:
        One :class:`Instance` per labelled animal: box from :func:`label_box`, keypoints
        float32 with unlabelled ones at ``0, 0, 0``, species = the video name.
    """
    image_ids: dict[tuple[str, str], int] = {}
    records = []
    for item in items:
        if item.keypoints.shape[0] != keypoints.num_keypoints:
            raise ValueError(f"{item.image_name}: {item.keypoints.shape[0]} keypoints, the set "
                             f"has {keypoints.num_keypoints}")
        if not item.labelled.any():
            continue
        box = label_box(item, **margins)
        if box is None or box[2] <= 1 or box[3] <= 1:
            continue
        image_id = image_ids.setdefault(item.image_key, first_image_id + len(image_ids))
        kps = np.where(item.labelled[:, None], item.keypoints, 0.0).astype(np.float32)
        records.append(Instance(
            image=item.image, bbox=box, keypoints=kps, image_id=image_id,
            instance_id=first_instance_id + len(records), species=item.video))
    return records


@dataclass(frozen=True)
class Split:
    """Labels divided into training and held-out (validation) parts by image.

    Attributes:
        train: Labels to train on.
        val: Held-out labels (early stopping and the reported metric); may be empty.
    """

    train: list[Label]
    val: list[Label]


def split_images(labels: Labels, val_fraction: float, *, min_images: int = 5,
                 seed: int = 0) -> Split:
    """Hold out a seeded random ``val_fraction`` of the labelled images.

    Args:
        labels: The labels (only those with labelled keypoints are used).
        val_fraction: Fraction of images held out (rounded, at least one when holding out).
        min_images: Hold nothing out below this many labelled images (too few to spare).
        seed: Seed of the choice.

    Returns:
        The :class:`Split`; every image of the labels is on exactly one side.
    """
    items = labels.labelled_items()
    images = list(dict.fromkeys(item.image_key for item in items))
    n_val = 0
    if len(images) >= min_images and val_fraction > 0:
        n_val = min(len(images) - 1, max(1, round(val_fraction * len(images))))
    order = np.random.default_rng(seed).permutation(len(images))
    held = {images[i] for i in order[:n_val]}
    return Split([i for i in items if i.image_key not in held],
                 [i for i in items if i.image_key in held])


@dataclass(frozen=True)
class PhotometricConfig:
    """Colour augmentation of training crops (drawn per sample, seeded like the geometry).

    Attributes:
        prob: Probability of jittering a crop at all.
        brightness: Largest brightness change, a fraction of the intensity (±).
        contrast: Largest contrast change (factor 1 ± this).
        saturation: Largest saturation change (factor 1 ± this).
        grey_prob: Probability of turning the crop grey (colour cameras vs IR / mono footage).
        blur_prob: Probability of a light Gaussian blur (motion, focus).
    """

    prob: float = 0.8
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    grey_prob: float = 0.1
    blur_prob: float = 0.1

    def __post_init__(self):
        check_fractions(self, "prob", "grey_prob", "blur_prob")


def jitter_colours(crop: np.ndarray, rng: np.random.Generator,
                   cfg: PhotometricConfig) -> np.ndarray:
    """Brightness, contrast, saturation, grey and blur on a (3, H, W) uint8 RGB crop."""
    if rng.random() >= cfg.prob:
        return crop
    x = crop.astype(np.float32)
    mean = x.mean()
    x = mean + (x - mean) * (1 + rng.uniform(-cfg.contrast, cfg.contrast))
    x = x + 255.0 * rng.uniform(-cfg.brightness, cfg.brightness)
    grey = x.mean(axis=0, keepdims=True)
    factor = 0.0 if rng.random() < cfg.grey_prob else 1 + rng.uniform(-cfg.saturation,
                                                                      cfg.saturation)
    x = grey + (x - grey) * factor
    if rng.random() < cfg.blur_prob:
        import cv2

        x = cv2.GaussianBlur(x.transpose(1, 2, 0), (0, 0), rng.uniform(0.5, 1.5))
        x = x.transpose(2, 0, 1)
    return np.clip(x, 0, 255).astype(np.uint8)


class FinetuneDataset(TopDownDataset):
    """Training crops of the labels, plus per-epoch replay samples from a base dataset.

    An epoch is ``len(records)`` label samples (or ``labels_per_epoch`` of them: consecutive
    slices of seeded permutations, so a large label set is seen whole every few epochs while
    an epoch stays one validation period) followed by ``replay_per_epoch`` samples drawn
    (seeded by ``(seed, epoch, index)``) from ``replay``: each epoch sees other base
    instances, so a large base set is replayed without growing the epoch. Every crop gets the
    geometric augmentation of ``augment`` and, if given, :func:`jitter_colours`.

    Args:
        records: The label instances (repeat them to lengthen an epoch).
        keypoints: The keypoint set.
        input_size: Model input (height, width).
        augment: Geometric augmentation.
        photometric: Colour augmentation (None: off).
        replay: Base-dataset instances in the same keypoint set (None: no replay).
        replay_per_epoch: Replay samples per epoch.
        labels_per_epoch: Label samples per epoch (None: all records).
        seed: Seed of all draws.
    """

    def __init__(self, records: Sequence[Instance], keypoints: KeypointSet,
                 input_size=(256, 256), augment: AugmentConfig | None = None, *,
                 photometric: PhotometricConfig | None = None,
                 replay: Sequence[Instance] | None = None, replay_per_epoch: int = 0,
                 labels_per_epoch: int | None = None, seed: int = 0):
        super().__init__(records, keypoints, input_size, augment, seed=seed)
        self.photometric = photometric
        self.labels_per_epoch = min(len(records), labels_per_epoch or len(records))
        self.replay = None
        self.replay_per_epoch = 0
        if replay and replay_per_epoch > 0:
            self.replay = TopDownDataset(replay, keypoints, input_size, augment, seed=seed + 1)
            self.replay_per_epoch = int(replay_per_epoch)

    def __len__(self) -> int:
        return self.labels_per_epoch + self.replay_per_epoch

    def record_index(self, epoch: int, index: int) -> int:
        """The record behind label sample ``index`` of ``epoch``."""
        n, per = len(self.records), self.labels_per_epoch
        if per == n:
            return index
        position = int(epoch) * per + index  # along an endless sequence of permutations
        cycle, offset = divmod(position, n)
        return int(np.random.default_rng((self.seed, cycle, 5)).permutation(n)[offset])

    def __getitem__(self, key) -> dict:
        """A label sample, or for indices past the labels a replay sample (same keys)."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if index < self.labels_per_epoch:
            sample = super().__getitem__((epoch, self.record_index(epoch, index)))
            sample["index"] = np.int64(index)
        else:
            rng = np.random.default_rng((self.seed, int(epoch), int(index), 3))
            j = int(rng.integers(len(self.replay)))
            sample = self.replay[(epoch, j)]
            sample["index"] = np.int64(index)
        if self.photometric is not None:
            rng = np.random.default_rng((self.seed, int(epoch), int(index), 11))
            sample["image"] = jitter_colours(sample["image"], rng, self.photometric)
        return sample


def map_records(records: Sequence[Instance], source: KeypointSet,
                target: KeypointSet) -> tuple[list[Instance], list[str]]:
    """Base-dataset records re-expressed in another keypoint set, matched by name.

    Keypoints of ``target`` that ``source`` lacks are unlabelled; records left with no
    labelled keypoint are dropped. (DeepLabCut's "memory replay" maps datasets onto its
    SuperAnimal keypoints with conversion tables in the same spirit.)

    Returns:
        ``(records, shared)``: the mapped records and the names both sets have.

    Raises:
        InputError: If the sets share no keypoint name.
    """
    from dataclasses import replace

    from clamp_track.models import match_keypoints

    pairs = match_keypoints(source, target)
    if not pairs:
        raise InputError(
            f"the replay data's keypoints ({', '.join(source.source_names)}) share no name "
            f"with keypoint set {target.name!r} ({', '.join(target.source_names)}); replay "
            "needs a base dataset with some of the same keypoints")
    new_idx = np.array([j for j, _ in pairs])
    old_idx = np.array([i for _, i in pairs])
    out = []
    for rec in records:
        kps = np.zeros((target.num_keypoints, 3), np.float32)
        kps[new_idx] = rec.keypoints[old_idx]
        if (kps[:, 2] > 0).any():
            out.append(replace(rec, keypoints=kps))
    return out, [target.names[j] for j in new_idx]


def repeats_for(n: int, batch_size: int, steps_per_epoch: int, replay_ratio: float) -> int:
    """How often to repeat ``n`` label records so an epoch has about ``steps_per_epoch`` steps.

    Tiny label sets would otherwise make epochs of one step; repeating them (each copy gets
    its own augmentation) keeps "one epoch" = "one validation period".
    """
    per_epoch = steps_per_epoch * batch_size / (1.0 + replay_ratio)
    return max(1, math.ceil(per_epoch / max(n, 1)))


def imbalance_warnings(items: Sequence[Label], keypoints: KeypointSet, *,
                       stretch_gap: int = 30) -> list[str]:
    """Ways a set of labels is lopsided, as sentences for the user (empty when it is fine).

    DeepLabCut's labelling docs warn that labelling only easy or similar frames gives a model
    that fails elsewhere; corrections made while reviewing are prone to exactly that. Checked:
    keypoints with no label or far fewer than the others (the model learns nothing new for
    them), corrected video frames from a few short stretches of video (near-duplicate frames
    teach less than varied ones) and one source dominating several.

    Args:
        items: The training labels.
        keypoints: Their keypoint set.
        stretch_gap: Frames further apart than this start a new stretch.

    Returns:
        Warning sentences.
    """
    out = []
    if not items:
        return out
    counts = np.sum([i.labelled for i in items], axis=0)
    none = [keypoints.names[k] for k in np.flatnonzero(counts == 0)]
    if none:
        out.append(f"no labels for {', '.join(none)}: fine-tuning cannot improve them")
    few = [keypoints.names[k] for k in np.flatnonzero((counts > 0)
                                                      & (counts < 0.2 * np.median(counts)))]
    if few:
        out.append(f"few labels for {', '.join(few)} compared with the other keypoints")
    # only video frames of stores: frame numbers in label-file image names may be renumbered
    frames = sorted({(i.origin, i.video, i.frame) for i in items
                     if isinstance(i.image, VideoFrame) and i.frame is not None})
    stretches = sum(1 for a, b in zip([None] + frames, frames)
                    if a is None or a[:2] != b[:2] or b[2] - a[2] > stretch_gap)
    if len(frames) >= 10 and stretches < 3:
        out.append(f"the {len(frames)} labelled frames come from {stretches} short "
                   f"stretch(es) of video; frames from other scenes and poses teach more")
    origins = [i.origin for i in items]
    top = max(set(origins), key=origins.count)
    if len(set(origins)) > 1 and origins.count(top) > 0.8 * len(origins):
        out.append(f"{100 * origins.count(top) // len(origins)}% of the labels come from {top}")
    return out
