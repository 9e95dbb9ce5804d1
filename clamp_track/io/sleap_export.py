"""SLEAP files of pipeline results, written with sleap-io (the ``sleap`` extra).

* ``<video stem>.clamp.slp``: a SLEAP labels file (the video referenced by its absolute path,
  not embedded) that the SLEAP GUI opens for proofreading. Every animal in every frame is a
  ``PredictedInstance`` with every keypoint, its track (``animal1..N``, as in the DeepLabCut
  export: :func:`~clamp_track.io.export.individual_names`), point scores = keypoint confidence
  and instance score = detection score. Where the user corrected keypoints, the frame also
  holds a user ``Instance`` of the same track, ``from_predicted`` its prediction, which is how
  SLEAP marks labelled frames: it trains a SLEAP model as ``clamp-track labels export`` trains
  ours, with the keypoints the user did not correct counted as ``--untouched`` says (by
  default not labelled).
* ``<video stem>.clamp.analysis.h5``: SLEAP's analysis HDF5 (``tracks`` as
  ``(tracks, 2, nodes, frames)``, ``track_occupancy``, ``point_scores``, ``node_names``, ...)
  over every frame of the video, the matrix form that SLEAP's analysis notebooks and the
  ``movement`` package load. It is made from the predicted instances only, so a corrected
  frame still has every keypoint and its score (sleap-io would otherwise take the user
  instance, which may hold the corrected points only).

Coordinates are the raw predictions with the user's corrections in place (as in DeepLabCut's
main file; the smoothed ones are in the ``_filtered`` DeepLabCut files and the tidy CSV). Both
files are written to a temporary name and renamed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clamp_track.errors import require
from clamp_track.io.export import ExportInfo, _atomic, individual_names, instance_grid


def sleap_labels(keypoints, info: ExportInfo, boxes=None, *, user_points=None,
                 smoothed: bool = False, predicted_only: bool = False):
    """The results as a ``sleap_io.Labels`` (see the module docstring).

    Args:
        keypoints: The tidy keypoint table, with a ``corrected`` column for user labels.
        info: Keypoint set and video.
        boxes: Box table with ``frame, track, score`` for the instance scores (optional).
        user_points: ``{(frame, track): (K, 2) array}``, the user instances' points (NaN: not
            labelled), e.g. from :func:`clamp_track.io.labels.labels_from_store` with the
            ``--untouched`` rule. Default: the corrected keypoints of the table only.
        smoothed: Smoothed coordinates where the table has them instead of the raw ones.
        predicted_only: Leave out the user instances (what the analysis HDF5 is made from).
    """
    sio = require("sleap_io", "sleap", "the SLEAP export")
    kset = info.keypoint_set
    skeleton = sio.Skeleton(
        nodes=list(kset.source_names),
        edges=[(kset.source_names[a], kset.source_names[b]) for a, b in kset.skeleton],
        symmetries=[(kset.source_names[a], kset.source_names[b]) for a, b in kset.flip_pairs],
        name=kset.name)
    shape = (info.frames, info.video.height, info.video.width, 3)
    video = sio.Video(filename=str(info.video.path), backend_metadata={"shape": shape},
                      open_backend=False)
    tracks = {t: sio.Track(name=name)
              for t, name in individual_names(keypoints["track"].unique(),
                                             info.track_names).items()}
    scores = {}
    if boxes is not None and len(boxes) and "score" in boxes:
        scores = {(int(f), int(t)): float(s)
                  for f, t, s in boxes[["frame", "track", "score"]].itertuples(index=False)}
    grid = instance_grid(keypoints, kset, smoothed)
    if user_points is None:
        user_points = {(int(f), int(t)): np.where(fixed[:, None], xy, np.nan)
                       for f, t, xy, fixed in zip(grid.frames, grid.tracks, grid.xy,
                                                  grid.corrected) if fixed.any()}
    by_frame: dict[int, list] = {}
    for i, (frame, track) in enumerate(zip(grid.frames.tolist(), grid.tracks.tolist())):
        conf = grid.likelihood[i]
        finite = np.isfinite(conf)
        predicted = sio.PredictedInstance.from_numpy(
            grid.xy[i], skeleton, point_scores=conf, track=tracks[track],
            score=scores.get((frame, track), float(conf[finite].mean()) if finite.any()
                             else 0.0))
        instances = by_frame.setdefault(frame, [])
        instances.append(predicted)
        points = user_points.get((frame, track))
        if not predicted_only and points is not None:
            instances.append(sio.Instance.from_numpy(
                np.asarray(points, np.float64), skeleton, track=tracks[track],
                from_predicted=predicted))
    frames = [sio.LabeledFrame(video=video, frame_idx=f, instances=instances)
              for f, instances in by_frame.items()]
    return sio.Labels(labeled_frames=frames, videos=[video], skeletons=[skeleton],
                      tracks=list(tracks.values()),
                      provenance={"software": "clamp-track", "model": info.model_name})


def write_sleap(keypoints, out_dir: str | os.PathLike, info: ExportInfo, boxes=None, *,
                user_points=None, smoothed: bool = False) -> tuple[Path, Path]:
    """Write ``<stem>.clamp.slp`` and ``<stem>.clamp.analysis.h5``; returns both paths.

    Args:
        keypoints: The tidy keypoint table.
        out_dir: Destination folder.
        info: Keypoint set, video (absolute path), model name.
        boxes: Box table for the instance scores (optional).
        user_points: The user instances' points (see :func:`sleap_labels`).
        smoothed: Smoothed coordinates instead of the raw ones.
    """
    sio = require("sleap_io", "sleap", "the SLEAP export")
    labels = sleap_labels(keypoints, info, boxes, user_points=user_points, smoothed=smoothed)
    slp = Path(out_dir) / f"{info.stem}.clamp.slp"
    h5 = Path(out_dir) / f"{info.stem}.clamp.analysis.h5"
    with _atomic(slp, h5) as (tmp_slp, tmp_h5):
        sio.save_slp(labels, str(tmp_slp), verbose=False)
        if labels.tracks:
            predicted = sleap_labels(keypoints, info, boxes, smoothed=smoothed,
                                     predicted_only=True)
            sio.save_analysis_h5(predicted, str(tmp_h5), labels_path=str(slp.absolute()))
        else:  # sleap-io needs a track; an empty, valid table instead
            _empty_analysis(tmp_h5, info)
    return slp, h5


def _empty_analysis(path: Path, info: ExportInfo) -> None:
    """SLEAP's analysis layout with no tracks (sleap-io refuses to write one)."""
    import h5py

    kset, n = info.keypoint_set, info.frames
    names = [s.encode() for s in kset.source_names]
    with h5py.File(path, "w") as f:
        f["tracks"] = np.zeros((0, 2, kset.num_keypoints, n))
        f["track_occupancy"] = np.zeros((n, 0), np.uint8)
        f["point_scores"] = np.zeros((0, kset.num_keypoints, n))
        f["instance_scores"] = np.zeros((0, n))
        f["tracking_scores"] = np.zeros((0, n))
        f["track_names"] = np.array([], dtype="S1")
        f["node_names"] = np.array(names)
        f["edge_names"] = np.array([[names[a], names[b]] for a, b in kset.skeleton]
                                   ).reshape(-1, 2)
        f["edge_inds"] = np.array(kset.skeleton, dtype=np.int64).reshape(-1, 2)
        f["video_path"] = str(info.video.path)
