"""Labelled instances: the plain records every dataset is made of.

An :class:`Instance` is one labelled animal: where its image comes from, its box and its
keypoints. COCO files (:mod:`clamp_track.data.coco`) produce them, and so can anything else —
frames of a video with user corrections, DeepLabCut labels — by building ``Instance`` objects
directly. :class:`~clamp_track.data.dataset.TopDownDataset`, the augmentations, the loaders and
the training loop only ever see these records.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clamp_track.errors import InputError
from clamp_track.skeleton import KeypointSet

#: An image source: a file path, or a zero-argument callable returning an (H, W, 3) uint8 RGB
#: array. Callables must be picklable (e.g. ``functools.partial`` of a module-level function)
#: so that DataLoader workers can receive them on every platform.
ImageSource = str | os.PathLike | Callable[[], np.ndarray]


@dataclass(frozen=True, eq=False)
class Instance:
    """One labelled animal.

    Attributes:
        image: Image file path or a callable returning the (H, W, 3) uint8 RGB image.
        bbox: (4,) float32 box ``x, y, w, h`` in image pixels.
        keypoints: (K, 3) float32 ``x, y, v`` in image pixels, in the keypoint set's order;
            ``v > 0`` means labelled (COCO's 1 "occluded" and 2 "visible" are both used).
        image_id: Identifier of the image (COCO ``image_id``; a frame index for videos).
        instance_id: Unique identifier of the instance (COCO annotation ``id``).
        category_id: Species / category id (COCO ``category_id``).
        species: Category name, e.g. ``"antelope"``.
        family: Super-category, e.g. ``"Bovidae"`` (AP-10K families).
        area: Segmentation area in px² used as the OKS scale; default ``w * h``.
        score: Box confidence (1 for ground-truth boxes); multiplies the instance score.
    """

    image: ImageSource
    bbox: np.ndarray
    keypoints: np.ndarray
    image_id: int = 0
    instance_id: int = 0
    category_id: int = 1
    species: str = ""
    family: str = ""
    area: float | None = None
    score: float = 1.0

    def __post_init__(self):
        bbox = np.asarray(self.bbox, dtype=np.float32).reshape(-1)
        keypoints = np.asarray(self.keypoints, dtype=np.float32)
        if bbox.shape != (4,):
            raise ValueError(f"instance {self.instance_id}: bbox must have 4 values, got {bbox}")
        if keypoints.ndim != 2 or keypoints.shape[1] != 3:
            raise ValueError(
                f"instance {self.instance_id}: keypoints must be (K, 3), got {keypoints.shape}"
            )
        object.__setattr__(self, "bbox", bbox)
        object.__setattr__(self, "keypoints", keypoints)

    @property
    def num_labelled(self) -> int:
        """Keypoints with ``v > 0``."""
        return int((self.keypoints[:, 2] > 0).sum())

    @property
    def oks_area(self) -> float:
        """The OKS scale area in px² (``area`` or the box area)."""
        return float(self.area) if self.area is not None else float(self.bbox[2] * self.bbox[3])

    def describe(self) -> str:
        """Short human-readable location for error messages."""
        where = f", {self.image}" if not callable(self.image) else ""
        return f"instance {self.instance_id} (image {self.image_id}{where})"


def load_image(source: ImageSource, *, bgr: bool = False) -> np.ndarray:
    """Read an instance's image.

    Args:
        source: A file path or a callable returning an RGB uint8 array.
        bgr: Return OpenCV's BGR channel order (saves a full-image colour conversion when
            only a crop is needed; reverse the crop's channels instead).

    Returns:
        (H, W, 3) uint8 array, RGB (or BGR with ``bgr=True``).

    Raises:
        InputError: If the file is missing or unreadable, or the callable returns a wrong array.
    """
    if callable(source):
        image = np.asarray(source())
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(
                f"image source {source!r} returned {image.dtype} {image.shape}; "
                "it must return an (H, W, 3) uint8 RGB array"
            )
        return image[..., ::-1] if bgr else image
    import cv2

    image = cv2.imread(os.fspath(source), cv2.IMREAD_COLOR)
    if image is None:
        reason = "not found" if not Path(source).is_file() else "not a readable image"
        raise InputError(f"{source}: image file {reason}")
    return image if bgr else image[..., ::-1]


def records_to_coco(records: Sequence[Instance], keypoints: KeypointSet) -> dict:
    """A COCO keypoint ground-truth dict built from records (for evaluation and export).

    Args:
        records: The instances.
        keypoints: Their keypoint set (names and skeleton go into the categories).

    Returns:
        ``{"images", "annotations", "categories"}`` with keypoints in the set's order.
    """
    images, categories, annotations = {}, {}, []
    for rec in records:
        source = rec.image if not callable(rec.image) else f"image_{rec.image_id}"
        images.setdefault(rec.image_id, {"id": int(rec.image_id), "file_name": str(source)})
        categories.setdefault(rec.category_id, {
            "id": int(rec.category_id), "name": rec.species or str(rec.category_id),
            "supercategory": rec.family or "animal",
            "keypoints": list(keypoints.source_names),
            "skeleton": [[a + 1, b + 1] for a, b in keypoints.skeleton],
        })
        annotations.append({
            "id": int(rec.instance_id), "image_id": int(rec.image_id),
            "category_id": int(rec.category_id), "bbox": [float(v) for v in rec.bbox],
            "area": rec.oks_area, "iscrowd": 0, "num_keypoints": rec.num_labelled,
            "keypoints": [float(v) for v in rec.keypoints.reshape(-1)],
        })
    return {
        "images": list(images.values()),
        "annotations": annotations,
        "categories": sorted(categories.values(), key=lambda c: c["id"]),
    }
