"""No data file runs code (issue 16, items 7 and 8).

Each crafted file carries a payload that would create a marker file when unpickled; the test
first shows that the payload works (plain ``pickle``/``pandas`` do create a marker), then that
clamp-track refuses the file in one line and the marker never appears.
"""

from __future__ import annotations

import base64
import json
import pickle
import shutil
from pathlib import Path

import pytest

from clamp_track.io.store import ResultStore, partial_path

STORE = "cows.mp4.clamp.sqlite"


class _Payload:
    """Unpickling it opens (creates) ``path``: harmless, but visible."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _interrupted_run(cli, run_args, out: Path, monkeypatch) -> Path:
    """A run stopped after its first chunk: its store holds a resume state."""
    from clamp_track.commands import run as command

    def interrupt(self, progress):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(command._ProgressBar, "update", interrupt)
        assert cli(run_args(out))[0] == 130
    store = out / STORE
    assert store.is_file() and not partial_path(store).exists()
    with ResultStore.open(store, readonly=True) as s:
        assert s.meta("resume")["tracking"]["version"] == 1  # stored as data
    return store


def _set_tracking(store: Path, value) -> None:
    with ResultStore.open(store) as s:
        s.set_meta(resume={**s.meta("resume"), "tracking": value})


def _crafted_states(marker: Path) -> dict:
    pickled = base64.b64encode(pickle.dumps(_Payload(marker))).decode()
    return {
        "pickle of an older version": pickled,
        "object of a foreign class": {"version": 1, "root": {
            "$obj": "builtins:open", "id": 0, "state": {"file": str(marker)}}},
        "class of a foreign module": {"version": 1, "root": {"$cls": "os:system"}},
        "object dtype array": {"version": 1, "root": {
            "$nd": "|O", "shape": [1], "id": 0,
            "b64": base64.b64encode(pickle.dumps(_Payload(marker))).decode()}},
    }


def test_the_pickle_payload_works(tmp_path):
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("case", sorted(_crafted_states(Path("x"))))
def test_a_crafted_resume_state_never_runs(case, cli, run_args, tmp_path, monkeypatch,
                                           snapshot, one_line):
    store = _interrupted_run(cli, run_args, tmp_path / "out", monkeypatch)
    marker = tmp_path / "MARKER"
    _set_tracking(store, _crafted_states(marker)[case])
    before = snapshot(tmp_path / "out")
    line = one_line(*cli(run_args(tmp_path / "out", "--resume")))
    assert "resume state" in line and "without --resume" in line
    assert not marker.exists()
    assert snapshot(tmp_path / "out") == before


def test_batch_never_runs_a_crafted_resume_state(cli, run_args, clip, weights, tmp_path,
                                                 monkeypatch):
    from clamp_track.commands.run import build_config
    from clamp_track.pipelines.batch import VideoTask, process_video

    store = _interrupted_run(cli, run_args, tmp_path / "out", monkeypatch)
    marker = tmp_path / "MARKER"
    _set_tracking(store, _crafted_states(marker)["pickle of an older version"])
    from clamp_track.cli import build_parser

    cfg = build_config(build_parser().parse_args(run_args(tmp_path / "out")))
    result = process_video(VideoTask(clip[0], cfg, tmp_path / "out"))  # resumes by itself
    assert result.status == "failed" and "resume state" in result.error
    assert not marker.exists()


def _crafted_dlc(shared_data, folder: Path, marker: Path) -> Path:
    import h5py
    import numpy as np

    source = (shared_data / "deeplabcut-examples" / "openfield-Pranav-2018-10-30" /
              "labeled-data" / "m4s1")
    target = folder / "labeled-data" / "m4s1"
    shutil.copytree(source, target)
    for csv in target.glob("*.csv"):
        csv.unlink()  # the .h5 is what is read
    h5 = target / "CollectedData_Pranav.h5"
    with h5py.File(h5, "a") as f:  # pandas unpickles this attribute to name the columns
        f["df_with_missing/table"].attrs["values_block_0_kind"] = np.bytes_(
            pickle.dumps(_Payload(marker), protocol=0))
    return h5


def test_the_crafted_label_file_would_run_code_in_pandas(shared_data, tmp_path):
    import pandas as pd

    marker = tmp_path / "control"
    h5 = _crafted_dlc(shared_data, tmp_path, marker)
    try:
        pd.read_hdf(h5)
    except Exception:  # noqa: BLE001, S110 - the payload ran before pandas gave up
        pass
    assert marker.exists()


@pytest.mark.parametrize("command", ["convert", "import"])
def test_a_crafted_label_file_never_runs(command, shared_data, cli, done, tmp_path, one_line):
    marker = tmp_path / "MARKER"
    h5 = _crafted_dlc(shared_data, tmp_path, marker)
    if command == "convert":
        args = ["labels", "convert", h5, "--to", "coco", "-o", tmp_path / "coco"]
    else:
        args = ["labels", "import", h5, "--store", done / STORE]
    line = one_line(*cli(args))
    assert "pickled" in line and h5.name in line
    assert not marker.exists()
    assert not (tmp_path / "coco").exists()


def test_a_label_file_of_numbers_still_reads(shared_data, cli, tmp_path):
    source = (shared_data / "deeplabcut-examples" / "openfield-Pranav-2018-10-30" /
              "labeled-data" / "m4s1" / "CollectedData_Pranav.h5")
    status, err = cli(["labels", "convert", source, "--to", "coco", "-o", tmp_path / "coco"])
    assert status == 0, err
    data = json.loads(next((tmp_path / "coco").rglob("*.json")).read_text())
    assert len(data["annotations"]) == 116
