"""Labels: DeepLabCut labelled data and COCO files round-trip exactly; corrections of a store
become labels with the documented rules, export as frames + labels and import back."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from clamp_track.errors import InputError
from clamp_track.io.coco_labels import read_coco_labels, write_coco_labels
from clamp_track.io.dlc_labels import read_dlc_labels, read_table, write_dlc_labels
from clamp_track.io.labels import (
    Label,
    Labels,
    box_from_keypoints,
    image_name,
    import_into_store,
    labels_from_store,
    load_keypoint_set,
    prompt_name,
    read_labels,
    remap,
)
from clamp_track.io.store import ResultStore, store_path
from clamp_track.skeleton import AP10K, from_names
from clamp_track.types import PosePredictions

OPENFIELD = "deeplabcut-examples/openfield-Pranav-2018-10-30/labeled-data/m4s1"


def _with_multiindex_rows(table: pd.DataFrame) -> pd.DataFrame:
    """What DeepLabCut itself turns old single-string row indices into (3 path parts)."""
    out = table.copy()
    out.index = pd.MultiIndex.from_tuples([tuple(i.split("/")) for i in table.index])
    return out


# ------------------------------------------------------------------------ DeepLabCut, COCO


def test_openfield_labelled_data_reads_as_a_new_vocabulary(shared_data):
    labels = read_dlc_labels(shared_data / OPENFIELD)
    kp = labels.keypoints
    assert len(labels) == 116 and labels.scorer == "Pranav" and not labels.multi_animal
    assert kp.source_names == ("snout", "leftear", "rightear", "tailbase")
    assert kp.names == ("snout", "left ear", "right ear", "tail base")  # prompt text
    assert kp.flip_pairs == ((1, 2),)
    first = labels.items[0]
    assert (first.video, first.image_name, first.frame) == ("m4s1", "img0000.png", 0)
    np.testing.assert_array_equal(first.keypoints[0], [21.521, 265.428, 2.0])
    assert all(item.labelled.all() for item in labels.items)  # no missing labels here
    assert (shared_data / OPENFIELD / "img0000.png").samefile(first.image)


def test_dlc_to_coco_and_back_changes_no_coordinate(shared_data, tmp_path):
    source = shared_data / OPENFIELD
    original = _with_multiindex_rows(read_table(source / "CollectedData_Pranav.h5"))
    labels = read_dlc_labels(source)
    annotations = write_coco_labels(labels, tmp_path / "coco")
    coco = read_coco_labels(annotations)
    assert coco.keypoints == labels.keypoints and len(coco) == 116
    assert (tmp_path / "coco" / "images" / "m4s1" / "img0115.png").read_bytes() == \
        (source / "img0115.png").read_bytes()
    h5 = write_dlc_labels(coco, tmp_path / "project")[0]
    assert h5 == tmp_path / "project" / "labeled-data" / "m4s1" / "CollectedData_Pranav.h5"
    pd.testing.assert_frame_equal(pd.read_hdf(h5), original, check_exact=True)
    pd.testing.assert_frame_equal(read_table(h5.with_suffix(".csv")), original,
                                  check_exact=True)
    assert pd.read_hdf(h5).columns.names == ["scorer", "bodyparts", "coords"]
    again = read_dlc_labels(h5.parent)  # the written folder reads like DeepLabCut's own
    assert [i.image_name for i in again.items] == [i.image_name for i in labels.items]


def test_missing_labels_survive_the_round_trip(shared_data, tmp_path):
    source = shared_data / "lightning-pose" / "mirror-mouse-example" / "CollectedData.csv"
    original = _with_multiindex_rows(read_table(source))
    labels = read_labels(source)
    assert len(labels) == 90 and np.isnan(original.to_numpy()).any()
    unlabelled = sum(int((~i.labelled).sum()) for i in labels.items)
    assert unlabelled == int(np.isnan(original.to_numpy()).sum()) // 2
    coco = read_coco_labels(write_coco_labels(labels, tmp_path / "coco"))
    table = read_table(write_dlc_labels(coco, tmp_path / "dlc", images=False)[0])
    original.index = pd.MultiIndex.from_tuples(
        [("labeled-data", "mirror-mouse-example", i[-1]) for i in original.index])
    pd.testing.assert_frame_equal(table, original, check_exact=True)


def test_multi_animal_layout_round_trips(shared_data, tmp_path):
    kp = from_names(["nose", "tail"], name="pair")
    image = str(shared_data / OPENFIELD / "img0000.png")

    def label(name, individual, xy):
        return Label(image, "m1", name, np.array([[*p, 2.0] for p in xy]), individual)

    labels = Labels(kp, [
        label("img001.png", "mus1", [(10.5, 20.25), (30.125, 40.0)]),
        label("img001.png", "mus2", [(50.0, 60.0), (np.nan, np.nan)]),
        label("img002.png", "mus1", [(1.0, 2.0), (3.0, 4.0)]),
    ], scorer="me", individuals=("mus1", "mus2"))
    h5 = write_dlc_labels(labels, tmp_path / "a")[0]
    table = pd.read_hdf(h5)
    assert table.columns.names == ["scorer", "individuals", "bodyparts", "coords"]
    assert table.shape == (2, 2 * 2 * 2) and np.isnan(table.iloc[1]["me"]["mus2"]).all()
    back = read_dlc_labels(h5.parent)
    assert back.individuals == ("mus1", "mus2")
    coco = read_coco_labels(write_coco_labels(back, tmp_path / "coco"))
    table2 = pd.read_hdf(write_dlc_labels(coco, tmp_path / "b")[0])
    pd.testing.assert_frame_equal(table2, table, check_exact=True)


def test_bad_label_files_fail_with_one_line(tmp_path, shared_data):
    with pytest.raises(InputError, match="no CollectedData_<scorer>"):
        read_dlc_labels(tmp_path)
    (tmp_path / "CollectedData_x.csv").write_text("hello,world\n1,2\n")
    with pytest.raises(InputError, match="CollectedData_x.csv: not a DeepLabCut"):
        read_dlc_labels(tmp_path)
    folder = tmp_path / "copy"
    folder.mkdir()
    shutil.copy(shared_data / OPENFIELD / "CollectedData_Pranav.csv", folder)
    with pytest.raises(InputError, match="img0000.png not found"):
        read_dlc_labels(folder)


def test_remap_by_name_and_refusal_of_unknown_names(shared_data):
    labels = read_dlc_labels(shared_data / OPENFIELD, check_images=False)
    reordered = from_names(["tailbase", "snout", "leftear", "rightear", "neck"], name="five")
    mapped = remap(labels, reordered)
    np.testing.assert_array_equal(mapped.items[3].keypoints[1], labels.items[3].keypoints[0])
    assert not mapped.items[0].labelled[4]
    with pytest.raises(InputError, match=r"\['leftear', 'rightear'\] are not in keypoint set"):
        remap(labels, from_names(["snout", "tailbase"], name="two"))


def test_a_deeplabcut_project_config_is_a_keypoint_set(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("Task: openfield\nscorer: Pranav\nmultianimalproject: false\n"
                      "bodyparts: [snout, leftear, rightear, tailbase]\n"
                      "skeleton: [[snout, leftear], [snout, rightear], [leftear, nose]]\n"
                      "video_sets: {}\n")
    kp = load_keypoint_set(config)
    assert kp.name == "openfield" and kp.names == ("snout", "left ear", "right ear", "tail base")
    assert kp.skeleton == ((0, 1), (0, 2)) and kp.flip_pairs == ((1, 2),)
    plain = tmp_path / "mouse.yaml"
    plain.write_text("names: [snout, left ear, right ear, tail base]\n")
    assert load_keypoint_set(plain).names == kp.names and load_keypoint_set("ap10k") == AP10K


def test_box_rule_and_prompt_names():
    kps = np.array([[100.0, 50.0, 2], [300.0, 90.0, 2], [np.nan, np.nan, 0]])
    # the longer side is 200 px: margin max(20, 0.1 * 200) = 20 each side
    np.testing.assert_allclose(box_from_keypoints(kps), [80, 30, 240, 80])
    big = kps * [3, 3, 1]  # longer side 600 px: margin 60
    np.testing.assert_allclose(box_from_keypoints(big), [240, 90, 720, 240])
    np.testing.assert_allclose(box_from_keypoints(kps, (250, 100)), [80, 30, 169, 69])
    assert box_from_keypoints(kps[2:]) is None
    assert [prompt_name(n) for n in ("leftear", "tailbase", "snout", "L_F_Paw", "paw1LH_top")] \
        == ["left ear", "tail base", "snout", "left front paw", "paw1lh top"]
    assert image_name(5, 2330) == "img0005.png" and image_name(12, 104) == "img012.png"


# ------------------------------------------------------------------------ stores


def _pose(frame, tracks):
    n = len(tracks)
    xy = 200 + np.arange(n * 17 * 2, dtype=np.float32).reshape(n, 17, 2) + frame
    boxes = np.array([[150 + 100 * i, 100, 330 + 100 * i, 300] for i in range(n)], np.float32)
    scores = np.tile(np.linspace(0.05, 0.95, 17, dtype=np.float32), (n, 1))
    return PosePredictions(frame, tracks, boxes, xy, scores)


@pytest.fixture
def store(shared_data, tmp_path):
    from clamp_track.io.video import probe

    video = tmp_path / "cows.mp4"
    shutil.copy(shared_data / "badja-davis" / "derived" / "cows_480p_24fps.mp4", video)
    info = probe(video)
    s = ResultStore.create(store_path(video), {
        "keypoints": AP10K.to_dict(), "video": dict(info.__dict__),
        "model": {"variant": "clamp_tiny_rn50", "weights": None}})
    frames = [(f, f / 24, True) for f in range(12)]
    s.write_chunk(frames, [_pose(f, [1, 2]) for f in range(12)])
    yield s
    s.close()


def test_corrections_become_labels_with_the_untouched_rule(store):
    assert len(labels_from_store(store)) == 0
    store.set_correction(3, 2, 0, 401.5, 222.25)
    store.set_correction(3, 2, 5, None, None, visible=False)
    store.set_correction(8, 1, 16, 500.0, 350.0)  # outside the track box: the box grows
    ignore = labels_from_store(store)
    assert [(i.frame, i.individual) for i in ignore.items] == [(3, "animal2"), (8, "animal1")]
    assert ignore.individuals == ("animal1", "animal2")
    first = ignore.items[0]
    assert first.labelled.tolist() == [True] + [False] * 16
    np.testing.assert_array_equal(first.keypoints[0], [401.5, 222.25, 2])
    assert first.image_name == "img003.png" and first.size == (854, 480)
    np.testing.assert_allclose(first.bbox, [250, 100, 180, 200])
    confident = labels_from_store(store, untouched="confident", min_confidence=0.5)
    assert confident.items[0].labelled.sum() == 1 + 9  # 9 predictions >= 0.5 (8..16)
    assert not confident.items[0].labelled[5]
    every = labels_from_store(store, untouched="all")
    assert every.items[0].labelled.sum() == 16  # all but the absent one
    raw = store.frame_instances(3)["raw"][1]
    np.testing.assert_array_equal(every.items[0].keypoints[7, :2], raw[7, :2])
    from clamp_track.io.labels import label_box

    assert label_box(ignore.items[1])[0] + label_box(ignore.items[1])[2] >= 520


def test_store_export_writes_frames_and_imports_back(store, tmp_path):
    store.set_correction(3, 2, 0, 401.5, 222.25)
    store.set_correction(3, 1, 2, 181.0, 133.0)
    store.set_correction(10, 1, 4, 190.75, 180.5)
    labels = labels_from_store(store)
    h5 = write_dlc_labels(labels, tmp_path / "project")[0]
    assert h5.parent.name == "cows"
    frame3 = h5.parent / "img003.png"
    import cv2

    from clamp_track.io.video import VideoReader

    with VideoReader(store.video_info.path) as reader:
        expected = reader.read(3).image
    np.testing.assert_array_equal(cv2.imread(str(frame3))[..., ::-1], expected)  # lossless
    back = read_dlc_labels(h5.parent)
    assert back.individuals == ("animal1", "animal2")
    got = {(i.frame, i.individual): i.keypoints for i in back.items if i.labelled.any()}
    np.testing.assert_array_equal(got[(3, "animal2")][0, :2], [401.5, 222.25])
    np.testing.assert_array_equal(got[(10, "animal1")][4, :2], [190.75, 180.5])
    # into a copy of the store without corrections: the same corrections come back
    copy = tmp_path / "copy.clamp.sqlite"
    store._db.execute("PRAGMA wal_checkpoint(FULL)")
    shutil.copy(store.path, copy)
    with ResultStore.open(copy) as other:
        other._db.execute("DELETE FROM corrections")
        assert import_into_store(read_dlc_labels(h5.parent), other) == (3, 0)
        assert other.corrections() == store.corrections()


def test_a_label_never_lands_on_another_animal_and_can_be_added(store):
    def label(frame, individual, centre):
        xy = np.full((17, 3), np.nan)
        xy[:5, :2] = np.asarray(centre) + np.arange(10).reshape(5, 2)
        xy[:5, 2] = 2
        return Label(f"img{frame:03d}.png", "cows", f"img{frame:03d}.png", xy,
                     individual=individual, frame=frame)

    def labels(*items):
        return Labels(AP10K, list(items), individuals=("animal7", "animal8"))

    far = [label(4, "animal7", (700, 420)), label(5, "animal7", (705, 421))]
    near = label(4, "animal8", (400, 200))  # inside animal 2's box only
    assert import_into_store(labels(*far, near), store, match="nearest") == (1, 2)
    assert [c[:3] for c in store.corrections()] == [(4, 2, k) for k in range(5)]
    store._db.execute("DELETE FROM corrections")
    assert import_into_store(labels(*far, near), store, match="nearest",
                             add_missing=True) == (3, 0)
    assert store.track_ids() == [1, 2, 3]  # one new animal for both frames of animal7
    added = store.track(3)
    assert added["frames"].tolist() == [4, 5] and (added["raw"][:, :, 2] == 0).all()
    np.testing.assert_array_equal(added["raw"][0, :5, :2], far[0].keypoints[:5, :2])
    assert store.correction(5, 3, 4) == (713.0, 430.0, True)
    assert import_into_store(labels(label(20, "animal7", (1, 1))), store,
                             add_missing=True) == (0, 1)  # frame 20 was not processed


def test_missing_or_wrong_video_is_a_clear_error(store, shared_data, tmp_path):
    store.set_correction(3, 2, 0, 401.5, 222.25)
    video = tmp_path / "cows.mp4"
    moved = tmp_path / "moved" / "cows.mp4"
    moved.parent.mkdir()
    video.rename(moved)
    with pytest.raises(InputError, match=r"cows.mp4.clamp.sqlite: its video .*cows.mp4 is "
                       r"missing .*--video"):
        labels_from_store(store)
    assert labels_from_store(store, video=moved).items[0].image.path == str(moved)
    assert labels_from_store(store).items[0].image.path == str(moved)  # remembered
    moved.rename(tmp_path / "cows.mp4")  # back beside the store: found there
    assert labels_from_store(store).items[0].image.path == str(tmp_path / "cows.mp4")
    other = shared_data / "badja-davis" / "derived" / "camel_480p_24fps.mp4"
    with pytest.raises(InputError, match="camel.*not the video of cows.mp4.clamp.sqlite.*"
                       "90 frames instead of 104"):
        labels_from_store(store, video=other)


# ------------------------------------------------------------------------------------- SLEAP


def test_sleap_project_labels_read_with_their_video_frames(shared_data):
    """SLEAP's own test project: 1500 user-labelled frames of two flies, video beside it."""
    import sleap_io as sio

    path = shared_data / "sleap-tests" / "tracks" / "clip.slp"
    labels = read_labels(path)
    truth = sio.load_slp(str(path), open_videos=False)
    assert labels.keypoints.source_names == tuple(truth.skeleton.node_names)
    assert labels.keypoints.names[3:7] == ("left wing", "right wing", "left foreleg 4",
                                           "right foreleg 4")  # prompt text
    assert labels.keypoints.flip_pairs[:2] == ((3, 4), (5, 6))
    assert labels.individuals == ("female", "male") and labels.scorer == "sleap"
    assert len(labels) == sum(len(lf.user_instances) for lf in truth.labeled_frames)
    first = truth.labeled_frames[0].user_instances[0]
    item = next(i for i in labels.items if i.frame == truth.labeled_frames[0].frame_idx
                and i.individual == first.track.name)
    np.testing.assert_allclose(item.keypoints[:, :2], first.numpy(), equal_nan=True)
    assert (item.keypoints[:, 2] == np.where(np.isfinite(first.numpy()).all(1), 2, 0)).all()
    assert item.image.path == str(path.parent / "clip.mp4")  # resolved beside the .slp
    assert item.image().shape[2] == 3  # the real frame decodes


def test_our_sleap_export_reads_back_as_the_stores_labels(store, tmp_path):
    from clamp_track.io.export import ExportInfo
    from clamp_track.io.sleap_export import write_sleap
    from clamp_track.pipelines.run import corrected_table

    store.set_correction(3, 2, 0, 401.5, 222.25)
    store.set_correction(3, 2, 1, 405.0, 220.0)
    store.set_correction(8, 1, 16, 500.0, 350.0)
    slp, _ = write_sleap(corrected_table(store), tmp_path,
                         ExportInfo(store.keypoints, store.video_info), store.boxes())
    back = read_labels(slp)
    expected = labels_from_store(store)
    assert back.keypoints == store.keypoints  # the built-in AP-10K set, not a look-alike
    assert [(i.frame, i.individual, i.image_name, i.video) for i in back.items] == \
        [(i.frame, i.individual, i.image_name, i.video) for i in expected.items]
    for a, b in zip(back.items, expected.items):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
    fake = tmp_path / "notes.slp"
    fake.write_text("field notes\n")
    with pytest.raises(InputError, match="notes.slp: not a readable SLEAP"):
        read_labels(fake)
