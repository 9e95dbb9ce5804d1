"""Neurodata Without Borders (NWB) file of pipeline results, with ndx-pose (the ``nwb`` extra).

``<video stem>.clamp.nwb`` holds, in the ``behavior`` processing module, one ndx-pose
``PoseEstimation`` per track (named ``animal<t>``, as the other exports name individuals) with
one ``PoseEstimationSeries`` per keypoint: x, y in video pixels ((0, 0) the top-left corner),
the keypoint confidence, and the frames' real timestamps in seconds (variable frame rates
included), over the frames the animal is present in; the video is referenced as an external
``ImageSeries``. The skeleton (nodes = the keypoints'
dataset spelling, edges) is shared by all tracks. Coordinates are those of the other exports
(smoothed, with the user's corrections in place). Any NWB reader with ndx-pose opens it
(``pynwb.NWBHDF5IO(path).read().processing["behavior"]["animal1"]``).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np

from clamp_track.errors import require
from clamp_track.io.export import ExportInfo, _atomic, individual_name, instance_grid

REFERENCE_FRAME = "(0,0) is the top-left corner of the video frame; x to the right, y down"


def write_nwb(keypoints, out_dir: str | os.PathLike, info: ExportInfo, *,
              created: str | None = None, smoothed: bool = True) -> Path:
    """Write ``<stem>.clamp.nwb`` (see the module docstring) and return its path.

    Args:
        keypoints: The tidy keypoint table (``frame, time_s, track, keypoint, x, y,
            confidence`` and the smoothed columns).
        out_dir: Destination folder.
        info: Keypoint set, video, model name.
        created: When the run was made (``YYYY-mm-dd HH:MM:SS``, local time): the session
            start; default now.
        smoothed: Smoothed coordinates where the table has them, else raw.
    """
    pynwb = require("pynwb", "nwb", "the NWB export")
    ndx_pose = require("ndx_pose", "nwb", "the NWB export")
    from clamp_track import __version__

    kset = info.keypoint_set
    start = (datetime.datetime.strptime(created, "%Y-%m-%d %H:%M:%S") if created
             else datetime.datetime.now()).astimezone()
    nwbfile = pynwb.NWBFile(
        session_description=f"animal poses in {Path(info.video.path).name} (clamp-track)",
        identifier=f"clamp-track/{info.stem}/{start.isoformat()}",
        session_start_time=start)
    video = pynwb.image.ImageSeries(  # the video, referenced (not copied into the file)
        name="video", description="the analysed video", unit="n.a.",
        external_file=[str(info.video.path)], format="external", starting_frame=[0],
        rate=float(info.video.fps or 0.0), num_samples=int(info.video.n_frames),
        dimension=[info.video.width, info.video.height])
    nwbfile.add_acquisition(video)
    behavior = nwbfile.create_processing_module("behavior", "animal poses from clamp-track")
    skeleton = ndx_pose.Skeleton(name=kset.name, nodes=list(kset.source_names),
                                 edges=np.array(kset.skeleton, np.uint8).reshape(-1, 2))
    behavior.add(ndx_pose.Skeletons(skeletons=[skeleton]))
    grid = instance_grid(keypoints, kset, smoothed)
    for track in np.unique(grid.tracks):
        rows = grid.tracks == track  # the grid is in frame order
        xy, conf = grid.xy[rows], np.nan_to_num(grid.likelihood[rows], nan=0.0)
        series = [ndx_pose.PoseEstimationSeries(
            name=name, data=xy[:, j], confidence=conf[:, j],
            reference_frame=REFERENCE_FRAME, unit="pixels", timestamps=grid.time_s[rows],
            confidence_definition="the pose model's keypoint confidence (heatmap peak); 1 "
            "for keypoints the user corrected")
            for j, name in enumerate(kset.source_names)]
        behavior.add(ndx_pose.PoseEstimation(
            name=individual_name(int(track), info.track_names), pose_estimation_series=series,
            description=f"{grid.coordinates} keypoints of track {int(track)}",
            source_video=video, scorer=info.model_name, source_software="clamp-track",
            source_software_version=__version__, skeleton=skeleton))
    path = Path(out_dir) / f"{info.stem}.clamp.nwb"
    with _atomic(path) as (tmp,):
        with pynwb.NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwbfile)
    return path
