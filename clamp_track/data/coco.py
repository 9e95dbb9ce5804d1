"""COCO keypoint files: AP-10K, Animal-Pose, and any COCO-format set with named keypoints.

:func:`load_coco` reads an annotation file and an image folder into :class:`CocoData`: the list
of :class:`~clamp_track.data.records.Instance` records (what training and evaluation use), the
keypoint set, the categories (species, with the family as ``supercategory``) and the ground truth
for COCO evaluation.

The keypoint set comes from the categories' ``keypoints`` names (AP-10K and Animal-Pose are
recognised; any other list becomes a set of its own via
:func:`~clamp_track.skeleton.from_names`) or is given (``"ap10k"``, ``"animalpose"``, a file, a
``KeypointSet``). A given set is matched to the file by name, so a file listing the same
keypoints in another order is reordered into the set's order.

Instances are kept as mmpose's top-down COCO reader keeps them: crowd annotations, those without
labelled keypoints and those whose box (clipped to the image) is empty are left out, silently,
as in the official evaluation. Damaged records — a missing image, a keypoint list of the wrong
length, a missing or malformed box, an unknown image or category — raise an
:class:`~clamp_track.errors.InputError` naming the file and the record, or with
``skip_bad=True`` are skipped and counted in the log.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from clamp_track.data.records import Instance
from clamp_track.errors import InputError
from clamp_track.skeleton import ANIMALPOSE, AP10K, KeypointSet, from_names, get_keypoint_set

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CocoData:
    """A COCO keypoint file read into records.

    Attributes:
        path: The annotation file.
        images_dir: Folder the images' ``file_name`` are relative to.
        keypoints: The keypoint set; records and ``ground_truth`` use its order.
        records: The usable labelled instances, in file order.
        categories: Category id -> ``{"name", "supercategory"}``.
        ground_truth: COCO dict for evaluation (the file's annotations, minus skipped records,
            keypoints in the set's order).
        columns: For each set keypoint, its column in the file (None: the same order).
        skipped: Human-readable reasons of the skipped bad records.
    """

    path: Path
    images_dir: Path
    keypoints: KeypointSet
    records: list[Instance]
    categories: dict[int, dict]
    ground_truth: dict = field(repr=False)
    columns: tuple[int, ...] | None = None
    skipped: tuple[str, ...] = ()

    @property
    def families(self) -> list[str]:
        """Distinct super-categories (AP-10K families), sorted."""
        return sorted({c["supercategory"] for c in self.categories.values()})

    def subset(self, indices: Sequence[int]) -> CocoData:
        """The same file restricted to ``records[i] for i in indices``.

        The ground truth keeps the chosen instances and the unlabelled annotations of their
        images (which COCO evaluation ignores but uses for matching).
        """
        records = [self.records[i] for i in indices]
        keep_ids = {r.instance_id for r in records}
        keep_images = {r.image_id for r in records}
        gt = self.ground_truth
        annotations = [
            a for a in gt["annotations"]
            if a["id"] in keep_ids or (a["image_id"] in keep_images and not _labelled(a))
        ]
        return self._with(records, annotations)

    def select_families(self, families: Sequence[str]) -> CocoData:
        """Only the instances (and ground truth) of categories in ``families``.

        Raises:
            InputError: If a family is not a super-category of this file.
        """
        known = {f.lower(): f for f in self.families}
        unknown = [f for f in families if f.lower() not in known]
        if unknown:
            raise InputError(
                f"{self.path}: unknown families {unknown}; this file has {self.families}"
            )
        wanted = {f.lower() for f in families}
        cats = {i for i, c in self.categories.items() if c["supercategory"].lower() in wanted}
        records = [r for r in self.records if r.category_id in cats]
        annotations = [a for a in self.ground_truth["annotations"] if a["category_id"] in cats]
        return self._with(records, annotations)

    def _with(self, records: list[Instance], annotations: list[dict]) -> CocoData:
        images = {a["image_id"] for a in annotations}
        gt = dict(self.ground_truth)
        gt["annotations"] = annotations
        gt["images"] = [im for im in self.ground_truth["images"] if im["id"] in images]
        return replace(self, records=records, ground_truth=gt)


def _labelled(annotation: dict) -> bool:
    kps = annotation.get("keypoints") or []
    return annotation.get("num_keypoints", 1) != 0 and any(v > 0 for v in kps[2::3])


def read_json(path: str | os.PathLike) -> dict:
    """Read a COCO JSON file with one-line errors for missing or malformed files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: annotation file not found")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}); "
            "fix or re-export the file"
        ) from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 JSON file") from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(
        data.get(k) if isinstance(data, dict) else None, list)]
    if missing:
        raise InputError(
            f"{path}: not a COCO keypoint file (no {', '.join(repr(m) for m in missing)} list)"
        )
    return data


def resolve_keypoints(
    categories: list[dict], spec, path: Path
) -> tuple[KeypointSet, tuple[int, ...] | None]:
    """Find the keypoint set of a COCO file and how its columns map onto it.

    Args:
        categories: The file's ``categories``.
        spec: None (from the categories), or anything :func:`get_keypoint_set` accepts.
        path: The file, for messages.

    Returns:
        ``(keypoint_set, columns)``; ``columns[j]`` is the file column of set keypoint ``j``,
        or None when the file uses the set's order.
    """
    lists = {tuple(c["keypoints"]) for c in categories if c.get("keypoints")}
    if len(lists) > 1:
        raise InputError(
            f"{path}: categories list {len(lists)} different keypoint lists; split the file "
            "so that each has one keypoint list"
        )
    names = next(iter(lists), None)
    if spec is None:
        if names is None:
            raise InputError(
                f"{path}: the categories name no keypoints; pass --keypoints "
                "ap10k|animalpose|FILE"
            )
        for builtin in (AP10K, ANIMALPOSE):
            if builtin.matches(names):
                return builtin, None
        return from_names(names, name=path.stem), None
    kp = get_keypoint_set(spec)
    if names is None or kp.matches(names):
        return kp, None
    try:
        by_set = {kp.index(n): col for col, n in enumerate(names)}
    except InputError:
        by_set = {}
    if len(names) != kp.num_keypoints or sorted(by_set) != list(range(kp.num_keypoints)):
        raise InputError(
            f"{path}: the file's keypoints ({', '.join(names)}) do not match keypoint set "
            f"{kp.name!r} ({', '.join(kp.source_names)}); pass the matching --keypoints"
        )
    return kp, tuple(by_set[j] for j in range(kp.num_keypoints))


def load_coco(
    annotations: str | os.PathLike,
    images: str | os.PathLike,
    keypoints=None,
    *,
    skip_bad: bool = False,
) -> CocoData:
    """Read a COCO keypoint file into records.

    Args:
        annotations: The JSON file.
        images: Folder the images' ``file_name`` are relative to.
        keypoints: Keypoint set (``"ap10k"``, ``"animalpose"``, a file or a ``KeypointSet``);
            default: from the categories.
        skip_bad: Skip damaged records (counted in the log) instead of failing on the first.

    Returns:
        The file as :class:`CocoData`.

    Raises:
        InputError: For a missing or malformed file, keypoints that do not match the set, or
            (without ``skip_bad``) the first damaged record, naming the file and the record.
    """
    path, images_dir = Path(annotations), Path(images)
    data = read_json(path)
    kp, columns = resolve_keypoints(data["categories"], keypoints, path)
    reader = _Reader(path, images_dir, data, kp, columns)
    records, bad = [], []
    for ann in data["annotations"]:
        try:
            rec = reader.record(ann)
        except InputError as exc:
            if not skip_bad:
                raise InputError(f"{exc}; fix the record or skip bad records (--skip-bad, "
                                 "or data.skip_bad=true in a training config)") from None
            bad.append((ann.get("id"), ann.get("image_id"), str(exc)))
            continue
        if rec is not None:
            records.append(rec)
    if bad:
        log.warning("%s: skipped %d bad record(s); first: %s", path, len(bad), bad[0][2])
    if reader.unknown_categories:
        log.warning("%s: category ids %s are not in 'categories'; their species are unnamed",
                    path, sorted(reader.unknown_categories))
    ground_truth = _ground_truth(data, columns, kp, bad)
    categories = {
        int(c["id"]): {"name": c.get("name", str(c["id"])),
                       "supercategory": c.get("supercategory", "")}
        for c in data["categories"]
    }
    return CocoData(path, images_dir, kp, records, categories, ground_truth, columns,
                    tuple(b[2] for b in bad))


class _Reader:
    """Turns one COCO annotation into an :class:`Instance` (or None if it is unusable)."""

    def __init__(self, path, images_dir, data, kp: KeypointSet, columns):
        self.path, self.images_dir, self.kp = path, images_dir, kp
        self.columns = None if columns is None else np.asarray(columns)
        self.images = {im.get("id"): im for im in data["images"]}
        self.categories = {c.get("id"): c for c in data["categories"]}
        self._exists: dict[str, bool] = {}
        self.unknown_categories: set = set()

    def record(self, ann: dict) -> Instance | None:
        if ann.get("iscrowd", 0) or not ann.get("keypoints") or ann.get("num_keypoints") == 0:
            return None
        where = f"{self.path}: annotation {ann.get('id')} (image {ann.get('image_id')})"
        image = self.images.get(ann.get("image_id"))
        if image is None:
            raise InputError(f"{where}: its image_id is not in 'images'")
        category = self.categories.get(ann.get("category_id"))
        if category is None:  # tolerated (e.g. a truncated list); the species stays unnamed
            self.unknown_categories.add(ann.get("category_id"))
            category = {}
        keypoints = self._keypoints(ann, where)
        if not (keypoints[:, 2] > 0).any() or keypoints.max() == 0:
            return None
        bbox = self._bbox(ann, image, where)
        if bbox is None:
            return None
        file = self.images_dir / str(image.get("file_name", ""))
        if not self._is_file(file):
            raise InputError(f"{where}: image file {file} not found")
        return Instance(
            image=str(file), bbox=bbox, keypoints=keypoints, image_id=ann["image_id"],
            instance_id=ann.get("id", 0), category_id=ann.get("category_id", 0),
            species=str(category.get("name", "")), family=str(category.get("supercategory", "")),
            area=ann.get("area"),
        )

    def _keypoints(self, ann: dict, where: str) -> np.ndarray:
        k = self.kp.num_keypoints
        try:
            values = np.asarray(ann["keypoints"], dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError(f"{where}: keypoints are not numbers") from None
        if values.ndim != 1 or values.size != 3 * k:
            raise InputError(
                f"{where}: {values.size} keypoint values, but keypoint set {self.kp.name!r} "
                f"needs {k} keypoints x 3 = {3 * k}"
            )
        keypoints = values.reshape(k, 3)
        return keypoints if self.columns is None else keypoints[self.columns]

    def _bbox(self, ann: dict, image: dict, where: str) -> np.ndarray | None:
        """The box clipped to the image as mmpose does; None for an empty box."""
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{where}: missing or malformed bbox (need [x, y, w, h])") from None
        width = image.get("width") or np.inf
        height = image.get("height") or np.inf
        x1, y1 = max(0.0, x), max(0.0, y)
        x2 = min(width - 1, x1 + max(0.0, w - 1))
        y2 = min(height - 1, y1 + max(0.0, h - 1))
        if ann.get("area", 1) <= 0 or x2 <= x1 or y2 <= y1:
            return None
        return np.array([x1, y1, x2 - x1, y2 - y1], np.float32)

    def _is_file(self, file: Path) -> bool:
        key = os.fspath(file)
        if key not in self._exists:
            self._exists[key] = file.is_file()
        return self._exists[key]


def _ground_truth(data: dict, columns, kp: KeypointSet, bad: list) -> dict:
    """The file's annotations for COCO evaluation, without skipped records, in set order."""
    bad_ids = {(b[0], b[1]) for b in bad}
    gt = {k: v for k, v in data.items() if k != "annotations"}
    annotations = [
        a for a in data["annotations"] if (a.get("id"), a.get("image_id")) not in bad_ids
    ]
    if columns is not None:
        annotations = copy.deepcopy(annotations)
        order = np.asarray(columns)
        for a in annotations:
            if a.get("keypoints"):
                a["keypoints"] = np.asarray(a["keypoints"]).reshape(-1, 3)[order].ravel().tolist()
        gt["categories"] = [
            {**c, "keypoints": list(kp.source_names),
             "skeleton": [[i + 1, j + 1] for i, j in kp.skeleton]}
            for c in data["categories"]
        ]
    gt["annotations"] = annotations
    return gt


def file_order_results(results: list[dict], columns) -> list[dict]:
    """COCO keypoint results in the set's order -> in the annotation file's column order."""
    if columns is None:
        return results
    inverse = np.argsort(np.asarray(columns))
    out = []
    for r in results:
        kps = np.asarray(r["keypoints"]).reshape(-1, 3)[inverse]
        out.append({**r, "keypoints": kps.ravel().tolist()})
    return out
