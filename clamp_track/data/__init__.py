"""Datasets (COCO keypoint files, corrections), top-down transforms and training targets.

Everything is built on plain :class:`~clamp_track.data.records.Instance` records, so any
source of labelled animals (a COCO file, corrected video frames) trains the same way::

    from clamp_track.data import Instance, TopDownDataset, AugmentConfig, load_coco

    coco = load_coco("ap10k-train-split1.json", "data/", keypoints="ap10k")
    train = TopDownDataset(coco.records, coco.keypoints, augment=AugmentConfig())
    frame = Instance(image=functools.partial(read_frame, "video.mp4", 120),  # picklable
                     bbox=[x, y, w, h], keypoints=kps_k_by_3, image_id=120, instance_id=7)

Names are imported lazily, so ``import clamp_track.data.transforms`` stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Instance": "records", "load_image": "records", "records_to_coco": "records",
    "CocoData": "coco", "load_coco": "coco",
    "AugmentConfig": "augment",
    "TopDownDataset": "dataset", "make_loader": "dataset", "collate": "dataset",
    "prepare_batch": "dataset", "EpochSampler": "dataset",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
