"""Track names given by the user reach every export (DLC individuals, SLEAP tracks, NWB)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clamp_track.errors import InputError
from clamp_track.io.store import ResultStore
from clamp_track.skeleton import from_names
from clamp_track.types import PosePredictions, VideoInfo

KPS = from_names(["snout", "leftear", "rightear", "tailbase"])


@pytest.fixture
def store(tmp_path):
    info = VideoInfo(str(tmp_path / "pair.mp4"), 640, 480, 25.0, 6, "h264")
    s = ResultStore.create(tmp_path / "pair.mp4.clamp.sqlite", {
        "keypoints": KPS.to_dict(), "video": info.__dict__, "config": {},
        "created": "2026-12-03 12:00:00", "dlc_date": "Dec3"})
    boxes = np.array([[10, 10, 100, 90], [300, 200, 400, 300]], np.float32)
    kp = np.stack([np.full((4, 2), 50.0), np.full((4, 2), 350.0)]).astype(np.float32)
    s.write_chunk([(f, f / 25, True) for f in range(6)],
                  [PosePredictions(f, np.array([1, 2]), boxes, kp, np.full((2, 4), 0.9))
                   for f in range(6)])
    s.set_meta(status="complete")
    yield s
    s.close()


def test_names_are_unique_and_can_be_removed(store):
    store.set_track_name(1, " female ")
    store.set_track_name(2, "male")
    assert store.track_names() == {1: "female", 2: "male"}
    with pytest.raises(InputError, match="track 1 is already named 'female'"):
        store.set_track_name(2, "female")
    with pytest.raises(InputError, match="cannot hold '/'"):
        store.set_track_name(2, "a/b")
    store.set_track_name(2, "")
    assert store.track_names() == {1: "female"}


def test_names_reach_dlc_sleap_and_nwb(store, tmp_path):
    pytest.importorskip("sleap_io")
    pytest.importorskip("pynwb")
    import sleap_io as sio
    from pynwb import NWBHDF5IO

    from clamp_track.pipelines.run import export

    store.set_track_name(1, "female")
    store.set_track_name(2, "male")
    paths = export(store, ["dlc", "sleap", "nwb"], tmp_path / "out")
    h5 = next(p for p in paths if p.suffix == ".h5" and "_el" in p.name)
    individuals = pd.read_hdf(h5).columns.get_level_values("individuals").unique()
    assert list(individuals) == ["female", "male"]
    slp = next(p for p in paths if p.suffix == ".slp")
    assert sorted(t.name for t in sio.load_slp(str(slp)).tracks) == ["female", "male"]
    subjects = {}  # one NWB file per animal, the name as its subject
    for nwb in (p for p in paths if p.suffix == ".nwb"):
        with NWBHDF5IO(str(nwb), "r") as io:
            subjects[nwb.name.split(".")[-2]] = io.read().subject.subject_id
    assert subjects == {"female": "female", "male": "male"}
