"""End-to-end runs on real footage with a tiny random-weight model and the file detector."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clamp_track.errors import InputError
from clamp_track.io.store import VIDEO_REF, ResultStore
from clamp_track.pipelines.run import Cancelled, DetectConfig, Models, RunConfig, run_video
from clamp_track.pipelines.smoother import SmootherConfig, smooth_track
from clamp_track.pipelines.tracker import TrackerConfig

# A random-weight model's heatmap maxima are ~1e-10; accept them so smoothing has input.
SMOOTHER = SmootherConfig(min_confidence=1e-12)


def mask_boxes_to_mot(mask_dir, out_file) -> int:
    """MOTChallenge det.txt (1-based frames) from the DAVIS object masks of a sequence."""
    import cv2

    lines = []
    for i, mask_path in enumerate(sorted(mask_dir.glob("*.png"))):
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        ys, xs = np.nonzero(mask > 127)
        if len(xs):
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            lines.append(f"{i + 1},-1,{x1},{y1},{x2 - x1},{y2 - y1},0.95,-1,-1,-1")
    out_file.write_text("\n".join(lines) + "\n")
    return len(lines)


@pytest.fixture(scope="module")
def cows(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cows")
    video = folder / "cows.mp4"
    shutil.copy(shared_data / "badja-davis" / "derived" / "cows_480p_24fps.mp4", video)
    boxes = folder / "det.txt"
    n = mask_boxes_to_mot(shared_data / "badja-davis" / "DAVIS" / "Annotations" / "480p" / "cows",
                          boxes)
    assert n == 104
    return video, boxes


def _cfg(boxes, **kw) -> RunConfig:
    base = dict(pose_model="clamp_tiny_rn50", pose_weights=None, chunk=8,
                detect=DetectConfig(name="file", boxes=str(boxes)),
                tracker=TrackerConfig(min_track_length=5), smoother=SMOOTHER,
                exports=("csv", "dlc"))
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def models(cows):
    """One random-weight model for all runs, so that their results are comparable."""
    return Models(_cfg(cows[1]))


@pytest.fixture(scope="module")
def cows_run(cows, models, tmp_path_factory):
    video, boxes = cows
    out = tmp_path_factory.mktemp("cows_out")
    summary = run_video(video, _cfg(boxes), out, models=models)
    return summary, out


def test_one_animal_one_continuous_track_and_real_timestamps(cows, cows_run):
    from clamp_track.io.video import VideoReader

    summary, out = cows_run
    with ResultStore.open(summary.store, readonly=True) as store:
        frames, times = store.frame_times()
        assert frames.tolist() == list(range(104)) and summary.frames == 104
        with VideoReader(cows[0]) as reader:
            np.testing.assert_allclose(times, reader.times_s[:104])
        assert store.track_ids() == [1]
        track = store.track(1)
        assert track["frames"].tolist() == list(range(104))
        assert np.isfinite(track["smooth"]).all()  # smoothed everywhere, with variance
        xy, var = smooth_track(times, track["raw"][..., :2], track["raw"][..., 2], SMOOTHER)
        np.testing.assert_allclose(track["smooth"][..., :2], xy, rtol=1e-5)
        np.testing.assert_allclose(track["smooth"][..., 2], var, rtol=1e-5)
        assert store.complete
    assert (out / "config.resolved.yaml").is_file()


def test_csv_and_dlc_exports_agree_with_the_store(cows_run):
    summary, out = cows_run
    with ResultStore.open(summary.store, readonly=True) as store:
        tidy = store.tidy()
        kps = store.keypoints
    csv = pd.read_csv(_one(out, "*.clamp.csv"))
    assert len(csv) == len(tidy) == 104 * 17
    np.testing.assert_allclose(csv["x"], tidy["x"], rtol=1e-6)
    h5 = _dlc_main(out)
    assert not h5.stem.endswith("_el")  # one animal: DeepLabCut's single-animal files
    df = pd.read_hdf(h5)  # DeepLabCut reads it without a key
    assert df.columns.names == ["scorer", "bodyparts", "coords"]
    assert len(df) == 104 and list(df.index) == list(range(104))
    coords = df.columns.get_level_values("coords")[:3].tolist()
    assert coords == ["x", "y", "likelihood"]
    assert list(dict.fromkeys(df.columns.get_level_values("bodyparts"))) == list(kps.source_names)
    # main file: every raw prediction, whatever its confidence (DeepLabCut's analyzeskeleton
    # fails on any NaN); _filtered: the smoothed coordinates
    scorer = df.columns.get_level_values("scorer")[0]
    assert df.notna().all().all()
    np.testing.assert_allclose(df[scorer].xs("x", axis=1, level="coords").to_numpy().ravel(),
                               tidy["x"], rtol=1e-6)
    np.testing.assert_allclose(
        df[scorer].xs("likelihood", axis=1, level="coords").to_numpy().ravel(),
        tidy["confidence"], rtol=1e-6)
    filtered = pd.read_hdf(h5.with_name(h5.stem + "_filtered.h5"))
    np.testing.assert_allclose(
        filtered[scorer].xs("x", axis=1, level="coords").to_numpy().ravel(), tidy["x_smooth"],
        rtol=1e-6)


def test_exports_carry_the_corrections_in_smoothed_coordinates_too(cows_run, tmp_path):
    """DLC files are written from the smoothed coordinates, which the run computed before any
    correction: the export smooths corrected tracks again, and a fix is exact where it was
    made."""
    from clamp_track.pipelines.run import export

    summary, _ = cows_run
    store_file = tmp_path / summary.store.name
    shutil.copy(summary.store, store_file)
    with ResultStore.open(store_file) as store:
        before = store.track(1)
        frames, times = store.frame_times()
        x, y = before["smooth"][50, 0, :2] + (40.0, -30.0)
        store.set_correction(50, 1, 0, float(x), float(y))
        store.set_correction(50, 1, 3, None, None, visible=False)  # marked occluded
        paths = export(store, ("csv", "dlc"), tmp_path / "out")
    dlc = pd.read_hdf(next(p for p in paths if p.name.endswith("_filtered.h5")))
    raw = pd.read_hdf(next(p for p in paths if p.suffix == ".h5" and "_filtered" not in p.name))
    scorer = dlc.columns.get_level_values("scorer")[0]
    names = list(dict.fromkeys(dlc.columns.get_level_values("bodyparts")))
    for table in (dlc, raw):  # the fix is exact in both files, the occluded mark NaN
        fixed = table[scorer][names[0]]
        assert (fixed.loc[50, "x"], fixed.loc[50, "y"], fixed.loc[50, "likelihood"]) == (
            pytest.approx(x), pytest.approx(y), 1.0)
        assert np.isnan(table[scorer][names[3]].loc[50, ["x", "y"]]).all()
    assert raw.drop(index=50).notna().all().all()  # raw: nothing else missing
    fixed = dlc[scorer][names[0]]

    # the frames around the fix follow the track smoothed with the fix as a measurement
    xy, conf = before["raw"][..., :2].copy(), before["raw"][..., 2].copy()
    xy[50, 0], conf[50, 0] = (x, y), 1.0
    xy[50, 3], conf[50, 3] = np.nan, 0.0
    expected, _ = smooth_track(times, xy, conf, SMOOTHER)
    np.testing.assert_allclose(fixed.loc[[45, 49, 51, 55], "x"], expected[[45, 49, 51, 55], 0, 0],
                               rtol=1e-5)
    assert abs(fixed.loc[51, "x"] - before["smooth"][51, 0, 0]) > 1.0  # it moved towards x
    untouched = dlc[scorer][names[1]]  # keypoints are smoothed independently
    np.testing.assert_allclose(untouched["x"], before["smooth"][:, 1, 0], rtol=1e-5)
    table = pd.read_csv(next(p for p in paths if p.name.endswith(".clamp.csv")))
    row = table[(table.frame == 50) & (table.keypoint == names[0])].iloc[0]
    assert (row.x_smooth, row.variance, row.corrected) == (pytest.approx(x), 0.0, True)


def _corrected_copy(cows_run, tmp_path) -> Path:
    """A copy of the run's store with a correction and an occluded mark at frame 50 (animal 1)."""
    summary, _ = cows_run
    store_file = tmp_path / summary.store.name
    shutil.copy(summary.store, store_file)
    with ResultStore.open(store_file) as store:
        store.set_correction(50, 1, 0, 123.5, 234.5)
        store.set_correction(50, 1, 3, None, None, visible=False)
    return store_file


def _export_corrected(cows_run, tmp_path, fmt: str):
    """Export a copy of the run with a correction (and an occluded mark) at frame 50 as DLC and
    ``fmt``; returns the written paths, the keypoint names, the frame times and the DLC table
    of animal 1."""
    from clamp_track.pipelines.run import export

    with ResultStore.open(_corrected_copy(cows_run, tmp_path)) as store:
        names = store.keypoints.source_names
        _, times = store.frame_times()
        paths = export(store, ("dlc", fmt), tmp_path / "out")
    dlc = pd.read_hdf(next(p for p in paths if p.suffix == ".h5" and "DLC" in p.name
                           and "_filtered" not in p.name))
    return paths, names, times, dlc[dlc.columns.get_level_values("scorer")[0]]


def test_sleap_files_open_in_sleap_io_and_agree_with_the_dlc_export(cows_run, tmp_path):
    import sleap_io as sio

    paths, names, _, dlc = _export_corrected(cows_run, tmp_path, "sleap")
    labels = sio.load_slp(str(next(p for p in paths if p.suffix == ".slp")))
    assert len(labels) == 104 and [t.name for t in labels.tracks] == ["animal1"]
    assert labels.skeleton.node_names == list(names) and len(labels.skeleton.edges) > 0
    video = Path(labels.video.filename)
    assert video.is_absolute() and video.name == "cows.mp4" and labels.video.shape[0] == 104
    frame = labels[50]
    predicted = [i for i in frame.instances if isinstance(i, sio.PredictedInstance)]
    user = [i for i in frame.instances if not isinstance(i, sio.PredictedInstance)]
    assert len(predicted) == 1 and len(user) == 1 and user[0].track.name == "animal1"
    xy = predicted[0].numpy()
    for k in (0, 1, 5):
        np.testing.assert_allclose(xy[k], dlc[names[k]].loc[50, ["x", "y"]], rtol=1e-6)
    np.testing.assert_allclose(predicted[0].numpy(scores=True)[1, 2],
                               dlc[names[1]].loc[50, "likelihood"], rtol=1e-6)
    user_xy = user[0].numpy()
    assert user_xy[0].tolist() == [123.5, 234.5] and np.isnan(user_xy[1:]).all()
    assert len(labels.user_labeled_frames) == 1  # one labelled frame, as SLEAP counts them
    # the analysis file: every keypoint and score of the corrected frame, not the user's points
    # only; one frame per video frame
    analysis_file = next(p for p in paths if p.name.endswith(".analysis.h5"))
    import h5py

    with h5py.File(analysis_file) as f:
        tracks, scores = f["tracks"][:], f["point_scores"][:]  # (1, 2, K, T), (1, K, T)
        assert Path(f["video_path"][()].decode()).is_absolute()
    assert tracks.shape == (1, 2, len(names), 104)
    raw_xy = np.stack([dlc[n][["x", "y"]].to_numpy() for n in names], 1)  # (T, K, 2)
    raw_p = np.stack([dlc[n]["likelihood"].to_numpy() for n in names], 1)
    np.testing.assert_allclose(tracks[0].transpose(2, 1, 0), raw_xy, rtol=1e-6)
    np.testing.assert_allclose(scores[0].T, raw_p, rtol=1e-6)
    assert np.isfinite(tracks[0, :, [0, 1, 2, 4], 50]).all() and scores[0, 1, 50] > 0
    assert tracks[0, :, 0, 50].tolist() == [123.5, 234.5]
    analysis = sio.load_analysis_h5(str(analysis_file))
    np.testing.assert_allclose(analysis[10].instances[0].numpy()[2],
                               dlc[names[2]].loc[10, ["x", "y"]], rtol=1e-6)


@pytest.mark.parametrize("untouched", ["ignore", "all"])
def test_slp_user_instances_follow_untouched_as_labels_export_does(cows_run, tmp_path,
                                                                   untouched):
    """``export --untouched`` gives the .slp the user instances ``labels export`` writes."""
    import json

    import sleap_io as sio

    from clamp_track.cli import main

    store_file = _corrected_copy(cows_run, tmp_path)
    with ResultStore.open(store_file) as store:
        k = store.keypoints.num_keypoints
    assert main(["export", str(store_file), "--format", "sleap", "--untouched", untouched,
                 "-o", str(tmp_path / "out")]) == 0
    assert main(["labels", "export", str(store_file), "--format", "coco", "--untouched",
                 untouched, "-o", str(tmp_path / "coco")]) == 0
    [annotation] = json.loads((tmp_path / "coco" / "annotations.json").read_text())[
        "annotations"]
    coco = np.array(annotation["keypoints"], np.float64).reshape(k, 3)
    labels = sio.load_slp(str(tmp_path / "out" / "cows.clamp.slp"))
    [user] = [i for i in labels.find(labels.video, 50)[0].instances
              if not isinstance(i, sio.PredictedInstance)]
    xy = user.numpy()
    labelled = coco[:, 2] == 2
    np.testing.assert_allclose(xy[labelled], coco[labelled, :2], rtol=1e-6)
    assert np.isnan(xy[~labelled]).all()
    assert xy[0].tolist() == [123.5, 234.5] and np.isnan(xy[3]).all()  # the fix, occluded
    assert labelled.sum() == (1 if untouched == "ignore" else k - 1)
    assert len(labels.user_labeled_frames) == 1


def test_nwb_file_per_animal_with_real_timestamps_agrees_with_dlc(cows_run, tmp_path):
    from pynwb import NWBHDF5IO

    paths, names, times, dlc = _export_corrected(cows_run, tmp_path, "nwb")
    nwb_files = [p for p in paths if p.suffix == ".nwb"]
    assert [p.name for p in nwb_files] == ["cows.clamp.animal1.nwb"]
    with NWBHDF5IO(str(nwb_files[0]), "r") as io:
        nwb = io.read()
        assert nwb.identifier == "animal1" and nwb.subject.subject_id == "animal1"
        behavior = nwb.processing["behavior"]
        pose = behavior["PoseEstimation"]  # the name movement and dlc2nwb look for
        assert set(behavior.data_interfaces) == {"Skeletons", "PoseEstimation"}
        assert list(pose.skeleton.nodes[:]) == list(names) and len(pose.skeleton.edges) > 0
        assert pose.source_software == "clamp-track"
        video = Path(pose.source_video.external_file[0])
        assert video.is_absolute() and video.is_file() and video.name == "cows.mp4"
        nose = pose.pose_estimation_series[names[0]]
        np.testing.assert_allclose(nose.get_timestamps()[:], times)  # seconds, not frame numbers
        np.testing.assert_allclose(nose.data[50], [123.5, 234.5])  # the correction
        assert nose.confidence[50] == 1.0 and nose.unit == "pixels"
        assert np.isnan(pose.pose_estimation_series[names[3]].data[50]).all()  # occluded
        eye = pose.pose_estimation_series[names[2]]
        assert len(eye.data) == len(dlc) == 104  # one row per video frame, as DeepLabCut
        np.testing.assert_allclose(eye.data[:], dlc[names[2]][["x", "y"]].to_numpy(),
                                   rtol=1e-6)
        np.testing.assert_allclose(eye.confidence[:], dlc[names[2]]["likelihood"], rtol=1e-6)


def test_exports_cover_the_same_video_frames_with_start_and_end(cows, models, tmp_path):
    """--start/--end: DLC, SLEAP and NWB all have one row per video frame, NaN outside."""
    import h5py
    from pynwb import NWBHDF5IO

    video, boxes = cows
    run_video(video, _cfg(boxes, start=20, end=60, exports=("dlc", "sleap", "nwb")), tmp_path,
              models=models)
    df = pd.read_hdf(_dlc_main(tmp_path))
    with h5py.File(_one(tmp_path, "*.analysis.h5")) as f:
        occupancy = f["track_occupancy"][:]
    with NWBHDF5IO(str(_one(tmp_path, "*.nwb")), "r") as io:
        series = next(iter(io.read().processing["behavior"]["PoseEstimation"]
                           .pose_estimation_series.values()))
        data, stamps = series.data[:], series.get_timestamps()[:]
    assert len(df) == len(occupancy) == len(data) == len(stamps) == 104
    present = np.flatnonzero(df.notna().any(axis=1))
    assert present.min() >= 20 and present.max() < 60
    assert np.flatnonzero(occupancy[:, 0]).tolist() == present.tolist()
    assert np.flatnonzero(np.isfinite(data).all(1)).tolist() == present.tolist()
    assert np.all(np.diff(stamps) > 0)


def test_export_from_another_folder_records_absolute_paths_and_leaves_no_wal(
        cows, cows_run, tmp_path, monkeypatch):
    """``cd / && clamp-track export STORE --format video`` with a store that recorded its
    video relative (run from the video's folder): every file names the absolute video."""
    import os
    import pickle

    import sleap_io as sio
    from pynwb import NWBHDF5IO

    from clamp_track.cli import main

    summary, _ = cows_run
    clip = tmp_path / "clip"
    clip.mkdir()
    shutil.copy(cows[0], clip / "cows.mp4")
    store_file = clip / summary.store.name
    shutil.copy(summary.store, store_file)
    with ResultStore.open(store_file) as store:
        # a store from before video links, its video typed relative to the run's folder
        store.set_meta(video={**store.meta("video"), "path": "cows.mp4"}, **{VIDEO_REF: None})
    monkeypatch.chdir("/")
    old = os.umask(0o022)
    try:
        assert main(["export", str(store_file), "--format", "dlc,sleap,nwb,video",
                     "-o", str(tmp_path / "out")]) == 0
    finally:
        os.umask(old)
    video = str(clip / "cows.mp4")
    out = tmp_path / "out"
    assert (out / "cows.clamp.mp4").is_file()
    assert sio.load_slp(str(out / "cows.clamp.slp")).video.filename == video
    with NWBHDF5IO(str(out / "cows.clamp.animal1.nwb"), "r") as io:
        assert io.read().acquisition["video"].external_file[0] == video
    meta = pickle.loads(next(out.glob("*_meta.pickle")).read_bytes())
    assert meta["data"]["clamp-track"]["video"] == video
    assert sorted(p.name for p in clip.iterdir()) == ["cows.mp4", store_file.name]  # no -wal
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o644}  # lab mates read


def test_a_run_from_the_videos_folder_records_its_absolute_path(cows, models, tmp_path,
                                                                monkeypatch):
    video, boxes = cows
    monkeypatch.chdir(video.parent)
    summary = run_video(Path(video.name), _cfg(boxes, end=8, exports=()), tmp_path,
                        models=models)
    with ResultStore.open(summary.store, readonly=True) as store:
        assert store.video_info.path == str(video) and Path(store.video_info.path).is_absolute()


def test_a_run_that_smoothed_nothing_is_smoothed_after_corrections(cows, models, tmp_path):
    from clamp_track.pipelines.run import export

    video, boxes = cows
    strict = SmootherConfig(min_confidence=1.0)  # no prediction of random weights passes
    summary = run_video(video, _cfg(boxes, end=30, smoother=strict, exports=()), tmp_path,
                        models=models)
    with ResultStore.open(summary.store) as store:
        assert store.tidy()["x_smooth"].isna().all()
        for frame in range(10, 20):
            store.set_correction(frame, 1, 0, 100.0 + frame, 200.0)
        paths = export(store, ("dlc",), tmp_path / "out")
    filtered = pd.read_hdf(next(p for p in paths if p.name.endswith("_filtered.h5")))
    nose = filtered.droplevel(0, axis=1).iloc[:, :3]
    assert nose.iloc[10:20, 0].tolist() == [100.0 + f for f in range(10, 20)]
    assert nose.iloc[21:].isna().all().all()  # beyond the fixes the smoother has nothing


def _dlc_main(folder):
    """The main DeepLabCut .h5 of an export (not ``_filtered``)."""
    found = [p for p in sorted(folder.glob("*DLC_*.h5")) if not p.stem.endswith("_filtered")]
    assert len(found) == 1, [p.name for p in folder.iterdir()]
    return found[0]


def _one(folder, pattern):
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, (pattern, [p.name for p in folder.iterdir()])
    return found[0]


def test_resume_after_an_interruption_gives_identical_results(cows, cows_run, models, tmp_path):
    video, boxes = cows
    cfg = _cfg(boxes, exports=())
    calls = []

    def crash_after_three_chunks(progress):
        calls.append(progress.done)
        if len(calls) == 3:
            raise Cancelled("simulated crash")

    with pytest.raises(Cancelled):
        run_video(video, cfg, tmp_path, models=models, progress=crash_after_three_chunks)
    with ResultStore.open(tmp_path / "cows.mp4.clamp.sqlite", readonly=True) as partial:
        assert partial.last_frame() == 23 and not partial.complete
    summary = run_video(video, cfg, tmp_path, resume=True, models=models)
    assert summary.resumed_from == 24
    with ResultStore.open(summary.store, readonly=True) as resumed, \
            ResultStore.open(cows_run[0].store, readonly=True) as full:
        pd.testing.assert_frame_equal(resumed.tidy(), full.tidy())


def test_a_same_named_video_of_another_card_neither_resumes_nor_replaces_a_store(
        cows, models, shared_data, tmp_path):
    """Issue 11: ``run card2/cows.mp4 -o out --resume`` must not append to card1's results."""
    video, boxes = cows
    cfg = _cfg(boxes, exports=(), end=16)

    def crash(progress):
        raise Cancelled("simulated crash")

    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        run_video(video, cfg, out, models=models, progress=crash)
    other = tmp_path / "card2" / "cows.mp4"
    other.parent.mkdir()
    shutil.copy(shared_data / "badja-davis" / "derived" / "camel_480p_24fps.mp4", other)
    store = out / "cows.mp4.clamp.sqlite"
    for resume in (True, False):
        with pytest.raises(InputError, match="holds the results of") as err:
            run_video(other, cfg, out, resume=resume, models=models)
        assert str(video) in str(err.value) and str(other) in str(err.value)
        assert "-o DIR" in str(err.value) and "--overwrite" in str(err.value)
    with ResultStore.open(store, readonly=True) as kept:
        assert kept.video_ref.absolute == str(video) and kept.last_frame() == 7
    summary = run_video(video, cfg, out, resume=True, models=models)  # its own video resumes
    assert summary.resumed_from == 8


def test_detect_every_k_frames_keeps_one_track(cows, models, tmp_path):
    video, boxes = cows
    summary = run_video(video, _cfg(boxes, end=48, detect=DetectConfig(
        name="file", boxes=str(boxes), every=4), exports=()), tmp_path, models=models)
    with ResultStore.open(summary.store, readonly=True) as store:
        assert store.track_ids() == [1]
        assert store.track(1)["frames"].tolist() == list(range(48))
        detected = store._db.execute("SELECT SUM(detected) FROM frames").fetchone()[0]
        assert detected == 12


def test_zero_animals_gives_empty_but_valid_outputs(cows, models, tmp_path):
    video, _ = cows
    empty = tmp_path / "none.txt"
    empty.write_text("")
    summary = run_video(video, _cfg(empty, end=16, exports=("csv", "dlc", "sleap")), tmp_path,
                        models=models)
    assert summary.tracks == 0 and summary.frames == 16
    df = pd.read_hdf(_dlc_main(tmp_path))
    assert len(df) == 104 and df.isna().all().all()  # one row per video frame, all empty
    assert len(pd.read_csv(_one(tmp_path, "*.clamp.csv"))) == 0
    import h5py
    import sleap_io as sio

    assert len(sio.load_slp(str(_one(tmp_path, "*.clamp.slp")))) == 0
    with h5py.File(_one(tmp_path, "*.analysis.h5")) as f:
        assert f["tracks"].shape == (0, 2, 17, 104) and len(f["node_names"]) == 17


def test_bad_inputs_fail_with_clear_messages_and_leave_nothing(cows, models, tmp_path):
    _, boxes = cows
    cfg = _cfg(boxes)
    with pytest.raises(InputError, match="not found"):
        run_video(tmp_path / "missing.mp4", cfg, tmp_path / "o1", models=models)
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are field notes, not a video\n")
    with pytest.raises(InputError, match="notes.mp4"):
        run_video(fake, cfg, tmp_path / "o2", models=models)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create the output folder"):
        run_video(cows[0], cfg, blocker / "out", models=models)


def _motion_cfg(**kw) -> RunConfig:
    from clamp_track.pipelines.pose import PoseConfig

    return RunConfig(pose_model="clamp_tiny_rn50", pose_weights=None,
                     detect=DetectConfig(name="motion"),
                     pose=PoseConfig(flip_test=False), smoother=SMOOTHER, **kw)


def test_open_field_mouse_with_the_motion_detector(shared_data, models, tmp_path):
    video = shared_data / "deeplabcut-examples" / "openfield-Pranav-2018-10-30" / "videos" / \
        "m3v1mp4.mp4"
    summary = run_video(video, _motion_cfg(end=200, exports=("dlc",)), tmp_path, models=models)
    with ResultStore.open(summary.store, readonly=True) as store:
        frames, times = store.frame_times()
        assert frames.tolist() == list(range(200))
        np.testing.assert_allclose(np.diff(times), 1 / 30.0003, rtol=1e-3)  # 1000000/33333 fps
        lengths = {t: len(store.track(t)["frames"]) for t in store.track_ids()}
    # one mouse: after the background model's warm-up one track follows it almost throughout
    assert max(lengths.values()) >= 0.85 * 200
    df = pd.read_hdf(_dlc_main(tmp_path))
    levels = ["scorer", "individuals", "bodyparts", "coords"] if len(lengths) > 1 else \
        ["scorer", "bodyparts", "coords"]
    assert len(df) == 2330 and df.columns.names == levels


def test_truncated_video_gives_the_frames_it_has(models, tmp_path, caplog):
    import logging

    import av

    full = tmp_path / "full.mp4"
    with av.open(str(full), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(75):  # a bright square crossing a dark field
            image = np.full((120, 160, 3), 30, np.uint8)
            image[40:70, 10 + 2 * i:40 + 2 * i] = 230
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    with caplog.at_level(logging.WARNING):
        summary = run_video(cut, _motion_cfg(exports=("csv",)), tmp_path / "out", models=models)
    assert 0 < summary.frames < 75
    assert "75" in caplog.text  # the warning says how many frames the container promised
    with ResultStore.open(summary.store, readonly=True) as store:
        assert store.complete and store.last_frame() == summary.frames - 1


def test_dog_clip_avi(shared_data, models, tmp_path):
    video = shared_data / "deeplabcut-live" / "check_install" / "dog_clip.avi"
    summary = run_video(video, _motion_cfg(end=40, exports=("csv",)), tmp_path, models=models)
    assert summary.frames == 40
    tidy = pd.read_csv(_one(tmp_path, "*.clamp.csv"))
    assert set(tidy.frame) <= set(range(40)) and tidy.track.min() >= 1


def test_rerun_with_new_weights_carries_the_corrections_over(cows, cows_run, tmp_path):
    import shutil as sh

    from clamp_track.models import create_model, save_checkpoint
    from clamp_track.pipelines.run import rerun

    summary, _ = cows_run
    first = tmp_path / "first" / summary.store.name
    first.parent.mkdir()
    sh.copy(summary.store, first)
    with ResultStore.open(first) as store:
        store.set_correction(5, 1, 2, 300.0, 200.0)
        store.set_correction(40, 1, 7, 350.0, 250.0)
        # an animal the detector missed, added and labelled by hand (far from the cow)
        store.add_instance(6, 2, (780, 400, 850, 470), np.full((17, 2), 800.0))
        store.set_correction(6, 2, 0, 810.0, 420.0)
    weights = save_checkpoint(create_model("clamp_tiny_rn50"), tmp_path / "tuned.pt")
    new = rerun(first, weights, tmp_path / "second", video=cows[0])
    assert new.store.parent == tmp_path / "second" and new.frames == 104
    with ResultStore.open(new.store, readonly=True) as store:
        assert store.corrections() == [(5, 1, 2, 300.0, 200.0, 1), (6, 2, 0, 810.0, 420.0, 1),
                                       (40, 1, 7, 350.0, 250.0, 1)]
        assert store.track(2)["frames"].tolist() == [6]  # added again, not put on the cow
        assert store.meta("config")["pose_weights"] == str(weights)
    with pytest.raises(InputError, match="choose another folder"):
        rerun(first, weights, first.parent)


def test_command_line_weights_default_to_the_official_ones_and_none_means_untrained():
    from clamp_track.cli import build_parser
    from clamp_track.commands.run import build_config

    def cfg(*flags):
        return build_config(build_parser().parse_args(["run", "video.mp4", *flags]))

    assert cfg().pose_weights == "auto"
    assert cfg("--pose-weights", "none").pose_weights is None
    assert cfg("--pose-weights", "my.pt").pose_weights == "my.pt"


@pytest.mark.slow
def test_resume_after_sigkill_gives_identical_results(cows, tmp_path):
    """A run killed with SIGKILL mid-video and resumed equals an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from clamp_track.models import create_model, save_checkpoint

    video, boxes = cows
    weights = save_checkpoint(create_model("clamp_tiny_rn50"), tmp_path / "w.pt")
    base = [sys.executable, "-m", "clamp_track", "run", str(video), "--pose-weights",
            str(weights), "--boxes", str(boxes), "--export", "csv",
            "--set", "smoother.min_confidence=1e-12", "tracker.min_track_length=5"]
    subprocess.run([*base, "-o", str(tmp_path / "full")], check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*base, "-o", str(killed)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    store = killed / "cows.mp4.clamp.sqlite"
    deadline = time.time() + 300
    while time.time() < deadline:
        if store.exists():
            try:
                with ResultStore.open(store, readonly=True) as s:
                    if (s.last_frame() or 0) >= 24:
                        break
            except Exception:  # noqa: BLE001 - being created
                pass
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with ResultStore.open(store, readonly=True) as s:
        assert not s.complete and s.last_frame() < 103
    subprocess.run([*base, "-o", str(killed), "--resume"], check=True, capture_output=True)
    with ResultStore.open(store, readonly=True) as resumed, \
            ResultStore.open(tmp_path / "full" / store.name, readonly=True) as full:
        pd.testing.assert_frame_equal(resumed.tidy(), full.tidy())


def test_pipelined_poses_equal_the_estimator_frame_by_frame(cows, cows_run, models):
    """The pose worker (batches across chunks, overlapped with tracking) changes no result."""
    from clamp_track.io.video import VideoReader
    from clamp_track.types import Detections

    summary, _ = cows_run
    with ResultStore.open(summary.store, readonly=True) as store:
        track = store.track(store.track_ids()[0])
    picks = [0, 7, 8, 45, 103]  # chunk edges and the last, partly filled batch
    with VideoReader(cows[0]) as reader:
        images = [reader.read(int(track["frames"][i])).image for i in picks]
    dets = [Detections(track["boxes"][i][None], track["box_scores"][i][None], track_ids=[1])
            for i in picks]
    alone = models.pose.predict(images, dets, picks)
    for i, pose in zip(picks, alone):
        np.testing.assert_allclose(track["raw"][i, :, :2], pose.keypoints[0], atol=1e-4)
        np.testing.assert_allclose(track["raw"][i, :, 2], pose.scores[0], rtol=1e-6)


def test_unconfirmed_runs_join_the_track_that_starts_after_them(tmp_path):
    """ByteTrack confirms a track at its second detection; the detections before (temporary
    negative ids) join the track that starts right after them, by best box overlap; runs that
    overlap nothing, or too little, are dropped. A track grows back over several runs."""
    from clamp_track.io.store import ResultStore, store_path
    from clamp_track.pipelines.run import adopt_unconfirmed
    from clamp_track.skeleton import from_names
    from clamp_track.types import PosePredictions, VideoInfo

    kps = from_names(["snout", "tailbase"])
    boxes = {  # frame -> {track: box}
        0: {-1: (0, 0, 10, 10), -4: (500, 500, 510, 510)},
        1: {-2: (1, 0, 11, 10), -4: (501, 500, 511, 510)},  # -1 ended at 0, -2 begins
        2: {1: (2, 0, 12, 10), 2: (3, 0, 13, 10), -3: (200, 200, 220, 220)},
        3: {1: (3, 0, 13, 10), 2: (4, 0, 14, 10)},
        4: {1: (4, 0, 14, 10), 2: (5, 0, 15, 10), 3: (600, 600, 610, 610)},
    }
    video = VideoInfo(str(tmp_path / "v.mp4"), 640, 480, 25.0, 5, "h264")
    store = ResultStore.create(store_path(tmp_path / "v.mp4"), {
        "keypoints": kps.to_dict(), "video": video.__dict__, "config": {}})
    poses = []
    for frame, tracks in boxes.items():
        ids = np.array(list(tracks), np.int64)
        n = len(ids)
        poses.append(PosePredictions(frame, ids, np.array(list(tracks.values()), np.float32),
                                     np.zeros((n, 2, 2), np.float32), np.ones((n, 2)),
                                     np.ones(n)))
    store.write_chunk([(f, f / 25, True) for f in boxes], poses)
    adopt_unconfirmed(store)
    table = store.boxes()
    owner = {(int(r.frame), int(r.x1)): int(r.track) for r in table.itertuples()}
    # -2 (frames 1) overlaps track 1 at frame 2 by IoU 0.82 and track 2 by 0.67: track 1 takes
    # it, and then -1 (frame 0), which now touches track 1's new first frame, too
    assert owner[(1, 1)] == 1 and owner[(0, 0)] == 1
    assert (table.track < 0).sum() == 0  # -3 and -4 overlap nothing after them: dropped
    assert sorted(table[table.frame == 2].track) == [1, 2] and len(table[table.frame == 0]) == 1
    assert sorted(table.track.unique()) == [1, 2, 3]
    store.close()


def test_a_run_resumes_with_other_exports_or_backend_but_not_other_results(cows):
    from dataclasses import replace

    from clamp_track.config import to_dict
    from clamp_track.pipelines.run import same_settings

    cfg = _cfg(cows[1])
    stored = to_dict(cfg)
    assert same_settings(stored, replace(cfg, exports=("csv",)))
    assert same_settings(stored, replace(cfg, pose=replace(cfg.pose, backend="onnxruntime")))
    assert not same_settings(stored, replace(cfg, pose=replace(cfg.pose, flip_test=False)))
    assert not same_settings(stored, replace(cfg, chunk=16))
    assert not same_settings(None, cfg)
