"""Labels as a COCO keypoint file plus images, and back.

``write_coco_labels(labels, out)`` writes ``out/images/<video>/<image>`` and
``out/annotations.json``:

* ``images``: ``id`` (1..N), ``file_name`` = ``<video>/<image>`` (relative to ``images/``),
  ``width``, ``height``, and ``video``, ``frame_index`` where known;
* ``annotations``: one per label with at least one labelled keypoint: ``keypoints`` as
  ``[x, y, v] * K`` (unlabelled ``0, 0, 0``; COCO's convention), ``num_keypoints``, ``bbox``
  (the label's box, else the keypoints' box with the margin), ``area``, ``iscrowd`` 0,
  ``category_id`` 1, and ``individual`` (the DeepLabCut individual, when there is one);
* one category with ``keypoints`` = the set's dataset spelling, 1-based ``skeleton``, and
  ``clamp_track_keypoints`` = the whole keypoint set (prompt names, flip pairs, sigmas), so
  reading the file back gives the same set; ``info`` holds the scorer and the individuals.

Any COCO keypoint file reads back (:func:`read_coco_labels`) — one label per annotation — so
COCO data from other tools can train clamp-track too. Coordinates are written with Python's
shortest round-trip float repr, so DeepLabCut -> COCO -> DeepLabCut changes no value.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from clamp_track.errors import InputError
from clamp_track.io.labels import Label, Labels, frame_from_name, label_box, remap

log = logging.getLogger(__name__)

ANNOTATIONS = "annotations.json"
IMAGES = "images"


def labels_to_coco(labels: Labels) -> dict:
    """The labels as a COCO keypoint dict (images need ``size``; see :func:`write_coco_labels`).

    Returns:
        ``{"info", "images", "annotations", "categories"}``.
    """
    kp = labels.keypoints
    images, image_ids, annotations = [], {}, []
    for item in labels.items:
        if item.image_key not in image_ids:
            image_ids[item.image_key] = len(images) + 1
            entry = {"id": len(images) + 1, "file_name": f"{item.video}/{item.image_name}",
                     "video": item.video}
            if item.size is not None:
                entry["width"], entry["height"] = int(item.size[0]), int(item.size[1])
            if item.frame is not None:
                entry["frame_index"] = int(item.frame)
            images.append(entry)
        if not item.labelled.any():
            continue
        annotations.append(_annotation(item, len(annotations) + 1, image_ids[item.image_key]))
    category = {
        "id": 1, "name": kp.name, "supercategory": "animal",
        "keypoints": list(kp.source_names),
        "skeleton": [[a + 1, b + 1] for a, b in kp.skeleton],
        "clamp_track_keypoints": kp.to_dict(),
    }
    info = {"description": "labels exported by clamp-track", "scorer": labels.scorer,
            "individuals": list(labels.individuals)}
    return {"info": info, "images": images, "annotations": annotations,
            "categories": [category]}


def _annotation(item: Label, ann_id: int, image_id: int) -> dict:
    kps = np.where(item.labelled[:, None], item.keypoints, 0.0)
    box = label_box(item)
    annotation = {
        "id": ann_id, "image_id": image_id, "category_id": 1,
        "keypoints": [float(v) for v in kps.reshape(-1)],
        "num_keypoints": int(item.labelled.sum()),
        "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0,
    }
    if item.individual:
        annotation["individual"] = item.individual
    return annotation


def write_coco_labels(labels: Labels, out_dir: str | os.PathLike, *, images: bool = True,
                      progress=None) -> Path:
    """Write ``out_dir/images/...`` and ``out_dir/annotations.json`` (last, atomically).

    Args:
        labels: The labels.
        out_dir: Destination folder.
        images: Also write the images (video frames decoded to PNG).
        progress: Optional ``callable(done, total)`` per image.

    Returns:
        The annotation file.
    """
    from clamp_track.config import atomic_write_text
    from clamp_track.io.labels import image_size, write_images

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if images:
        labels = write_images(labels, out / IMAGES, progress=progress)
    else:
        labels = labels.with_items([
            item if item.size or callable(item.image) else
            replace(item, size=image_size(item.image)) for item in labels.items])
    path = out / ANNOTATIONS
    atomic_write_text(path, json.dumps(labels_to_coco(labels)) + "\n")
    return path


def read_coco_labels(path: str | os.PathLike, *, images: str | os.PathLike | None = None,
                     keypoints=None) -> Labels:
    """Read a COCO keypoint file as labels (one per annotation with labelled keypoints).

    Args:
        path: The JSON file.
        images: Folder of the ``file_name`` paths (default: ``images/`` beside the file if it
            exists, else the file's folder).
        keypoints: Keypoint set to map onto by name (default: the file's, exactly as written
            by :func:`write_coco_labels`, else from the category's keypoint names).

    Returns:
        The :class:`Labels`. Images without annotations are kept as unlabelled entries (for
        multi-animal files, one per individual), so a DeepLabCut table survives the trip.
    """
    from clamp_track.data.coco import read_json

    path = Path(path)
    data = read_json(path)
    kp = _keypoint_set(data, path)
    root = Path(images) if images is not None else (
        path.parent / IMAGES if (path.parent / IMAGES).is_dir() else path.parent)
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    individuals = tuple(info.get("individuals") or ())
    by_image: dict = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    items, outside = [], []
    for image in data["images"]:
        items += _image_labels(image, by_image.get(image.get("id"), []), kp, root, path,
                               individuals, outside)
    if outside:
        ann, name, x, y, size = outside[0]
        log.warning("%s: %d labelled keypoints lie outside their image (first: annotation %s, "
                    "%s at (%.1f, %.1f) in a %dx%d image); check the image sizes and that the "
                    "coordinates are in pixels", path, len(outside), ann, name, x, y, *size)
    labels = Labels(kp, items, str(info.get("scorer") or "clamp-track"), individuals,
                    (str(path),))
    if keypoints is not None:
        from clamp_track.io.labels import load_keypoint_set

        labels = remap(labels, load_keypoint_set(keypoints))
    return labels


def _keypoint_set(data: dict, path: Path):
    from clamp_track.data.coco import resolve_keypoints
    from clamp_track.skeleton import KeypointSet

    stored = [c.get("clamp_track_keypoints") for c in data["categories"]
              if isinstance(c, dict) and c.get("clamp_track_keypoints")]
    if stored:
        return KeypointSet.from_dict(stored[0])
    return resolve_keypoints(data["categories"], None, path)[0]


def _image_labels(image: dict, anns: list, kp, root: Path, path: Path,
                  individuals: tuple[str, ...], outside: list) -> list[Label]:
    """The labels of one image; labelled keypoints outside it are added to ``outside``."""
    name = str(image.get("file_name", ""))
    parts = Path(name).parts
    video = str(image.get("video") or (parts[-2] if len(parts) > 1 else path.stem))
    size = (int(image["width"]), int(image["height"])) \
        if image.get("width") and image.get("height") else None
    frame = image.get("frame_index", frame_from_name(name))
    common = dict(image=str(root / name), video=video, image_name=Path(name).name,
                  size=size, frame=None if frame is None else int(frame), origin=str(path))
    k = kp.num_keypoints
    out, seen = [], set()
    for ann in anns:
        values = np.asarray(ann.get("keypoints") or [], np.float64)
        if values.size != 3 * k:
            raise InputError(f"{path}: annotation {ann.get('id')} has {values.size} keypoint "
                             f"values; keypoint set {kp.name!r} needs {3 * k}")
        kps = values.reshape(k, 3).copy()
        kps[kps[:, 2] <= 0] = (np.nan, np.nan, 0.0)
        kps[kps[:, 2] > 0, 2] = 2.0
        if size is not None:
            off = (kps[:, 2] > 0) & ((kps[:, 0] < 0) | (kps[:, 1] < 0) | (kps[:, 0] > size[0])
                                     | (kps[:, 1] > size[1]))
            outside += [(ann.get("id"), kp.names[j], kps[j, 0], kps[j, 1], size)
                        for j in np.flatnonzero(off)]
        bbox = ann.get("bbox")
        individual = str(ann.get("individual", ""))
        seen.add(individual)
        out.append(Label(keypoints=kps, individual=individual,
                         bbox=None if bbox is None else np.asarray(bbox, np.float64),
                         **common))
    empty = np.full((k, 3), np.nan)
    empty[:, 2] = 0
    for individual in (individuals or ("",)):
        if individual not in seen:
            out.append(Label(keypoints=empty, individual=individual, **common))
    return out
