"""Labelled animals from any source: corrected video frames, DeepLabCut and COCO label files.

:class:`Labels` is the one in-memory form of "keypoints a person placed": the corrections of a
result store (:func:`labels_from_store`), a DeepLabCut ``labeled-data`` folder
(:mod:`clamp_track.io.dlc_labels`) or a COCO keypoint file (:mod:`clamp_track.io.coco_labels`).
Each :class:`Label` is one animal in one image, with its keypoints as float64 ``x, y, v``
(``v`` = 2 labelled, 0 not; unlabelled coordinates are NaN), so the DeepLabCut and COCO writers
reproduce the coordinates they were given bit for bit. Fine-tuning turns them into training
instances (:mod:`clamp_track.data.corrections`).

**Which keypoints of a corrected frame are labels.** A store keeps the model's predictions and,
apart, the user's corrections per keypoint. A corrected instance is the prediction of that
(frame, track) with the corrections applied; keypoints the user did not touch are, by default,
*not* labels (``untouched="ignore"``): an unreviewed prediction is the model's own guess, and
training on it teaches the model its own mistakes (SLEAP likewise never trains on predicted
instances). ``untouched="confident"`` also takes predictions with a confidence of at least
``min_confidence``, and ``untouched="all"`` takes every prediction of a corrected instance
(what DeepLabCut's refinement and SLEAP's "user instance from prediction" amount to). A keypoint
the user marked occluded/absent is unlabelled (COCO ``v = 0``, DeepLabCut NaN) either way.

**Boxes.** A store label's box is its track's box, grown to hold every labelled keypoint with
the keypoint margin. Labels without a box (DeepLabCut) get one from their labelled keypoints:
the tight box, each side moved out by ``max(margin_px, margin_frac * longer side)`` (default
20 px or 10 %), clipped to the image (:func:`box_from_keypoints`).

**Images.** Video frames are read by index through :class:`VideoFrame`, a picklable callable
(DataLoader workers each open the video once); exports and training write them as PNG files
named like DeepLabCut's extracted frames, ``img<frame index, zero-padded>.png``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from clamp_track.config import temp_beside
from clamp_track.errors import InputError
from clamp_track.skeleton import KeypointSet, humanize

log = logging.getLogger(__name__)

#: What the keypoints a user did not touch on a corrected instance count as.
Untouched = Literal["ignore", "confident", "all"]
#: Pixel part of the margin around keypoint-derived boxes (DeepLabCut-style fixed margin).
BOX_MARGIN_PX = 20.0
#: Relative part: a fraction of the keypoints' longer side, for large animals.
BOX_MARGIN_FRAC = 0.1


# ----------------------------------------------------------------------------- video frames


@dataclass(frozen=True)
class VideoFrame:
    """A picklable image source: frame ``index`` of ``path`` as (H, W, 3) uint8 RGB.

    Each process keeps a few open readers (:func:`close_video_readers` releases them), so a
    DataLoader worker opens a video once, not once per sample.
    """

    path: str
    index: int

    def __call__(self) -> np.ndarray:
        """Decode the frame."""
        return _reader(self.path).read(int(self.index)).image


_READERS: OrderedDict[tuple[int, str], object] = OrderedDict()
_READERS_LOCK = threading.Lock()
_MAX_READERS = 4


def _reader(path: str):
    from clamp_track.io.video import VideoReader

    key = (os.getpid(), path)
    with _READERS_LOCK:
        reader = _READERS.get(key)
        if reader is None:
            reader = VideoReader(path, prefetch=0)
            _READERS[key] = reader
            while len(_READERS) > _MAX_READERS:
                _, old = _READERS.popitem(last=False)
                old.close()
        _READERS.move_to_end(key)
    return reader


def close_video_readers() -> None:
    """Close the readers :class:`VideoFrame` opened in this process."""
    with _READERS_LOCK:
        for (pid, _), reader in list(_READERS.items()):
            if pid == os.getpid():
                reader.close()
        _READERS.clear()


def image_name(frame: int, n_frames: int) -> str:
    """DeepLabCut's name for an extracted frame, e.g. frame 5 of 2330 -> ``img0005.png``.

    ``img`` + the index zero-padded to ``ceil(log10(n_frames))`` digits.
    """
    width = max(1, math.ceil(math.log10(max(n_frames, 2))))
    return f"img{int(frame):0{width}d}.png"


def frame_from_name(name: str) -> int | None:
    """The frame index in an extracted frame's name (``img0123.png`` -> 123), or None."""
    found = re.findall(r"\d+", Path(name).stem)
    return int(found[-1]) if found else None


# ----------------------------------------------------------------------------- labels


@dataclass(frozen=True, eq=False)
class Label:
    """One labelled animal in one image.

    Attributes:
        image: Image file path, or a callable returning (H, W, 3) uint8 RGB (:class:`VideoFrame`).
        video: Video (or DeepLabCut ``labeled-data`` folder) name the image belongs to.
        image_name: File name of the image, e.g. ``img0012.png``.
        keypoints: (K, 3) float64 ``x, y, v``; ``v`` 2 labelled, 0 not (then x, y are NaN).
        individual: DeepLabCut individual (``animal<track>`` for store tracks); ``""`` for
            single-animal data.
        frame: Frame index in the video, if known.
        bbox: (4,) float64 ``x, y, w, h``, or None (derived from the keypoints when needed).
        size: Image ``(width, height)``, if known.
        origin: Where the label came from (a store or label file), for provenance.
    """

    image: str | object
    video: str
    image_name: str
    keypoints: np.ndarray
    individual: str = ""
    frame: int | None = None
    bbox: np.ndarray | None = None
    size: tuple[int, int] | None = None
    origin: str = ""

    def __post_init__(self):
        kps = np.array(self.keypoints, dtype=np.float64)
        if kps.ndim != 2 or kps.shape[1] != 3:
            raise ValueError(f"{self.image_name}: keypoints must be (K, 3), got {kps.shape}")
        unlabelled = ~(kps[:, 2] > 0) | ~np.isfinite(kps[:, :2]).all(axis=1)
        kps[unlabelled] = (np.nan, np.nan, 0.0)
        object.__setattr__(self, "keypoints", kps)
        if self.bbox is not None:
            object.__setattr__(self, "bbox", np.asarray(self.bbox, np.float64).reshape(4))

    @property
    def labelled(self) -> np.ndarray:
        """(K,) bool: keypoints with a position."""
        return self.keypoints[:, 2] > 0

    @property
    def image_key(self) -> tuple[str, str]:
        """``(video, image_name)``: which image this is."""
        return self.video, self.image_name


@dataclass
class Labels:
    """Labelled animals sharing one keypoint set.

    Attributes:
        keypoints: The keypoint set; every label's keypoints are in its order.
        items: The labels, grouped by image in image order.
        scorer: Who labelled (DeepLabCut's scorer; ``clamp-track`` for corrections).
        individuals: Individual names in column order for multi-animal data; empty for
            single-animal data.
        sources: The stores or files the labels came from.
    """

    keypoints: KeypointSet
    items: list[Label] = field(default_factory=list)
    scorer: str = "clamp-track"
    individuals: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.items)

    @property
    def multi_animal(self) -> bool:
        """Whether labels carry individual names (DeepLabCut's multi-animal layout)."""
        return bool(self.individuals)

    def images(self) -> list[tuple[str, str]]:
        """Distinct ``(video, image_name)`` in order of first appearance."""
        return list(dict.fromkeys(item.image_key for item in self.items))

    def labelled_items(self) -> list[Label]:
        """The labels with at least one labelled keypoint."""
        return [item for item in self.items if item.labelled.any()]

    def with_items(self, items: list[Label]) -> Labels:
        """The same labels' metadata with other items."""
        return replace(self, items=list(items))


def combine(parts: list[Labels], keypoints: KeypointSet | None = None) -> Labels:
    """Merge label sets into one, in ``keypoints`` order (default: the first part's set)."""
    if not parts:
        raise ValueError("no labels to combine")
    target = keypoints or parts[0].keypoints
    items, individuals, sources = [], [], []
    owner: dict[str, str] = {}  # video name -> the origin that uses it
    for part in parts:
        part = remap(part, target)
        renamed = {}
        for item in part.items:  # two sources with a video of the same name stay apart
            if item.video not in renamed:
                name, n = item.video, 1
                while owner.setdefault(name, item.origin) != item.origin:
                    n += 1
                    name = f"{item.video}_{n}"
                renamed[item.video] = name
        items += [replace(i, video=renamed[i.video]) for i in part.items]
        individuals += [i for i in part.individuals if i not in individuals]
        sources += [s for s in part.sources if s not in sources]
    return Labels(target, items, parts[0].scorer, tuple(individuals), tuple(sources))


def remap(labels: Labels, target: KeypointSet) -> Labels:
    """The labels with keypoints reordered into ``target``'s order, matched by name.

    Keypoints of ``target`` the labels lack are unlabelled.

    Raises:
        InputError: If a labelled keypoint of ``labels`` has no counterpart in ``target``.
    """
    if labels.keypoints == target:
        return labels
    source = labels.keypoints
    columns = np.full(target.num_keypoints, -1)
    missing = []
    for i, (name, spelling) in enumerate(zip(source.names, source.source_names)):
        j = _find(target, name, spelling)
        if j is None:
            missing.append(spelling)
        else:
            columns[j] = i
    if missing:
        where = ", ".join(labels.sources) or "the labels"
        raise InputError(
            f"{where}: keypoints {missing} are not in keypoint set {target.name!r} "
            f"({', '.join(target.source_names)}); use a keypoint set (--keypoints FILE) that "
            "names them"
        )
    items = []
    for item in labels.items:
        kps = np.full((target.num_keypoints, 3), np.nan)
        kps[:, 2] = 0
        kps[columns >= 0] = item.keypoints[columns[columns >= 0]]
        items.append(replace(item, keypoints=kps))
    return replace(labels, keypoints=target, items=items)


def _find(target: KeypointSet, *names: str) -> int | None:
    for name in names:
        try:
            return target.index(name)
        except InputError:
            continue
    return None


# Direction and part words that DeepLabCut bodyparts often glue to a noun ("leftear",
# "tailbase"); CLIP's tokenizer splits those into unrelated pieces ("lef" + "tear").
_PREFIXES = ("left", "right", "front", "back", "hind", "upper", "lower", "mid", "top",
             "bottom", "inner", "outer", "tail", "head", "neck", "center", "centre")
_SUFFIXES = ("base", "tip", "root", "end", "mid", "center", "centre", "top", "bottom")


def prompt_name(bodypart: str) -> str:
    """Prompt text for a bodypart: ``"leftear"`` -> ``"left ear"``.

    :func:`~clamp_track.skeleton.humanize`, then direction and part words glued to a noun are
    split (``"tailbase"`` -> ``"tail base"``).
    """
    words = []
    for word in humanize(bodypart).split():
        words += _split_glued(word)
    return " ".join(words)


def _split_glued(word: str) -> list[str]:
    for prefix in _PREFIXES:
        if word.startswith(prefix) and len(word) - len(prefix) >= 3 and word[len(prefix)].isalpha():
            return [prefix, *_split_glued(word[len(prefix):])]
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return [*_split_glued(word[: -len(suffix)]), suffix]
    return [word]


def bodyparts_to_set(bodyparts, name: str = "dlc") -> KeypointSet:
    """A keypoint set from DeepLabCut bodyparts.

    The bodyparts stay the dataset spelling (``source_names``), the prompts are
    :func:`prompt_name`, and left/right flip pairs are inferred.
    """
    from clamp_track.skeleton import from_names

    base = from_names(list(bodyparts), name=name)
    prompts = tuple(prompt_name(b) for b in bodyparts)
    if len(set(prompts)) != len(prompts):  # splitting made two names equal: keep humanize's
        return base
    return KeypointSet(name=base.name, names=prompts, flip_pairs=base.flip_pairs,
                       source_names=base.source_names)


def load_keypoint_set(spec) -> KeypointSet:
    """A keypoint set from a built-in name, a keypoint-set YAML, or a DeepLabCut ``config.yaml``.

    A DeepLabCut project config (it has ``bodyparts`` or ``multianimalbodyparts``) gives its
    bodyparts (:func:`bodyparts_to_set`, named after its ``Task``) and its ``skeleton`` (pairs
    of bodyparts); anything else goes to :func:`~clamp_track.skeleton.get_keypoint_set`.
    """
    from clamp_track.skeleton import get_keypoint_set

    if isinstance(spec, KeypointSet) or not str(spec).lower().endswith((".yaml", ".yml")):
        return get_keypoint_set(spec)
    import yaml

    path = Path(spec)
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (yaml.YAMLError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or not ({"bodyparts", "multianimalbodyparts"} & set(data)):
        return get_keypoint_set(spec)
    parts = data.get("multianimalbodyparts") if data.get("multianimalproject") else None
    parts = parts or data.get("bodyparts")
    if not isinstance(parts, list) or not parts:
        raise InputError(f"{path}: a DeepLabCut config without a bodyparts list")
    base = bodyparts_to_set(parts, name=str(data.get("Task") or path.parent.name))
    edges = [(parts.index(a), parts.index(b)) for a, b in (data.get("skeleton") or [])
             if a in parts and b in parts]
    return replace(base, skeleton=tuple(edges))


# ----------------------------------------------------------------------------- boxes


def box_from_keypoints(keypoints: np.ndarray, size: tuple[int, int] | None = None, *,
                       margin_px: float = BOX_MARGIN_PX,
                       margin_frac: float = BOX_MARGIN_FRAC) -> np.ndarray | None:
    """The box of the labelled keypoints plus a margin, clipped to the image.

    Args:
        keypoints: (K, 3) ``x, y, v``.
        size: Image ``(width, height)``, to clip to.
        margin_px: Smallest margin on each side, pixels.
        margin_frac: Margin as a fraction of the keypoints' longer side, if larger.

    Returns:
        (4,) float64 ``x, y, w, h``, or None without labelled keypoints.
    """
    labelled = keypoints[:, 2] > 0
    if not labelled.any():
        return None
    xy = keypoints[labelled, :2]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    pad = max(margin_px, margin_frac * float((hi - lo).max()))
    lo, hi = lo - pad, hi + pad
    if size is not None:
        lo = np.maximum(lo, 0.0)
        hi = np.minimum(hi, np.asarray(size, np.float64) - 1)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], np.float64)


#: Margin of the box of an animal added by hand (its keypoints are placed, not labelled yet).
ADDED_MARGIN_PX = 10.0


def added_instance_box(xy: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """``x1, y1, x2, y2`` (float32) around the finite of (K, 2) keypoints placed by hand."""
    seen = np.isfinite(xy).all(axis=1)
    x, y, w, h = box_from_keypoints(np.column_stack([xy, np.where(seen, 2.0, 0.0)]), size,
                                    margin_px=ADDED_MARGIN_PX)
    return np.array([x, y, x + w, y + h], np.float32)


def label_box(label: Label, **margins) -> np.ndarray | None:
    """The label's box, grown to hold its labelled keypoints (with the margin).

    Without a box of its own: the keypoints' box (:func:`box_from_keypoints`).
    """
    around = box_from_keypoints(label.keypoints, label.size, **margins)
    if label.bbox is None or around is None:
        return around if label.bbox is None else label.bbox
    x1, y1 = np.minimum(label.bbox[:2], around[:2])
    x2, y2 = np.maximum(label.bbox[:2] + label.bbox[2:], around[:2] + around[2:])
    return np.array([x1, y1, x2 - x1, y2 - y1], np.float64)


# ----------------------------------------------------------------------------- stores


def store_video(store, video: str | os.PathLike | None = None) -> Path:
    """The video of a store, found and checked by its fingerprint.

    See :func:`clamp_track.io.video_ref.resolve_video` (``video``: one the user named).

    Raises:
        InputError: The video is missing, or ``video`` (or a same-named file found instead)
            is another video, naming both files and the fix.
    """
    from clamp_track.io.video_ref import resolve_video

    return resolve_video(store, video)


def labels_from_store(store, *, untouched: Untouched = "ignore", min_confidence: float = 0.5,
                      video: str | os.PathLike | None = None,
                      need_video: bool = True) -> Labels:
    """The corrected instances of a result store as labels.

    Args:
        store: An open :class:`~clamp_track.io.store.ResultStore`.
        untouched: What keypoints the user did not correct count as (module docstring).
        min_confidence: Confidence a prediction needs with ``untouched="confident"``.
        video: The store's video if it moved (checked to be the same video).
        need_video: Fail if the video is missing (False: only the coordinates are needed).

    Returns:
        One label per corrected (frame, track), individuals ``animal<track>``, boxes from the
        tracks, images as :class:`VideoFrame` sources.

    Raises:
        InputError: If the video is missing or different.
    """
    if untouched not in ("ignore", "confident", "all"):
        raise ValueError(f"untouched must be ignore, confident or all, got {untouched!r}")
    kp, info = store.keypoints, store.video_info
    rows = store.corrections()
    by_instance: dict[tuple[int, int], list] = defaultdict(list)
    for frame, track, keypoint, x, y, visible in rows:
        by_instance[(frame, track)].append((keypoint, x, y, visible))
    path = store_video(store, video) if by_instance and need_video else Path(info.path)
    name = Path(info.path).stem
    items, orphans = [], 0
    frames = sorted({f for f, _ in by_instance})
    for frame in frames:
        inst = store.frame_instances(frame)
        where = {int(t): i for i, t in enumerate(inst["tracks"])}
        for (f, track), fixes in sorted(by_instance.items()):
            if f != frame:
                continue
            if track not in where:
                orphans += 1
                continue
            i = where[track]
            kps = _corrected(inst["raw"][i], fixes, untouched, min_confidence)
            x1, y1, x2, y2 = (float(v) for v in inst["boxes"][i])
            items.append(Label(
                image=VideoFrame(str(path), int(frame)), video=name,
                image_name=image_name(frame, info.n_frames), keypoints=kps,
                individual=individual_of(track), frame=int(frame),
                bbox=np.array([x1, y1, x2 - x1, y2 - y1]), size=(info.width, info.height),
                origin=str(store.path)))
    if orphans:
        log.warning("%s: %d corrected instance(s) have no prediction any more (deleted "
                    "track?) and are left out", store.path, orphans)
    tracks = sorted({track for _, track in by_instance})
    return Labels(kp, items, "clamp-track", tuple(individual_of(t) for t in tracks),
                  (str(store.path),))


def _corrected(raw: np.ndarray, fixes, untouched: str, min_confidence: float) -> np.ndarray:
    """(K, 3) float64 label keypoints of one instance from its prediction and corrections."""
    k = raw.shape[0]
    kps = np.full((k, 3), np.nan)
    kps[:, 2] = 0
    take = np.zeros(k, bool)
    if untouched == "all":
        take[:] = True
    elif untouched == "confident":
        take = raw[:, 2] >= min_confidence
    take &= np.isfinite(raw[:, :2]).all(axis=1)
    kps[take, :2] = raw[take, :2]
    kps[take, 2] = 2
    for keypoint, x, y, visible in fixes:
        if visible and x is not None and y is not None:
            kps[keypoint] = (x, y, 2)
        else:
            kps[keypoint] = (np.nan, np.nan, 0)
    return kps


def individual_of(track: int) -> str:
    """Individual name of a store track in training labels: ``animal<track>``.

    Unlike the result exports (:func:`clamp_track.io.export.individual_names`, compact
    ``animal1..N``), labels keep the track id in the name so that :func:`track_of` can bring
    them back onto the same track.
    """
    return f"animal{int(track)}"


def track_of(individual: str) -> int | None:
    """The track id in an ``animal<track>`` individual name, or None."""
    found = re.fullmatch(r"animal(\d+)", individual or "")
    return int(found.group(1)) if found else None


def import_into_store(labels: Labels, store, *, match: str = "track",
                      add_missing: bool = False) -> tuple[int, int]:
    """Write labels of a store's video into it as corrections.

    Each label's frame (its ``frame``, or the number in its image name) must have been
    processed. With ``match="track"`` a label goes to the track named by its individual
    (``animal<track>``, as exported) when that track is in the frame; otherwise, and always
    with ``match="nearest"`` (labels from another run, whose track ids mean other animals), to
    the instance whose predicted keypoints are nearest (mean distance over the labelled
    keypoints, each instance used once) among those whose box (grown by a quarter of its size
    on each side) holds at least half of the labelled keypoints: a label never lands on
    another animal because its own was not detected. Labelled keypoints become corrections;
    unlabelled ones are left alone.

    Args:
        labels: Labels in the store's keypoint set (or mappable onto it by name).
        store: A writable :class:`~clamp_track.io.store.ResultStore`.
        match: ``"track"`` or ``"nearest"``.
        add_missing: Add a label that matches no instance as an animal of its own (as the
            review GUI's Add animal does; one new track per individual), instead of skipping
            it. For carrying corrections over to a new run of the same video, where the user
            may have added animals the detector missed.

    Returns:
        ``(imported, skipped)`` label counts (skipped: frame not processed, or no instance
        left and not ``add_missing``).
    """
    labels = remap(labels, store.keypoints)
    imported = skipped = 0
    by_frame: dict[int, list[Label]] = defaultdict(list)
    for item in labels.labelled_items():
        frame = item.frame if item.frame is not None else frame_from_name(item.image_name)
        if frame is None or not store.has_frame(frame):
            skipped += 1
        else:
            by_frame[frame].append(item)
    new_tracks: dict[str, int] = {}  # individual -> the track added for it
    next_track = max(store.track_ids(), default=0) + 1
    for frame, items in sorted(by_frame.items()):
        inst = store.frame_instances(frame)
        for item, track in _assign(items, inst, by_name=match == "track"):
            if track is None and add_missing:
                track = new_tracks.get(item.individual)
                if track is None or track in inst["tracks"]:
                    track = new_tracks[item.individual] = next_track
                    next_track += 1
                _add_labelled(store, frame, track, item)
            if track is None:
                skipped += 1
                continue
            for k in np.flatnonzero(item.labelled):
                x, y = item.keypoints[k, :2]
                store.set_correction(frame, track, int(k), float(x), float(y), True)
            imported += 1
    return imported, skipped


def _add_labelled(store, frame: int, track: int, item: Label) -> None:
    """Add ``item`` to ``frame`` as a new instance (unlabelled keypoints at its centre)."""
    xy = item.keypoints[:, :2].astype(np.float64)
    done = item.labelled & np.isfinite(xy).all(axis=1)
    box = added_instance_box(np.where(done[:, None], xy, np.nan), item.size)
    store.add_instance(frame, track, box, np.where(done[:, None], xy, xy[done].mean(axis=0)))


def _inside(points: np.ndarray, box: np.ndarray, grow: float = 0.25) -> np.ndarray:
    """Which of (N, 2) ``points`` lie in ``box`` grown by ``grow`` of its size on each side."""
    x1, y1, x2, y2 = box
    dx, dy = grow * (x2 - x1), grow * (y2 - y1)
    return ((points[:, 0] >= x1 - dx) & (points[:, 0] <= x2 + dx)
            & (points[:, 1] >= y1 - dy) & (points[:, 1] <= y2 + dy))


def _assign(items: list[Label], inst: dict, by_name: bool) -> list[tuple[Label, int | None]]:
    tracks = [int(t) for t in inst["tracks"]]
    free = set(tracks)
    out = []
    for item in items:
        named = track_of(item.individual) if by_name else None
        if named in free:
            free.discard(named)
            out.append((item, named))
            continue
        points = item.keypoints[item.labelled, :2]
        best, best_d = None, np.inf
        for i, t in enumerate(tracks):
            if t not in free or _inside(points, inst["boxes"][i]).mean() < 0.5:
                continue
            d = np.nanmean(np.linalg.norm(inst["raw"][i, item.labelled, :2] - points, axis=1))
            if d < best_d:
                best, best_d = t, d
        if best is not None:
            free.discard(best)
        out.append((item, best))
    return out


# ----------------------------------------------------------------------------- images


def write_images(labels: Labels, root: str | os.PathLike, *, copy_files: bool = True,
                 progress=None) -> Labels:
    """Write every label's image to ``root/<video>/<image_name>`` and point the labels there.

    Video frames are decoded and saved as PNG; image files are copied (an image already at its
    destination is left alone). Each file is written to a temporary name and renamed, so an
    interrupted export never leaves a partial image.

    Args:
        labels: The labels.
        root: Destination folder (e.g. ``<project>/labeled-data`` for DeepLabCut).
        copy_files: Copy image files too; False leaves labels with image files as they are
            (only video frames are written: a frame cache for training).
        progress: Optional ``callable(done, total)`` after each image.

    Returns:
        The labels with ``image`` = the written file and ``size`` filled in.
    """
    import shutil

    import cv2  # before anything that could load decord (its old zlib breaks cv2's PNG)

    root = Path(root)
    first = {}
    for item in labels.items:
        if copy_files or callable(item.image):
            first.setdefault(item.image_key, item)
    keys = list(first)
    order = sorted(keys, key=lambda k: (k[0], _frame_order(first[k])))
    written: dict[tuple[str, str], tuple[Path, tuple[int, int]]] = {}
    for n, key in enumerate(order):
        item = first[key]
        dest = root / item.video / item.image_name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if callable(item.image):
            rgb = np.asarray(item.image())
            _atomic_image(dest, lambda tmp, rgb=rgb: cv2.imwrite(str(tmp), rgb[..., ::-1]))
            size = (rgb.shape[1], rgb.shape[0])
        else:
            src = Path(item.image)
            if not src.is_file():
                raise InputError(f"{src}: image file not found")
            if src.resolve() != dest.resolve():
                _atomic_image(dest, lambda tmp, src=src: shutil.copyfile(src, tmp) or True)
            size = item.size or image_size(dest)
        written[key] = (dest, size)
        if progress is not None:
            progress(n + 1, len(order))
    items = [replace(item, image=str(written[item.image_key][0]),
                     size=written[item.image_key][1]) if item.image_key in written else item
             for item in labels.items]
    return labels.with_items(items)


def _frame_order(item: Label) -> int:
    return item.frame if item.frame is not None else -1


def _atomic_image(dest: Path, write) -> None:
    tmp = temp_beside(dest, suffix=dest.suffix)
    try:
        if not write(Path(tmp)):
            raise InputError(f"{dest}: cannot write the image")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file, from its header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc.__class__.__name__})") from None


# ----------------------------------------------------------------------------- reading


def read_labels(path: str | os.PathLike, *, images: str | os.PathLike | None = None,
                keypoints=None) -> Labels:
    """Read a DeepLabCut labelled-data folder/file, a COCO keypoint JSON or a SLEAP file.

    Args:
        path: A ``labeled-data/<video>`` folder, a ``CollectedData_*.h5``/``.csv`` file, a
            COCO ``.json`` file, or a SLEAP ``.slp`` file (its user-labelled instances).
        images: For COCO: the folder the ``file_name`` are relative to (default: an
            ``images`` folder beside the file, else the file's folder).
        keypoints: Keypoint set to map the labels onto by name (default: the file's).

    Returns:
        The :class:`Labels`.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        from clamp_track.io.coco_labels import read_coco_labels

        return read_coco_labels(path, images=images, keypoints=keypoints)
    if path.suffix.lower() == ".slp":
        from clamp_track.io.sleap_labels import read_sleap_labels

        labels = read_sleap_labels(path)
        return remap(labels, load_keypoint_set(keypoints)) if keypoints is not None else labels
    from clamp_track.io.dlc_labels import read_dlc_labels

    return read_dlc_labels(path, keypoints=keypoints)
