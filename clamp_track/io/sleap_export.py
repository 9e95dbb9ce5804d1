"""SLEAP files of pipeline results, written with sleap-io (the ``sleap`` extra).

* ``<video stem>.clamp.slp``: a SLEAP labels file (the video referenced, not embedded) that the
  SLEAP GUI opens for proofreading. Every animal in every frame is a ``PredictedInstance`` with
  its track (``animal<t>``, as in the DeepLabCut export), point scores = keypoint confidence and
  instance score = detection score. Where the user corrected keypoints, the frame also holds a
  user ``Instance`` of the same track with the corrected keypoints only (others not visible),
  ``from_predicted`` its prediction, which is how SLEAP marks labelled frames: they train a
  SLEAP model as they train ours.
* ``<video stem>.clamp.analysis.h5``: SLEAP's analysis HDF5 (``tracks`` as
  ``(tracks, 2, nodes, frames)``, ``track_occupancy``, ``point_scores``, ``node_names``, ...), the
  matrix form that SLEAP's analysis notebooks and the ``movement`` package load.

Coordinates are those of the other exports: the smoothed ones where the table has them, with the
user's corrections in place (:func:`clamp_track.pipelines.run.corrected_table`). Both files are
written to a temporary name and renamed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clamp_track.errors import require
from clamp_track.io.export import ExportInfo, _atomic, individual_name, instance_grid


def sleap_labels(keypoints, info: ExportInfo, boxes=None, *, smoothed: bool = True):
    """The results as a ``sleap_io.Labels`` (see the module docstring).

    Args:
        keypoints: The tidy keypoint table, with a ``corrected`` column for user labels.
        info: Keypoint set and video.
        boxes: Box table with ``frame, track, score`` for the instance scores (optional).
        smoothed: Smoothed coordinates where the table has them, else raw.
    """
    sio = require("sleap_io", "sleap", "the SLEAP export")
    kset = info.keypoint_set
    skeleton = sio.Skeleton(
        nodes=list(kset.source_names),
        edges=[(kset.source_names[a], kset.source_names[b]) for a, b in kset.skeleton],
        symmetries=[(kset.source_names[a], kset.source_names[b]) for a, b in kset.flip_pairs],
        name=kset.name)
    video = sio.Video(filename=str(info.video.path), open_backend=False)
    tracks = {int(t): sio.Track(name=individual_name(t, info.track_names))
              for t in sorted(keypoints["track"].unique())}
    scores = {}
    if boxes is not None and len(boxes) and "score" in boxes:
        scores = {(int(f), int(t)): float(s)
                  for f, t, s in boxes[["frame", "track", "score"]].itertuples(index=False)}
    grid = instance_grid(keypoints, kset, smoothed)
    xy, conf, fixed = grid.xy, grid.likelihood, grid.corrected
    by_frame: dict[int, list] = {}
    for i, (frame, track) in enumerate(zip(grid.frames.tolist(), grid.tracks.tolist())):
        finite = np.isfinite(conf[i])
        predicted = sio.PredictedInstance.from_numpy(
            xy[i], skeleton, point_scores=conf[i], track=tracks[track],
            score=scores.get((frame, track), float(conf[i][finite].mean()) if finite.any()
                             else 0.0))
        instances = by_frame.setdefault(frame, [])
        instances.append(predicted)
        if fixed[i].any():  # occluded marks are corrections without a position: not visible
            instances.append(sio.Instance.from_numpy(
                np.where(fixed[i][:, None], xy[i], np.nan), skeleton, track=tracks[track],
                from_predicted=predicted))
    frames = [sio.LabeledFrame(video=video, frame_idx=f, instances=instances)
              for f, instances in by_frame.items()]
    return sio.Labels(labeled_frames=frames, videos=[video], skeletons=[skeleton],
                      tracks=list(tracks.values()),
                      provenance={"software": "clamp-track", "model": info.model_name})


def write_sleap(keypoints, out_dir: str | os.PathLike, info: ExportInfo, boxes=None, *,
                smoothed: bool = True) -> tuple[Path, Path]:
    """Write ``<stem>.clamp.slp`` and ``<stem>.clamp.analysis.h5``; returns both paths."""
    sio = require("sleap_io", "sleap", "the SLEAP export")
    labels = sleap_labels(keypoints, info, boxes, smoothed=smoothed)
    slp = Path(out_dir) / f"{info.stem}.clamp.slp"
    h5 = Path(out_dir) / f"{info.stem}.clamp.analysis.h5"
    with _atomic(slp, h5) as (tmp_slp, tmp_h5):
        sio.save_slp(labels, str(tmp_slp), verbose=False)
        if labels.tracks:
            sio.save_analysis_h5(labels, str(tmp_h5), labels_path=str(slp))
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
