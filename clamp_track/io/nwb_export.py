"""Neurodata Without Borders (NWB) files of pipeline results, with ndx-pose (the ``nwb`` extra).

One file per animal, ``<video stem>.clamp.<individual>.nwb`` (``animal1``...: the names of
:func:`~clamp_track.io.export.individual_names`), each with a ``Subject`` (``subject_id`` = the
individual) and, in the ``behavior`` processing module, one ndx-pose ``PoseEstimation`` under
the default name ``PoseEstimation`` with one ``PoseEstimationSeries`` per keypoint: x, y in
video pixels ((0, 0) the top-left corner), the keypoint confidence, and a timestamp in seconds
for every frame of the video (NaN where the animal is absent), so the files of one video line
up frame by frame. The video is referenced as an external ``ImageSeries`` by its absolute path.

Why one file per animal: NWB describes one subject per file, and the readers users have
expect exactly that: ``movement.io.load_poses.from_nwb_file`` reads the ``PoseEstimation``
of a ``behavior`` module with default arguments and names the individual after the file's
``identifier`` (here the individual's name), merging several files with ``xarray.merge``;
DeepLabCut's ``dlc2nwb`` and movement's own NWB writer also write one animal per file. The
alternative, ndx-multisubjects (as sleap-io writes several animals into one file), is not read
by movement or dlc2nwb.

Coordinates are the raw predictions with the user's corrections in place, as in DeepLabCut's
main file. The session start is the video's recording time (its container's
``creation_time``) when it has one, else when the run was made.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np

from clamp_track.errors import require
from clamp_track.io.export import ExportInfo, _atomic, individual_names, instance_grid

REFERENCE_FRAME = "(0,0) is the top-left corner of the video frame; x to the right, y down"


def write_nwb(keypoints, out_dir: str | os.PathLike, info: ExportInfo, *,
              created: str | None = None, frame_times=None, smoothed: bool = False
              ) -> list[Path]:
    """Write ``<stem>.clamp.<individual>.nwb`` per animal (module docstring); return the paths.

    Args:
        keypoints: The tidy keypoint table (``frame, time_s, track, keypoint, x, y,
            confidence`` and the smoothed columns).
        out_dir: Destination folder.
        info: Keypoint set, video (absolute path), model name.
        created: When the run was made (``YYYY-mm-dd HH:MM:SS``, local time): the session
            start if the video has no recording time; default now.
        frame_times: ``(frames, times_s)`` of the processed frames (the store's
            ``frame_times()``), for the timestamps of frames no animal is in.
        smoothed: Smoothed coordinates where the table has them instead of the raw ones.

    Returns:
        One path per animal (none for results without animals).
    """
    grid = instance_grid(keypoints, info.keypoint_set, smoothed)
    names = individual_names(grid.tracks, info.track_names)
    if not names:
        return []
    require("pynwb", "nwb", "the NWB export")
    require("ndx_pose", "nwb", "the NWB export")
    start = session_start(info, created)
    times = frame_timestamps(info, grid, frame_times)
    paths = []
    for track, name in names.items():
        path = Path(out_dir) / f"{info.stem}.clamp.{name}.nwb"
        nwbfile = _animal_file(grid, track, name, info, start, times)
        with _atomic(path) as (tmp,):
            import pynwb

            with pynwb.NWBHDF5IO(str(tmp), "w") as io:
                io.write(nwbfile)
        paths.append(path)
    return paths


def session_start(info: ExportInfo, created: str | None) -> datetime.datetime:
    """The video's recording time if its container has one, else the run's time, else now."""
    from clamp_track.io.video import creation_time

    recorded = creation_time(info.video.path) if Path(info.video.path).is_file() else None
    if recorded is not None:
        return recorded
    return (datetime.datetime.strptime(created, "%Y-%m-%d %H:%M:%S") if created
            else datetime.datetime.now()).astimezone()


def frame_timestamps(info: ExportInfo, grid, frame_times=None) -> np.ndarray:
    """(n_frames,) time in seconds of every video frame.

    Known times (processed frames, frames with animals) are used as they are (variable frame
    rates included); frames between them are interpolated, frames before or after them
    extrapolated at the video's frame rate.
    """
    frames, times = grid.frames, grid.time_s
    if frame_times is not None:
        frames = np.concatenate([frames, np.asarray(frame_times[0], np.int64)])
        times = np.concatenate([times, np.asarray(frame_times[1], np.float64)])
    keep = np.isfinite(times)
    frames, index = np.unique(frames[keep], return_index=True)
    times = times[keep][index]
    step = 1.0 / info.video.fps if info.video.fps else 1.0
    every = np.arange(info.frames, dtype=np.float64)
    if not len(frames):
        return every * step
    out = np.interp(every, frames, times)
    before, after = every < frames[0], every > frames[-1]
    out[before] = times[0] - (frames[0] - every[before]) * step
    out[after] = times[-1] + (every[after] - frames[-1]) * step
    return out


def _timing(times: np.ndarray, fps: float) -> dict:
    """``starting_time`` and ``rate`` for frames at a constant rate, else ``timestamps``.

    NWB's best practice (and nwbinspector) asks for a rate where the timestamps are regular;
    variable frame rate videos keep their real timestamps.
    """
    if fps and len(times) > 1 and np.allclose(np.diff(times), 1.0 / fps, rtol=1e-6,
                                              atol=1e-9):
        return {"starting_time": float(times[0]), "rate": float(fps)}
    return {"timestamps": times}


def _animal_file(grid, track: int, name: str, info: ExportInfo, start, times):
    """The NWBFile of one animal: subject, referenced video, skeleton, pose estimation."""
    import ndx_pose
    import pynwb

    from clamp_track import __version__

    kset, video_name = info.keypoint_set, Path(info.video.path).name
    nwbfile = pynwb.NWBFile(
        session_description=f"poses of {name} in {video_name} (clamp-track)",
        identifier=name, session_start_time=start,
        subject=pynwb.file.Subject(  # age and sex unknown, in the forms NWB/DANDI define
            subject_id=name, age="P0D/", sex="U", description=(
                f"the animal tracked as {name} (track {track}) in {video_name}")))
    timing = _timing(times, info.video.fps)
    video = pynwb.image.ImageSeries(  # the video, referenced (not copied into the file)
        name="video", description="the analysed video", unit="n.a.",
        external_file=[str(info.video.path)], format="external", starting_frame=[0],
        dimension=[info.video.width, info.video.height], **timing,
        **({"num_samples": int(info.frames)} if "rate" in timing else {}))
    nwbfile.add_acquisition(video)
    behavior = nwbfile.create_processing_module("behavior", "animal poses from clamp-track")
    skeleton = ndx_pose.Skeleton(name=kset.name, nodes=list(kset.source_names),
                                 edges=np.array(kset.skeleton, np.uint8).reshape(-1, 2),
                                 subject=nwbfile.subject)
    behavior.add(ndx_pose.Skeletons(skeletons=[skeleton]))
    rows = grid.tracks == track  # the grid is in frame order
    xy = np.full((info.frames, kset.num_keypoints, 2), np.nan)
    conf = np.full((info.frames, kset.num_keypoints), np.nan)
    xy[grid.frames[rows]], conf[grid.frames[rows]] = grid.xy[rows], grid.likelihood[rows]
    series = []
    for j, node in enumerate(kset.source_names):
        if series and "timestamps" in timing:  # one copy of the timestamps, linked
            timing = {"timestamps": series[0]}
        series.append(ndx_pose.PoseEstimationSeries(
            name=node, description=f"{node} of {name}: x, y in pixels", data=xy[:, j],
            confidence=conf[:, j], reference_frame=REFERENCE_FRAME, unit="pixels", **timing,
            confidence_definition="the pose model's keypoint confidence (heatmap peak); 1 for "
            "keypoints the user corrected; NaN where the animal is absent"))
    behavior.add(ndx_pose.PoseEstimation(
        name="PoseEstimation", pose_estimation_series=series,
        description=f"{grid.coordinates} keypoints of {name} (track {track}), every video frame",
        source_video=video, scorer=info.model_name, source_software="clamp-track",
        source_software_version=__version__, skeleton=skeleton))
    return nwbfile
