"""SLEAP labels (``.slp``) as :class:`~clamp_track.io.labels.Labels`, through sleap-io.

The user-labelled instances of a SLEAP project (``Instance``, not ``PredictedInstance``) become
labels: keypoints visible in SLEAP are labelled, the others not; the track name is the
individual; the image is the video frame (decoded when needed, like corrected video frames) or
the file of an image-sequence video. Video paths are resolved as SLEAP does: as stored, else
relative to the ``.slp`` file's folder. The keypoint set is the built-in one when the skeleton
is one (as clamp-track's own SLEAP export writes it), otherwise built from the node names
(prompt text from the names, flip pairs from SLEAP's symmetries or inferred from left/right
names, skeleton from the edges). Frames embedded in a ``.pkg.slp`` cannot be read here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clamp_track.errors import InputError, require
from clamp_track.io.labels import Label, Labels, VideoFrame, image_name
from clamp_track.skeleton import KeypointSet, from_names, get_keypoint_set


def read_sleap_labels(path: str | os.PathLike) -> Labels:
    """Read the user-labelled instances of a SLEAP ``.slp`` file (see the module docstring)."""
    sio = require("sleap_io", "sleap", "reading SLEAP labels")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such SLEAP file")
    try:
        data = sio.load_slp(str(path), open_videos=False)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise InputError(f"{path}: not a readable SLEAP .slp file ({type(exc).__name__}: "
                         f"{exc})".splitlines()[0]) from None
    if len(data.skeletons) != 1:
        raise InputError(f"{path}: has {len(data.skeletons)} skeletons; clamp-track reads "
                         "files with one")
    kset = _keypoint_set(data.skeleton)
    items, individuals = [], set()
    sources = {id(v): _source(v, path) for v in data.videos}
    for lf in data.labeled_frames:
        users = [i for i in lf.instances if not isinstance(i, sio.PredictedInstance)]
        if not users:
            continue
        image, video, total = sources[id(lf.video)]
        frame = int(lf.frame_idx)
        for inst in users:
            xy = inst.numpy(invisible_as_nan=True).astype(np.float64)
            seen = np.isfinite(xy).all(axis=1)
            kps = np.column_stack([np.where(seen[:, None], xy, np.nan), np.where(seen, 2.0, 0)])
            name = inst.track.name if inst.track is not None else ""
            if name:
                individuals.add(name)
            items.append(Label(image=image(frame), video=video,
                               image_name=image_name(frame, total), keypoints=kps,
                               individual=name, frame=frame, origin=str(path)))
    return Labels(kset, items, "sleap", tuple(sorted(individuals)), (str(path),))


def _keypoint_set(skeleton) -> KeypointSet:
    nodes = list(skeleton.node_names)
    try:
        builtin = get_keypoint_set(skeleton.name or "")
        if list(builtin.source_names) == nodes:
            return builtin
    except InputError:
        pass
    index = {n: i for i, n in enumerate(nodes)}
    edges = [(index[e.source.name], index[e.destination.name]) for e in skeleton.edges]
    pairs = [tuple(index[n.name] for n in s.nodes) for s in skeleton.symmetries]
    return from_names(nodes, name=skeleton.name or "sleap", skeleton=edges,
                      flip_pairs=pairs or None)


def _source(video, slp: Path):
    """``(frame -> image source, video name, frame count for image names)`` of a SLEAP video."""
    filename = video.filename
    if isinstance(filename, list):  # an image sequence: one file per frame
        files = [_resolve(f, slp) for f in filename]
        return (lambda i: str(files[i])), Path(files[0]).parent.name, len(files)
    file = _resolve(filename, slp)
    if file.suffix.lower() in (".slp", ".h5", ".hdf5"):
        raise InputError(f"{slp}: its frames are embedded in {file.name}, which clamp-track "
                         "cannot decode; export the labels with the original video instead")
    frames = 10**5  # unknown without the video: five-digit image names
    if file.is_file():
        from clamp_track.io.video import probe

        frames = probe(file).n_frames
    return (lambda i: VideoFrame(str(file), i)), file.stem, frames


def _resolve(filename: str, slp: Path) -> Path:
    file = Path(filename)
    if file.exists():
        return file
    for candidate in (slp.parent / file, slp.parent / file.name):
        if candidate.exists():
            return candidate
    return file  # missing: reported when a frame is decoded, with its path
