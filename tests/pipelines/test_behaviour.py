"""Behaviour measures on synthetic tracks with known answers (see ``behaviour_store``)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("movement")

from clamp_track.errors import InputError  # noqa: E402
from clamp_track.pipelines import behaviour as bh  # noqa: E402
from clamp_track.skeleton import ANIMALPOSE, AP10K, from_names  # noqa: E402

TOL = 1e-6


@pytest.fixture(scope="module")
def result(behaviour_store):
    return bh.compute_behaviour(behaviour_store)


def _animal(frames, track):
    return frames[frames.track == track].set_index("frame")


def test_body_plan_of_the_builtin_sets():
    plan = bh.body_plan(AP10K)
    names = [AP10K.source_names[i] for i in plan.centre]
    assert names == ["neck", "root_of_tail", "left_shoulder", "right_shoulder", "left_hip",
                     "right_hip"]
    assert [AP10K.names[i] for i in plan.length] == ["nose", "tail root"]
    assert [AP10K.names[i] for i in plan.heading] == ["neck", "tail root"]
    assert {AP10K.names[j] for _, j, _ in plan.angles} == {
        "left shoulder", "left elbow", "right shoulder", "right elbow", "left hip", "left knee",
        "right hip", "right knee"}
    assert (5, 6, 7) in plan.angles  # shoulder - elbow - paw
    ap = bh.body_plan(ANIMALPOSE)
    assert [ANIMALPOSE.source_names[i] for i in ap.centre] == ["Throat", "TailBase", "Withers"]
    assert len(ap.angles) == 8 and [ANIMALPOSE.names[i] for i in ap.heading] == [
        "withers", "tail base"]


def test_body_plan_of_a_custom_set_and_a_chosen_centre():
    mouse = from_names(["snout", "leftear", "rightear", "tailbase"])
    plan = bh.body_plan(mouse)
    assert plan.centre == (3,) and plan.length == (0, 3) and plan.angles == ()
    assert bh.body_plan(AP10K, centre=("neck", "tail root")).centre == (3, 4)
    with pytest.raises(InputError, match="'tummy' is not in set"):
        bh.body_plan(AP10K, centre=("tummy",))


def test_constant_speed_then_a_stop(result):
    a = _animal(result.frames, 1)
    assert len(a) == 100 and a.individual.iloc[0] == "animal1"
    # the centre is the mean of the smoothed torso keypoints (raw ones are 7 px off)
    np.testing.assert_allclose(a.centre_x[:50], 100 + 2 * np.arange(50), atol=TOL)
    np.testing.assert_allclose(a.centre_y, 100, atol=TOL)
    np.testing.assert_allclose(a.speed[:49], 50.0, atol=TOL)  # 2 px a frame at 25 fps
    assert a.speed[49] == pytest.approx(25.0, abs=TOL)  # the central difference straddles it
    np.testing.assert_allclose(a.speed[50:], 0.0, atol=TOL)
    np.testing.assert_allclose(a.acceleration[1:48], 0.0, atol=TOL)
    np.testing.assert_allclose(a.distance, np.minimum(np.arange(100), 49) * 2.0, atol=TOL)
    np.testing.assert_allclose(a.body_length, 100.0, atol=TOL)
    np.testing.assert_allclose(a.speed_bl_s[:49], 0.5, atol=TOL)
    assert set(a.state[:50]) == {"walking"} and set(a.state[50:]) == {"resting"}
    np.testing.assert_allclose(a.heading_deg, 0.0, atol=TOL)
    assert (a.length_unit == "px").all() and (a.coordinates == "smoothed+corrected").all()


def test_known_joint_angles(result):
    f = result.frames
    for column, degrees in (("angle_left_elbow", 135), ("angle_right_elbow", 90),
                            ("angle_left_knee", 90), ("angle_right_knee", 135),
                            ("angle_left_shoulder", 90), ("angle_left_hip", 90)):
        valid = f[column].dropna()
        assert len(valid) == 190, column  # animal 2's low-confidence frames are gaps
        np.testing.assert_allclose(valid, degrees, atol=TOL, err_msg=column)


def test_low_confidence_is_a_gap_not_zero(result):
    b = _animal(result.frames, 2)
    assert len(b) == 100  # the animal is in the store on every frame ...
    gap = b.loc[20:29]
    assert gap[["centre_x", "speed", "body_length", "heading_deg", "distance"]].isna().all().all()
    assert (gap.state == "").all()
    # ... its speed next to the gap is unknown, elsewhere exact: 10 px a frame, facing up
    assert np.isnan(b.speed[19]) and np.isnan(b.speed[30])
    np.testing.assert_allclose(b.speed.drop(range(19, 31)), 250.0, atol=TOL)
    np.testing.assert_allclose(b.heading_deg.dropna(), 90.0, atol=TOL)
    assert set(b.state.drop(range(19, 31))) == {"running"}  # 2.5 body lengths / s
    # the gap is not bridged: 19 steps before it, 69 after
    assert b.distance[19] == pytest.approx(190.0, abs=TOL)
    assert b.distance[30] == pytest.approx(190.0, abs=TOL)
    assert b.distance[99] == pytest.approx(880.0, abs=TOL)


def test_summary_activity_budget(result):
    s = result.summary.set_index("track")
    assert list(result.summary.columns) == list(bh.SUMMARY_COLUMNS)
    assert s.individual.tolist() == ["animal1", "animal2"]
    assert s.frames_visible.tolist() == [100, 90]
    np.testing.assert_allclose(s.time_visible_s, [4.0, 3.6], atol=TOL)
    np.testing.assert_allclose(s.total_distance, [98.0, 880.0], atol=TOL)
    np.testing.assert_allclose(s.body_length, [100.0, 100.0], atol=TOL)
    np.testing.assert_allclose(s.resting_s, [2.0, 0.0], atol=TOL)
    np.testing.assert_allclose(s.walking_s, [2.0, 0.0], atol=TOL)
    np.testing.assert_allclose(s.running_s, [0.0, 3.52], atol=TOL)
    np.testing.assert_allclose(s.running_fraction, [0.0, 1.0], atol=TOL)
    assert s.max_speed[2] == pytest.approx(250.0, abs=TOL)


def test_metres_and_thresholds(behaviour_store):
    cfg = bh.BehaviourConfig(px_per_m=100.0, rest_below=0.1, run_above=0.4)
    res = bh.compute_behaviour(behaviour_store, cfg)
    s = res.summary.set_index("track")
    np.testing.assert_allclose(s.total_distance, [0.98, 8.8], atol=TOL)
    np.testing.assert_allclose(s.body_length, [1.0, 1.0], atol=TOL)
    a = _animal(res.frames, 1)
    np.testing.assert_allclose(a.speed[:49], 0.5, atol=TOL)
    assert set(a.state[:49]) == {"running"}  # 0.5 body lengths / s >= 0.4
    assert (res.frames.length_unit == "m").all() and (s.length_unit == "m").all()
    with pytest.raises(InputError, match="px-per-m"):
        bh.BehaviourConfig(px_per_m=0)
    with pytest.raises(InputError, match="rest below"):
        bh.BehaviourConfig(rest_below=3, run_above=2)


def test_movement_loader_reads_the_store_the_layer_reads(result, behaviour_store):
    """movement's own entry point loads the store into the dataset the measures came from."""
    from movement.io import load_dataset

    ds = load_dataset(behaviour_store, "clamp-track")
    np.testing.assert_array_equal(ds.position.values, result.poses.position.values)
    np.testing.assert_array_equal(ds.confidence.values, result.poses.confidence.values)
    assert ds.attrs["coordinates"] == "smoothed+corrected"
    assert list(ds.individuals.values) == ["animal1", "animal2"]
    assert ds.time.values[1] == pytest.approx(0.04)


def test_movement_sleap_loader_agrees_with_the_store_loader(result, behaviour_store, tmp_path):
    """The SLEAP analysis file we export, read by movement's SLEAP loader, holds the same
    coordinates and confidences as the dataset the behaviour layer analyses."""
    pytest.importorskip("sleap_io")
    from movement.io import load_dataset

    from clamp_track.io.export import ExportInfo
    from clamp_track.io.sleap_export import write_sleap
    from clamp_track.io.store import ResultStore
    from clamp_track.pipelines.run import corrected_table

    with ResultStore.open(behaviour_store, readonly=True) as store:
        info = ExportInfo(store.keypoints, store.video_info)
        _, h5 = write_sleap(corrected_table(store), tmp_path, info, smoothed=True)
    sleap = load_dataset(h5, "SLEAP", fps=25.0)
    assert list(sleap.individuals.values) == list(result.poses.individuals.values)
    assert list(sleap.keypoints.values) == list(result.poses.keypoints.values)
    np.testing.assert_allclose(sleap.position.values, result.poses.position.values, atol=1e-4)
    np.testing.assert_allclose(sleap.confidence.values, result.poses.confidence.values,
                               atol=1e-6)


def test_corrections_are_used(behaviour_store, tmp_path):
    from clamp_track.io.store import ResultStore

    path = tmp_path / behaviour_store.name
    shutil.copy(behaviour_store, path)
    with ResultStore.open(path) as store:
        store.set_correction(60, 1, AP10K.index("nose"), 500.0, 100.0)  # nose 302 px ahead
    ds = bh.load_store_poses(path)
    nose = ds.position.sel(individuals="animal1", keypoints="nose").isel(time=60).values
    np.testing.assert_array_equal(nose, [500.0, 100.0])
    tail = ds.position.sel(individuals="animal1", keypoints="root_of_tail").isel(time=60).values
    res = bh.compute_behaviour(path)
    assert _animal(res.frames, 1).body_length[60] == pytest.approx(
        float(np.hypot(*(nose - tail))), abs=1e-6)


def test_unfinished_store_is_one_line_error(behaviour_store, tmp_path):
    from clamp_track.io.store import ResultStore

    path = tmp_path / behaviour_store.name
    shutil.copy(behaviour_store, path)
    with ResultStore.open(path) as store:
        store.set_meta(status="running")
    with pytest.raises(InputError, match="did not finish"):
        bh.compute_behaviour(path)
