"""Make ``docs/gui.png``: the review window on the BADJA cows clip.

The results come from the real pipeline (``file`` detector with the cow's DAVIS mask boxes plus
a static false detection, and the tiny *random-weight* test model, so every prediction has a
near-zero confidence and is drawn red). Animal 1 is then corrected in the frames BADJA
annotates, with BADJA's joints mapped to AP-10K names, as a user would by dragging the points;
corrected keypoints are cyan. Needs ``../shared/data``. Run from the repository root::

    python docs/make_gui_png.py [OUT.png]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "badja-davis"
FRAMES = 32
FRAME = 21
# AP-10K keypoint <- BADJA joint (the eyes have no BADJA counterpart and stay predicted)
AP10K_FROM_BADJA = {
    "nose": "nose_tip", "neck": "neck_lower", "tail root": "tail_base(tail_0)",
    "left shoulder": "front_left_1", "left elbow": "front_left_2",
    "left front paw": "front_left_3(paw)", "right shoulder": "front_right_1",
    "right elbow": "front_right_2", "right front paw": "front_right_3(paw)",
    "left hip": "hind_left_1", "left knee": "hind_left_2", "left back paw": "hind_left_3(paw)",
    "right hip": "hind_right_1", "right knee": "hind_right_2",
    "right back paw": "hind_right_3(paw)",
}


def _boxes(out: Path) -> Path:
    import cv2

    lines = []
    masks = sorted((DATA / "DAVIS" / "Annotations" / "480p" / "cows").glob("*.png"))[:FRAMES]
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 127)
        lines.append(f"{i + 1},-1,{xs.min()},{ys.min()},{xs.max() + 1 - xs.min()},"
                     f"{ys.max() + 1 - ys.min()},0.95,-1,-1,-1")
        lines.append(f"{i + 1},-1,20,300,120,90,0.9,-1,-1,-1")
    out.write_text("\n".join(lines) + "\n")
    return out


def _correct_from_badja(store_file: Path) -> None:
    from clamp_track.io.store import ResultStore

    badja = json.loads((DATA / "derived" / "cows_480p_keypoints.json").read_text())
    names = badja["categories"][0]["keypoints"]
    frame_of = {im["id"]: im["frame_index"] for im in badja["images"]}
    with ResultStore.open(store_file) as store:
        kps = store.keypoints
        for ann in badja["annotations"]:
            frame = frame_of[ann["image_id"]]
            if frame >= FRAMES:
                continue
            xyv = np.asarray(ann["keypoints"], float).reshape(-1, 3)
            for ours, theirs in AP10K_FROM_BADJA.items():
                x, y, v = xyv[names.index(theirs)]
                if v > 0:
                    store.set_correction(frame, 1, kps.index(ours), float(x), float(y))


def main(out: Path) -> None:
    """Run the pipeline, correct animal 1, render the window at frame 21."""
    sys.path.insert(0, str(REPO))
    import torch

    from clamp_track.config import from_dict
    from clamp_track.pipelines.run import RunConfig, run_video

    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "cows.mp4"
        shutil.copy(DATA / "derived" / "cows_480p_24fps.mp4", video)
        settings = {
            "pose_model": "clamp_tiny_rn50", "pose_weights": None, "end": FRAMES,
            "exports": [],
            "detect": {"name": "file", "boxes": str(_boxes(Path(tmp) / "det.txt"))},
            "tracker": {"min_track_length": 5}, "smoother": {"min_confidence": 1e-12},
            "pose": {"flip_test": False},
        }
        torch.manual_seed(0)
        summary = run_video(video, from_dict(RunConfig, settings))
        _correct_from_badja(summary.store)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        subprocess.run([sys.executable, "-m", "clamp_track", "review", str(video), "--frame",
                        str(FRAME), "--screenshot", str(out)], check=True, env=env)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "gui.png")
