import pickle
import pickletools
import re

import numpy as np
import pandas as pd
import pytest

from clamp_track.errors import InputError
from clamp_track.io.export import (
    KEYPOINT_COLUMNS,
    ExportInfo,
    VideoStyle,
    dlc_date,
    dlc_scorer,
    dlc_table,
    hdf_format,
    individual_names,
    write_annotated_video,
    write_dlc,
    write_tidy_csv,
    write_track_plots,
)
from clamp_track.skeleton import AP10K
from clamp_track.types import VideoInfo

N_FRAMES = 40
K = AP10K.num_keypoints
# DeepLabCut 3 scorer form (PyTorch engine), as dlc_client_check.py parses it
SCORER_RE = re.compile(r"^DLC_[A-Z][A-Za-z0-9]*_.+(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
                       r"\d{1,2}shuffle\d+_snapshot_(best-)?\d+$")


def make_results(tracks=((1, range(0, 30)), (2, range(10, 40))), seed=0):
    """A tidy keypoint table like the result store's: smoothed = raw + 0.5, some gaps."""
    rng = np.random.default_rng(seed)
    rows = []
    for track, frames in tracks:
        for f in frames:
            for k, name in enumerate(AP10K.names):
                x, y = 10 + f + 2 * k + 30 * track, 5 + k + 0.5 * f
                conf = rng.uniform(0.05, 1.0)
                rows.append((f, f / 24, track, name, x, y, conf, x + 0.5, y + 0.5, 0.25))
    table = pd.DataFrame(rows, columns=list(KEYPOINT_COLUMNS))
    # track 1, frame 5, nose: the smoother filled it in without a measurement
    gap = (table.track == 1) & (table.frame == 5) & (table.keypoint == "nose")
    table.loc[gap, ["x", "y", "confidence"]] = np.nan
    # track 1, frame 25, neck: measured, but the smoother left it out
    dropped = (table.track == 1) & (table.frame == 25) & (table.keypoint == "neck")
    table.loc[dropped, ["x_smooth", "y_smooth"]] = np.nan
    return table


@pytest.fixture
def info():
    video = VideoInfo("/videos/cows.mp4", width=64, height=48, fps=24.0, n_frames=N_FRAMES)
    return ExportInfo(AP10K, video, model_name="clamp_rn50", date="Nov25", snapshot=210)


def test_dlc_scorer_has_deeplabcuts_form():
    assert dlc_scorer("clamp_rn50", date="Nov25") == \
        "DLC_ClampRn50_clamptrackNov25shuffle1_snapshot_0"
    assert dlc_scorer("clamp-vitb16", date="Jan3", snapshot="best-210") == \
        "DLC_ClampVitb16_clamptrackJan3shuffle1_snapshot_best-210"
    assert SCORER_RE.match(dlc_scorer("clamp_tiny"))  # today's date
    assert SCORER_RE.match(dlc_scorer("3d model", date="Feb29"))


def test_scorer_can_name_a_deeplabcut_net_type(info):
    from dataclasses import replace

    assert info.scorer == "DLC_ClampRn50_clamptrackNov25shuffle1_snapshot_210"
    resnet = replace(info, dlc_net_type="resnet_50")
    assert resnet.scorer == "DLC_Resnet50_clamptrackNov25shuffle1_snapshot_210"
    assert resnet.model_name == "clamp_rn50"


def test_h5_is_readable_by_pandas_2(tmp_path, info):
    # pandas 2 (DeepLabCut's) needs the pandas_version attribute pandas 3 stopped writing;
    # without it pandas 2 misreads the table as a pre-0.10.1 file and fails
    import tables

    out = write_dlc(make_results(), tmp_path, info, csv=False)
    for h5 in (out.h5, out.filtered_h5):
        with tables.open_file(h5) as f:
            assert f.root.df_with_missing._v_attrs.pandas_version == "0.15.2"
            assert f.root.df_with_missing.table._v_attrs.values_block_0_dtype == "float64"


def test_scorer_date_is_written_as_deeplabcut_writes_it():
    import datetime

    assert dlc_date(datetime.date(2026, 12, 3)) == "Dec3"
    assert dlc_date(datetime.date(2026, 11, 25)) == "Nov25"
    # a store made before the fix recorded a zero-padded day
    assert dlc_scorer("clamp_rn50", date="Dec03") == \
        "DLC_ClampRn50_clamptrackDec3shuffle1_snapshot_0"
    assert dlc_scorer("clamp_rn50", date="Dec10") == \
        "DLC_ClampRn50_clamptrackDec10shuffle1_snapshot_0"


def test_individuals_are_named_compactly_in_track_order():
    assert individual_names([7, 2, 2, 40]) == {2: "animal1", 7: "animal2", 40: "animal3"}
    assert individual_names([]) == {}


def test_names_users_gave_win_and_the_others_stay_compact():
    assert individual_names([7, 2, 40], {7: "female"}) == {
        2: "animal1", 7: "female", 40: "animal2"}
    # a number a user's name takes is skipped rather than given twice
    assert individual_names([1, 2, 3], {3: "animal1"}) == {
        1: "animal2", 2: "animal3", 3: "animal1"}


def test_tidy_csv_round_trip(tmp_path, info):
    results = make_results()
    shuffled = results.sample(frac=1.0, random_state=0)
    path = write_tidy_csv(shuffled, tmp_path / "out" / "cows.csv", AP10K)
    back = pd.read_csv(path)
    assert list(back.columns) == list(KEYPOINT_COLUMNS)
    # sorted by frame, track, then the keypoint set's order
    expected = results.sort_values(["frame", "track"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["cows.csv"]


@pytest.mark.filterwarnings("ignore::pandas.errors.PerformanceWarning")  # .loc on DLC columns
def test_dlc_multi_animal_files_read_back_exactly(tmp_path, info):
    results = make_results()
    out = write_dlc(results, tmp_path, info)
    scorer = "DLC_ClampRn50_clamptrackNov25shuffle1_snapshot_210"
    assert out.scorer == scorer and out.layout == "multi"
    assert out.h5.name == f"cows{scorer}_el.h5"
    assert out.csv.name == f"cows{scorer}_el.csv"
    assert out.filtered_h5.name == f"cows{scorer}_el_filtered.h5"
    assert out.filtered_csv.name == f"cows{scorer}_el_filtered.csv"
    assert out.meta.name == f"cows{scorer}_meta.pickle"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in out.paths)
    assert len(out.paths) == 5
    assert out.individuals == {1: "animal1", 2: "animal2"}

    for h5 in (out.h5, out.filtered_h5):
        with pd.HDFStore(h5, mode="r") as store:  # one key: DeepLabCut reads without one,
            assert store.keys() == ["/df_with_missing"]  # movement and anipose with this
    df = pd.read_hdf(out.h5)  # no key, as DeepLabCut reads it
    assert df.columns.names == ["scorer", "individuals", "bodyparts", "coords"]
    assert df.shape == (N_FRAMES, 2 * K * 3)
    assert list(df.index) == list(range(N_FRAMES))
    assert list(df.columns.get_level_values("scorer").unique()) == [scorer]
    assert list(df.columns.get_level_values("individuals").unique()) == ["animal1", "animal2"]
    assert list(df.columns.get_level_values("bodyparts").unique()) == list(AP10K.source_names)
    assert list(df.columns.get_level_values("coords")) == ["x", "y", "likelihood"] * (2 * K)
    assert all(dtype == np.float64 for dtype in df.dtypes)

    # main file: raw coordinates and confidence, also where the confidence is low
    row = results[(results.track == 2) & (results.frame == 12) & (results.keypoint == "neck")]
    assert df.loc[12, (scorer, "animal2", "neck")].tolist() == pytest.approx(
        row[["x", "y", "confidence"]].to_numpy()[0].tolist())
    low = results[(results.confidence < 0.3) & results.x.notna()]
    assert len(low) > 100
    for r in low.head(20).itertuples():
        part = AP10K.source_names[AP10K.index(r.keypoint)]
        cell = df.loc[r.frame, (scorer, f"animal{r.track}", part)]
        assert cell.tolist() == pytest.approx([r.x, r.y, r.confidence])
    assert df.loc[0:9, (scorer, "animal2")].isna().all().all()
    assert df.loc[30:39, (scorer, "animal1")].isna().all().all()
    assert df.loc[25, (scorer, "animal1", "neck")].notna().all()  # raw has it
    assert df.loc[5, (scorer, "animal1", "nose")].isna().all()  # no measurement there

    # _filtered: the smoothed coordinates with the raw confidence
    filtered = pd.read_hdf(out.filtered_h5)
    assert filtered.columns.equals(df.columns) and filtered.shape == df.shape
    assert filtered.loc[12, (scorer, "animal2", "neck")].tolist() == pytest.approx(
        row[["x_smooth", "y_smooth", "confidence"]].to_numpy()[0].tolist())
    filled = filtered.loc[5, (scorer, "animal1", "nose")]  # the smoother filled it in
    assert filled["likelihood"] == 0.0 and not np.isnan(filled["x"])
    assert filtered.loc[25, (scorer, "animal1", "neck")].isna().all()  # smoother left it out

    # CSV: DeepLabCut's four header rows, then one row per frame; same table
    for csv, table in ((out.csv, df), (out.filtered_csv, filtered)):
        lines = csv.read_text().splitlines()
        assert lines[0].startswith(f"scorer,{scorer},{scorer},")
        assert lines[1].startswith("individuals,animal1,animal1,animal1,animal1,")
        assert lines[2].startswith("bodyparts,left_eye,left_eye,left_eye,right_eye,")
        assert lines[3].startswith("coords,x,y,likelihood,x,y,likelihood,")
        assert lines[4].startswith("0,") and len(lines) == 4 + N_FRAMES
        back = pd.read_csv(csv, header=[0, 1, 2, 3], index_col=0)
        assert back.columns.equals(table.columns)
        assert list(back.index) == list(range(N_FRAMES))
        np.testing.assert_allclose(back.to_numpy(), table.to_numpy(), rtol=1e-12)

    meta = pickle.loads(out.meta.read_bytes())["data"]
    assert meta["cropping"] is False
    assert meta["cropping_parameters"] == [0, 64, 0, 48]
    assert meta["nframes"] == N_FRAMES and meta["Scorer"] == scorer
    assert meta["individuals"] == ["animal1", "animal2"]
    assert meta["bodyparts"] == list(AP10K.source_names)
    assert meta["clamp-track"]["coordinates"] == "raw"
    assert meta["clamp-track"]["filtered"].startswith("smoothed")
    assert meta["clamp-track"]["individuals"] == {1: "animal1", 2: "animal2"}
    # plain Python only: DeepLabCut's environment unpickles it without clamp-track or numpy
    globals_used = [arg for op, arg, _ in pickletools.genops(out.meta.read_bytes())
                    if op.name in ("GLOBAL", "STACK_GLOBAL")]
    assert globals_used == []


@pytest.mark.filterwarnings("ignore::pandas.errors.PerformanceWarning")
def test_dlc_individuals_are_compact_and_unsmoothed_tables_have_no_filtered_file(
        tmp_path, info):
    results = make_results(tracks=((3, range(0, 20)), (9, range(5, 25))))
    out = write_dlc(results.drop(columns=["x_smooth", "y_smooth", "variance"]), tmp_path, info)
    assert out.individuals == {3: "animal1", 9: "animal2"}
    assert out.filtered_h5 is None and out.filtered_csv is None and len(out.paths) == 3
    df = pd.read_hdf(out.h5)
    row = results[(results.track == 9) & (results.frame == 7) & (results.keypoint == "nose")]
    assert df.loc[7, (out.scorer, "animal2", "nose", "x")] == row.x.item()
    # smoothing that gave nothing (no confident point): an all-NaN _filtered file, as the
    # smoother found
    nothing = write_dlc(results.assign(x_smooth=np.nan, y_smooth=np.nan), tmp_path / "n", info)
    assert pd.read_hdf(nothing.filtered_h5).isna().all().all()
    with pytest.raises(ValueError, match="x_smooth"):
        dlc_table(results.drop(columns=["x_smooth"]), info, smoothed=True)


def test_dlc_single_animal(tmp_path, info):
    results = make_results()
    one = results[results.track == 2]
    out = write_dlc(one, tmp_path, info)  # one animal: single-animal layout by default
    assert out.layout == "single" and out.individuals == {}
    assert out.h5.name == f"cows{out.scorer}.h5" and out.csv.name == f"cows{out.scorer}.csv"
    assert out.filtered_h5.name == f"cows{out.scorer}_filtered.h5"
    for h5 in (out.h5, out.filtered_h5):
        with pd.HDFStore(h5, mode="r") as store:
            assert store.keys() == ["/df_with_missing"]
    df = pd.read_hdf(out.h5)
    assert df.columns.names == ["scorer", "bodyparts", "coords"]
    assert df.shape == (N_FRAMES, K * 3)
    # DeepLabCut's analyzeskeleton fails on any NaN: only the frames without the animal
    # (0..9 here) are NaN, every raw prediction is there whatever its confidence
    assert df.loc[0:9].isna().all().all() and df.loc[10:39].notna().all().all()
    back = pd.read_csv(out.csv, header=[0, 1, 2], index_col=0)
    assert back.columns.equals(df.columns)
    # several animals: single-animal files of one chosen track, or a clear error
    chosen = write_dlc(results, tmp_path / "two", info, layout="single", track=2)
    pd.testing.assert_frame_equal(pd.read_hdf(chosen.h5), df)
    with pytest.raises(InputError, match="needs one track"):
        write_dlc(results, tmp_path / "other", info, layout="single")
    with pytest.raises(InputError, match="track 7"):
        write_dlc(results, tmp_path / "other", info, layout="single", track=7)
    with pytest.raises(InputError, match="layout 'double'"):
        write_dlc(results, tmp_path / "other", info, layout="double")
    multi = write_dlc(one, tmp_path / "multi", info, layout="multi")
    assert multi.h5.name.endswith("_el.h5") and multi.individuals == {2: "animal1"}


def test_eighty_animals_export_in_a_layout_pandas_reads(tmp_path, info):
    # PyTables' "table" format keeps the column index in one HDF5 attribute, which no longer
    # fits with ~55 animals; such files are written in pandas' "fixed" format instead
    results = make_results(tracks=[(t, range(0, 3)) for t in range(1, 81)])
    out = write_dlc(results, tmp_path, info)
    assert out.layout == "multi" and len(out.individuals) == 80
    for h5 in (out.h5, out.filtered_h5):
        df = pd.read_hdf(h5)  # no key, as DeepLabCut reads it
        assert df.shape == (N_FRAMES, 80 * K * 3)
        assert df.columns.get_level_values("individuals")[-1] == "animal80"
        with pd.HDFStore(h5, mode="r") as store:
            assert store.keys() == ["/df_with_missing"]
            assert store.get_storer("df_with_missing").format_type == "fixed"
    row = results[(results.track == 80) & (results.frame == 2) & (results.keypoint == "neck")]
    assert pd.read_hdf(out.h5).loc[2, (out.scorer, "animal80", "neck", "x")] == row.x.item()
    # few animals stay in DeepLabCut's own "table" format
    few = dlc_table(make_results(), info)[0]
    assert hdf_format(few) == "table"


def test_zero_animals_give_empty_but_valid_outputs(tmp_path, info):
    empty = pd.DataFrame({c: [] for c in KEYPOINT_COLUMNS})
    out = write_dlc(empty, tmp_path, info, layout="multi")
    df = pd.read_hdf(out.h5)
    assert df.shape == (N_FRAMES, K * 3) and df.isna().all().all()
    assert list(df.columns.get_level_values("individuals").unique()) == ["animal1"]
    assert out.individuals == {} and pd.read_hdf(out.filtered_h5).isna().all().all()
    single = write_dlc(empty, tmp_path / "single", info)
    assert single.layout == "single" and pd.read_hdf(single.h5).isna().all().all()
    csv = write_tidy_csv(empty, tmp_path / "tidy.csv")
    assert csv.read_text().strip() == ",".join(KEYPOINT_COLUMNS)
    assert write_track_plots(empty, tmp_path / "plots", info) == []


def test_keypoints_by_index_and_bad_tables(info):
    results = make_results()
    by_index = results.assign(keypoint=results.keypoint.map(AP10K.index))
    a, _, _ = dlc_table(results, info)
    b, _, _ = dlc_table(by_index, info)
    pd.testing.assert_frame_equal(a, b)
    source = results.assign(keypoint=results.keypoint.map(lambda n: AP10K.source_names[
        AP10K.index(n)]))
    pd.testing.assert_frame_equal(a, dlc_table(source, info)[0])
    with pytest.raises(InputError, match="wing"):
        dlc_table(results.assign(keypoint="left wing"), info)
    with pytest.raises(ValueError, match="repeated"):
        dlc_table(pd.concat([results, results.iloc[:1]]), info)
    with pytest.raises(ValueError, match="outside"):
        dlc_table(results.assign(frame=results.frame + 5), info)
    with pytest.raises(ValueError, match="lacks columns"):
        dlc_table(results.drop(columns="confidence"), info)


def test_unwritable_output_directory_is_one_line_error(tmp_path, info):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    results = make_results()
    writers = [
        lambda d: write_tidy_csv(results, d / "x.csv"),
        lambda d: write_dlc(results, d, info),
        lambda d: write_track_plots(results, d, info),
        lambda d: write_annotated_video([(0, np.zeros((48, 64, 3), np.uint8))], d / "v.mp4",
                                        info, results),
    ]
    for write in writers:
        with pytest.raises(InputError) as err:
            write(blocker / "out")
        assert "\n" not in str(err.value) and "a_file" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_failed_export_leaves_no_partial_files(tmp_path, info, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)  # fails after the .h5 is written
    with pytest.raises(OSError, match="disk full"):
        write_dlc(make_results(), tmp_path, info)
    assert list(tmp_path.iterdir()) == []


def test_exports_follow_the_umask_and_clear_a_killed_exports_leftovers(tmp_path, info):
    import os

    stale = tmp_path / f".cows.clamp.csv.{2**22 + 12345}.ab12cd.tmp.csv"  # no such process
    stale.write_text("partial")
    old = os.umask(0o002)  # a group-shared lab folder
    try:
        out = write_dlc(make_results(), tmp_path, info)
        csv = write_tidy_csv(make_results(), tmp_path / "cows.clamp.csv")
    finally:
        os.umask(old)
    for path in [*out.paths, csv]:
        assert path.stat().st_mode & 0o777 == 0o664, path.name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in [*out.paths, csv])


def test_existing_export_is_replaced_whole(tmp_path, info):
    first = write_dlc(make_results(seed=0), tmp_path, info)
    second = write_dlc(make_results(seed=1), tmp_path, info)
    assert first.h5 == second.h5 and len(list(tmp_path.iterdir())) == 5
    expected, _, _ = dlc_table(make_results(seed=1), info)
    pd.testing.assert_frame_equal(pd.read_hdf(second.h5), expected, check_freq=False,
                                  check_index_type=False)


def read_video(path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return stream.codec_context.name, float(stream.average_rate), frames


def test_annotated_video(tmp_path, info):
    results = make_results()
    boxes = (results.groupby(["frame", "track"])
             .agg(x1=("x", "min"), y1=("y", "min"), x2=("x", "max"), y2=("y", "max"))
             .reset_index())
    boxes = boxes[boxes.frame < 20]  # boxes for half the frames only
    frames = [(i, np.zeros((49, 65, 3), np.uint8)) for i in range(N_FRAMES + 5)]  # odd size
    style = VideoStyle(radius=2, thickness=1)
    path = write_annotated_video(iter(frames), tmp_path / "cows_annotated.mp4", info,
                                 results.drop(columns="variance"), boxes, style)
    codec, fps, decoded = read_video(path)
    assert codec == "h264" and fps == pytest.approx(24.0)
    assert len(decoded) == N_FRAMES + 5 and decoded[0].shape == (50, 66, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["cows_annotated.mp4"]
    # drawn where there are results, untouched (black) where there are none
    assert decoded[15].mean() > decoded[N_FRAMES + 2].mean() + 1
    assert decoded[N_FRAMES + 2].max() < 20
    # a keypoint of track 1 at frame 2 (left eye), drawn in its confidence class colour
    x, y, conf = results.loc[(results.track == 1) & (results.frame == 2) &
                             (results.keypoint == "left eye"), ["x_smooth", "y_smooth",
                                                                "confidence"]].to_numpy()[0]
    pixel = decoded[2][int(y), int(x)].astype(int)
    assert pixel.max() > 100, pixel


def test_keypoints_are_coloured_by_confidence(tmp_path, info):
    points = pd.DataFrame({
        "frame": [0, 0, 0], "time_s": 0.0, "track": 1,
        "keypoint": ["nose", "neck", "tail root"],
        "x": [16.0, 44.0, np.nan], "y": [16.0, 16.0, np.nan],
        "confidence": [0.9, 0.1, np.nan],  # tail root: filled in by the smoother
        "x_smooth": [16.0, 44.0, 16.0], "y_smooth": [16.0, 16.0, 36.0], "variance": 1.0,
    })
    frames = [(0, np.zeros((48, 64, 3), np.uint8))]
    style = VideoStyle(radius=5, thickness=1)
    _, _, decoded = read_video(write_annotated_video(frames, tmp_path / "v.mp4", info, points,
                                                     style=style))
    image = decoded[0].astype(int)
    green, red, grey = (60, 180, 75), (230, 25, 75), (160, 160, 160)  # the drawing colours
    for (x, y), colour in (((16, 16), green), ((44, 16), red), ((16, 36), grey)):
        assert np.abs(image[y, x] - colour).max() < 40, (x, y, image[y, x])
    with pytest.raises(ValueError, match="confidence_bins"):
        VideoStyle(confidence_bins=(0.5, 1.0))


def test_annotated_video_needs_frames(tmp_path, info):
    with pytest.raises(InputError, match="no frames"):
        write_annotated_video([], tmp_path / "v.mp4", info)
    assert list(tmp_path.iterdir()) == []


def test_annotated_video_on_real_footage(tmp_path, shared_data):
    import av

    video_path = shared_data / "badja-davis" / "derived" / "cows_480p_24fps.mp4"
    with av.open(str(video_path)) as container:
        frames = [(i, f.to_ndarray(format="rgb24"))
                  for i, f in zip(range(12), container.decode(video=0))]
    h, w = frames[0][1].shape[:2]
    video = VideoInfo(str(video_path), width=w, height=h, fps=24.0, n_frames=104)
    info = ExportInfo(AP10K, video, model_name="clamp_rn50", date="Nov25")
    results = make_results(tracks=((1, range(0, 12)),))
    path = write_annotated_video(frames, tmp_path / "cows.mp4", info, results)
    _, _, decoded = read_video(path)
    assert len(decoded) == 12 and decoded[0].shape == (h, w, 3)
    # away from the drawing the picture is the input (lossy codec: close, not equal)
    assert np.abs(decoded[6][300:, 400:].astype(int) - frames[6][1][300:, 400:]).mean() < 6


def test_track_plots(tmp_path, info):
    results = make_results()
    paths = write_track_plots(results, tmp_path, info)
    assert [p.name for p in paths] == ["cows_track1.png", "cows_track2.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    raw_only = results.drop(columns=["x_smooth", "y_smooth", "variance"])
    assert len(write_track_plots(raw_only, tmp_path / "raw", info)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["cows_track1.png", "cows_track2.png", "raw"])


# ------------------------------------------------------------------------ client readers
# Every export format loads in the tools users open it with, with their default arguments:
# movement (load_poses.from_dlc_file / from_sleap_file / from_nwb_file), sleap-io and pynwb +
# ndx-pose, all in the dev extra (these run in CI). DeepLabCut's own consumers are checked by
# hand with ../shared/tools/dlc_client_check.py (DeepLabCut does not install beside this
# project's torch); see the README.


def _movement():
    """movement's pose loaders (skips the test where movement is not installed)."""
    pytest.importorskip("movement", reason="movement is not installed here; it comes with "
                        "the dev extra (pip install -e '.[dev]') and runs in CI")
    from movement.io import load_poses

    return load_poses


@pytest.fixture
def client_info(tmp_path):
    video = VideoInfo(str(tmp_path / "cows.mp4"), width=640, height=480, fps=24.0,
                      n_frames=N_FRAMES)
    return ExportInfo(AP10K, video, model_name="clamp_rn50", date="Dec3",
                      dlc_net_type="resnet_50")


def corrected_results(tracks=((1, range(0, 30)), (2, range(10, 40)))):
    """Results of two animals; track 2 corrected at frame 20 (nose moved, neck occluded)."""
    results = make_results(tracks).assign(corrected=False)
    at = (results.track == 2) & (results.frame == 20)
    results.loc[at & (results.keypoint == "nose"), ["x", "y", "confidence", "corrected"]] = (
        111.0, 222.0, 1.0, True)
    results.loc[at & (results.keypoint == "neck"), ["x", "y", "confidence", "corrected"]] = (
        np.nan, np.nan, np.nan, True)
    return results


def raw_array(results, track):
    """(T, K, 2) raw x, y and (T, K) confidence of a track over the video (NaN where absent)."""
    xy, conf = np.full((N_FRAMES, AP10K.num_keypoints, 2), np.nan), np.full(
        (N_FRAMES, AP10K.num_keypoints), np.nan)
    rows = results[results.track == track]
    k = rows.keypoint.map(AP10K.index).to_numpy()
    xy[rows.frame, k] = rows[["x", "y"]].to_numpy()
    conf[rows.frame, k] = np.where(rows[["x", "y"]].isna().any(axis=1), np.nan,
                                   rows.confidence.fillna(0.0))
    return xy, conf


def movement_xy(ds, individual):
    """(T, K, 2) positions of one individual of a movement dataset, keypoints in AP10K order."""
    pos = ds.position.sel(individuals=individual, keypoints=list(AP10K.source_names))
    return pos.transpose("time", "keypoints", "space").to_numpy()


@pytest.mark.parametrize("layout", ["single", "multi"])
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_movement_loads_the_deeplabcut_files_with_default_arguments(tmp_path, client_info, layout):
    results = corrected_results()
    if layout == "single":
        results = results[results.track == 2]
    out = write_dlc(results, tmp_path, client_info)
    assert out.layout == layout
    xy, conf = raw_array(results, 2)
    for path in (out.h5, out.csv, out.filtered_h5, out.filtered_csv):
        ds = _movement().from_dlc_file(path)  # key df_with_missing, as movement reads it
        assert ds.sizes["time"] == N_FRAMES and ds.sizes["keypoints"] == AP10K.num_keypoints
        individual = "individual_0" if layout == "single" else "animal2"
        assert individual in ds.individuals.values
        if path in (out.h5, out.csv):  # the main files: raw predictions with the correction
            np.testing.assert_allclose(movement_xy(ds, individual), xy, rtol=1e-9)
            got = ds.confidence.sel(individuals=individual,
                                    keypoints=list(AP10K.source_names)).to_numpy()
            np.testing.assert_allclose(got, conf, rtol=1e-9)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_movement_loads_a_deeplabcut_file_of_eighty_animals(tmp_path, client_info):
    results = make_results(tracks=[(t, range(0, 2)) for t in range(1, 81)])
    ds = _movement().from_dlc_file(write_dlc(results, tmp_path, client_info, csv=False).h5)
    assert ds.sizes["individuals"] == 80 and str(ds.individuals.values[-1]) == "animal80"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_sleap_analysis_file_keeps_every_keypoint_of_a_corrected_frame(tmp_path, client_info):
    import sleap_io as sio

    from clamp_track.io.sleap_export import write_sleap

    results = corrected_results()
    slp, analysis = write_sleap(results, tmp_path, client_info)
    ds = _movement().from_sleap_file(analysis)
    assert list(ds.individuals.values) == ["animal1", "animal2"]
    assert ds.sizes["time"] == N_FRAMES  # every video frame, as the DeepLabCut table
    xy, conf = raw_array(results, 2)
    got = movement_xy(ds, "animal2")
    np.testing.assert_allclose(got, xy, rtol=1e-6)
    assert got[20, AP10K.index("nose")].tolist() == [111.0, 222.0]
    assert np.isfinite(got[20]).all(axis=1).sum() == AP10K.num_keypoints - 1  # only the
    assert np.isnan(got[20, AP10K.index("neck")]).all()                      # occluded one
    scores = ds.confidence.sel(individuals="animal2", keypoints=list(AP10K.source_names))
    np.testing.assert_allclose(scores.to_numpy()[20], conf[20], rtol=1e-6)
    # the .slp: movement and sleap-io load it; the user instance (for training) holds the
    # corrected points only (--untouched ignore), beside the full prediction
    assert _movement().from_sleap_file(slp).sizes["individuals"] == 2
    labels = sio.load_slp(str(slp))
    frame = labels.find(labels.video, 20)[0]
    user = [i for i in frame.instances if not isinstance(i, sio.PredictedInstance)]
    assert len(user) == 1 and user[0].track.name == "animal2"
    assert np.isfinite(user[0].numpy()).all(axis=1).sum() == 1


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_sleap_user_instances_follow_untouched(tmp_path, client_info):
    import sleap_io as sio

    from clamp_track.io.sleap_export import write_sleap

    results = corrected_results()
    points = {(20, 2): np.full((AP10K.num_keypoints, 2), 5.0)}  # e.g. --untouched all
    slp, _ = write_sleap(results, tmp_path, client_info, user_points=points)
    labels = sio.load_slp(str(slp))
    user = [i for i in labels.find(labels.video, 20)[0].instances
            if not isinstance(i, sio.PredictedInstance)]
    assert len(user) == 1 and (user[0].numpy() == 5.0).all()


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")  # xarray's merge
def test_movement_loads_and_merges_the_nwb_files_of_several_animals(tmp_path, client_info):
    from clamp_track.io.nwb_export import write_nwb

    load_poses = _movement()
    import xarray as xr  # a dependency of movement

    results = corrected_results()
    paths = write_nwb(results, tmp_path, client_info, created="2026-12-03 10:00:00")
    assert [p.name for p in paths] == ["cows.clamp.animal1.nwb", "cows.clamp.animal2.nwb"]
    singles = [load_poses.from_nwb_file(p) for p in paths]  # default arguments
    merged = xr.merge(singles)  # as movement's documentation merges them
    assert list(merged.individuals.values) == ["animal1", "animal2"]
    assert merged.sizes["time"] == N_FRAMES
    for track, name in ((1, "animal1"), (2, "animal2")):
        xy, _ = raw_array(results, track)
        np.testing.assert_allclose(movement_xy(merged, name), xy, rtol=1e-6)


def test_nwb_keeps_variable_frame_times_and_the_video_recording_time(tmp_path, client_info):
    import datetime

    from pynwb import NWBHDF5IO

    from clamp_track.io.nwb_export import write_nwb

    results = make_results(tracks=((4, range(5, 15)),))
    results["time_s"] = results.frame * 0.04 + (results.frame >= 10) * 0.5  # a 0.5 s hiccup
    frame_times = (np.arange(3, 20), np.arange(3, 20) * 0.04 + (np.arange(3, 20) >= 10) * 0.5)
    [path] = write_nwb(results, tmp_path, client_info, created="2026-12-03 10:00:00",
                       frame_times=frame_times)
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        series = next(iter(nwb.processing["behavior"]["PoseEstimation"]
                           .pose_estimation_series.values()))
        stamps = series.get_timestamps()[:]
        start = nwb.session_start_time
    assert len(stamps) == N_FRAMES and np.all(np.diff(stamps) > 0)
    np.testing.assert_allclose(stamps[3:20], frame_times[1])  # the real times
    np.testing.assert_allclose(stamps[:3], 0.12 - np.arange(3, 0, -1) / 24.0)  # at the fps
    assert start.replace(tzinfo=None) == datetime.datetime(2026, 12, 3, 10, 0, 0)


def test_nwb_session_starts_when_the_video_was_recorded(tmp_path, client_info):
    import datetime

    import av
    from pynwb import NWBHDF5IO

    from clamp_track.io.nwb_export import session_start, write_nwb

    path = tmp_path / "cows.mp4"
    with av.open(str(path), "w", options={"movflags": "use_metadata_tags"}) as out:
        out.metadata["creation_time"] = "2024-05-06T07:08:09.000000Z"
        stream = out.add_stream("mpeg4", rate=24)
        stream.width, stream.height = 32, 32
        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert session_start(client_info, "2026-12-03 10:00:00") == datetime.datetime(
        2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    [nwb_file] = write_nwb(make_results(tracks=((1, range(0, 3)),)), tmp_path, client_info,
                           created="2026-12-03 10:00:00")
    with NWBHDF5IO(str(nwb_file), "r") as io:  # what NWB readers see
        assert io.read().session_start_time == datetime.datetime(
            2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    path.unlink()  # no video: the run's time
    assert session_start(client_info, "2026-12-03 10:00:00").replace(tzinfo=None) == \
        datetime.datetime(2026, 12, 3, 10, 0, 0)


def test_pandas_reads_every_deeplabcut_file_without_a_key(tmp_path, client_info):
    # DeepLabCut's read_hdf(path) works only for files with exactly one key
    out = write_dlc(corrected_results(), tmp_path, client_info)
    for h5 in (out.h5, out.filtered_h5):
        assert isinstance(pd.read_hdf(h5), pd.DataFrame)


def test_single_animal_files_read_as_anipose_and_lightning_pose_read_them(tmp_path, client_info):
    # anipose 1.x (filter_pose.py, triangulate.py): pd.read_hdf without a key, the scorer
    # from columns.levels[0][0], then the values reshaped to (frames, bodyparts, 1, 3), which
    # assumes bodypart-major x, y, likelihood columns. Lightning Pose reads the CSV with three
    # header rows.
    results = corrected_results()
    results = results[results.track == 2]
    out = write_dlc(results, tmp_path, client_info)
    xy, conf = raw_array(results, 2)
    csv = pd.read_csv(out.csv, header=[0, 1, 2], index_col=0)
    # pandas takes an empty first data row (the animal absent in frame 0; here frames 0..9)
    # for index names and drops it, as with DeepLabCut's own CSVs (the twin is byte for byte
    # DeepLabCut's h5 -> csv conversion); the other rows keep their frame numbers
    assert csv.index[0] == 1 and list(csv.index) == list(range(1, N_FRAMES))
    for table in (pd.read_hdf(out.h5), csv.reindex(range(N_FRAMES))):
        scorer = table.columns.levels[0][0]
        data = table.loc[:, scorer]
        joints = list(data.columns.get_level_values("bodyparts").unique())
        assert joints == list(AP10K.source_names)
        cube = np.array(data).reshape(len(data), len(joints), 1, 3)
        np.testing.assert_allclose(cube[:, :, 0, :2], xy, rtol=1e-9)
        np.testing.assert_allclose(cube[:, :, 0, 2], conf, rtol=1e-9)


@pytest.mark.parametrize("index", [False, True])
def test_csv_files_are_byte_for_byte_what_pandas_writes(tmp_path, index):
    """The CSV writer of the exports (rows through ``repr``) against ``DataFrame.to_csv``."""
    from clamp_track.io.export import write_csv

    rng = np.random.default_rng(0)
    n = 500
    table = pd.DataFrame({
        "frame": np.arange(n) // 17, "track": rng.integers(-3, 11, n),
        "keypoint": rng.choice(["nose", "left eye", "tail, base", 'say "hi"', "a\nb", ""], n),
        "flag": rng.random(n) > 0.5, "f32": rng.random(n).astype(np.float32),
        "obj": pd.Series([1.5, "t", None, 2, 1, True, 1.0, "1", "x", "y"] * (n // 10),
                         dtype=object)})
    for column in ("x", "y", "confidence"):  # float32 values as float64, as the store gives
        values = rng.normal(500, 300, n).astype(np.float32).astype(np.float64)
        values[::9] = np.nan
        table[column] = values
    table.loc[::11, "f32"] = np.nan
    table.loc[1:8, "x"] = [1e16, 1e-5, 0.1 + 0.2, -0.0, 1.0, np.inf, -np.inf, 123456789012345.0]
    levels = pd.MultiIndex.from_product([["DLC_scorer"], ["animal1", "animal2"], ["nose", "tail"],
                                         ["x", "y", "likelihood"]],
                                        names=["scorer", "individuals", "bodyparts", "coords"])
    dlc = pd.DataFrame(rng.normal(300, 100, (20, len(levels))), columns=levels)
    dlc.iloc[::3, ::5] = np.nan
    for name, frame in [("tidy", table), ("dlc", dlc), ("empty", table.iloc[:0])]:
        frame.to_csv(tmp_path / f"{name}_pandas.csv", index=index)
        write_csv(frame, tmp_path / f"{name}.csv", index=index)
        assert (tmp_path / f"{name}.csv").read_bytes() == \
            (tmp_path / f"{name}_pandas.csv").read_bytes(), name
