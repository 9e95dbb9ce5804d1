"""The store's link to its video: two sites with a same-named, same-size video (issue 11.1, 11.6).

``siteB/dog.mp4`` is 12 frames of the BADJA cows clip, ``siteA/dog.mp4`` 12 frames of the camel
clip: both 854x480, same frame count and rate, so only the decoded frames tell them apart.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from clamp_track.io.store import VIDEO_REF, ResultStore, store_path
from clamp_track.io.video_ref import (
    Fingerprint,
    VideoMismatch,
    VideoMissing,
    VideoRef,
    resolve_video,
    video_among,
)
from clamp_track.skeleton import from_names
from clamp_track.types import PosePredictions

KPS = from_names(["snout", "leftear", "rightear", "tailbase"])
N = 12


def _clip(source: Path, out: Path, n: int = N) -> Path:
    from clamp_track.io.video import VideoReader, VideoWriter

    out.parent.mkdir(parents=True, exist_ok=True)
    with VideoReader(source, end=n) as reader, VideoWriter(out, 24.0, (854, 480)) as writer:
        for frame in reader:
            writer.write(frame.image)
    return out


@pytest.fixture(scope="module")
def clips(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """(cows clip, camel clip), 12 frames each, to copy into test folders."""
    folder = tmp_path_factory.mktemp("clips")
    derived = shared_data / "badja-davis" / "derived"
    return (_clip(derived / "cows_480p_24fps.mp4", folder / "cows.mp4"),
            _clip(derived / "camel_480p_24fps.mp4", folder / "camel.mp4"))


def _make_store(video: Path, typed: str | None = None, legacy: bool = False) -> Path:
    """A complete store of ``video`` as the pipeline writes it (one animal, every frame)."""
    from clamp_track.io.video import probe

    info = probe(video)
    path = store_path(video)
    meta = {"keypoints": KPS.to_dict(), "config": {},
            "video": {**info.__dict__, "path": typed or str(video)}}
    if not legacy:
        meta[VIDEO_REF] = VideoRef.make(video, path).to_dict()
    with ResultStore.create(path, meta) as store:
        poses = [PosePredictions(f, np.array([1]), np.array([[300, 150, 500, 350]], np.float32),
                                 np.full((1, 4, 2), 400, np.float32), np.full((1, 4), 0.9))
                 for f in range(N)]
        store.write_chunk([(f, f / 24, True) for f in range(N)], poses)
        store.set_meta(status="complete")
    return path


@pytest.fixture
def sites(clips, tmp_path, monkeypatch):
    """``siteB/dog.mp4`` (cows) with its store, ``siteA/dog.mp4`` (camel); cwd = siteA."""
    site_a, site_b = tmp_path / "siteA", tmp_path / "siteB"
    site_a.mkdir()
    site_b.mkdir()
    shutil.copy(clips[1], site_a / "dog.mp4")
    shutil.copy(clips[0], site_b / "dog.mp4")
    monkeypatch.chdir(site_a)
    return site_a, site_b


def test_fingerprint_tells_same_size_same_length_videos_apart(clips, tmp_path):
    cows, camel = Fingerprint.of(clips[0]), Fingerprint.of(clips[1])
    assert (cows.width, cows.height, cows.n_frames) == (camel.width, camel.height, camel.n_frames)
    assert cows.differences(camel) == ["different picture in the sampled frames"]
    copy = shutil.copy(clips[0], tmp_path / "copy.mp4")
    assert cows.differences(Fingerprint.of(copy)) == []


def test_store_records_absolute_relative_and_fingerprint(sites):
    _, site_b = sites
    path = _make_store(site_b / "dog.mp4")
    with ResultStore.open(path, readonly=True) as store:
        ref = store.video_ref
        assert ref.absolute == str(site_b / "dog.mp4") and ref.relative == "dog.mp4"
        assert ref.fingerprint.n_frames == N and not ref.legacy
        assert store.video_info.path == str(site_b / "dog.mp4")


def test_from_the_other_site_the_store_finds_its_own_video(sites):
    """Before: the path as typed resolved against the current folder -> siteA's video."""
    site_a, site_b = sites
    path = _make_store(site_b / "dog.mp4")
    with ResultStore.open(Path("..") / "siteB" / path.name) as store:
        assert resolve_video(store) == site_b / "dog.mp4"


def test_a_legacy_store_looks_beside_itself_before_the_current_folder(sites, caplog):
    site_a, site_b = sites
    os.chdir(site_b)
    path = _make_store(Path("dog.mp4"), typed="dog.mp4", legacy=True)  # typed relative
    os.chdir(site_a)
    with caplog.at_level(logging.WARNING), ResultStore.open(site_b / path.name) as store:
        assert store.video_ref.legacy
        assert resolve_video(store).resolve() == (site_b / "dog.mp4").resolve()
        assert "fingerprint is new" in caplog.text
        assert not store.video_ref.legacy  # the fingerprint is recorded from now on


def test_a_same_named_other_video_is_refused_naming_both_files(sites):
    site_a, site_b = sites
    path = _make_store(site_b / "dog.mp4")
    shutil.copy(site_a / "dog.mp4", site_b / "dog.mp4")  # same name, other footage
    with ResultStore.open(path) as store, pytest.raises(VideoMismatch) as err:
        resolve_video(store)
    message = str(err.value)
    assert "\n" not in message and str(site_b / "dog.mp4") in message
    assert "not the video of dog.mp4.clamp.sqlite" in message and "--video" in message
    with ResultStore.open(path) as store, pytest.raises(VideoMismatch):
        resolve_video(store, site_a / "dog.mp4")  # naming it by hand does not help


def test_a_located_video_is_written_back_and_found_from_anywhere(sites, clips, tmp_path):
    site_a, site_b = sites
    path = _make_store(site_b / "dog.mp4")
    moved = tmp_path / "archive" / "card3" / "dog.mp4"
    moved.parent.mkdir(parents=True)
    shutil.move(site_b / "dog.mp4", moved)
    with ResultStore.open(path, readonly=True) as store:
        with pytest.raises(VideoMissing, match="--video"):
            resolve_video(store)
        assert resolve_video(store, moved) == moved  # located by hand: checked, remembered
    with ResultStore.open(path, readonly=True) as store:
        assert store.video_ref.absolute == str(moved)
        assert resolve_video(store) == moved  # not asked for again


def test_store_moved_with_its_video_is_found_relative_to_the_store(sites, tmp_path):
    _, site_b = sites
    _make_store(site_b / "dog.mp4")
    moved = tmp_path / "elsewhere"
    shutil.move(site_b, moved)
    with ResultStore.open(moved / "dog.mp4.clamp.sqlite") as store:
        assert resolve_video(store) == moved / "dog.mp4"


def test_export_video_from_the_other_site_uses_the_store_video(sites, capsys):
    """``cd siteA; clamp-track export ../siteB/dog.mp4.clamp.sqlite --format video``."""
    from clamp_track.cli import main
    from clamp_track.io.video import VideoReader

    site_a, site_b = sites
    path = _make_store(site_b / "dog.mp4")
    argv = ["export", str(Path("..") / "siteB" / path.name), "--format", "video", "-o", "out"]
    assert main(argv) == 0
    out = site_a / "out" / "dog.clamp.mp4"
    with VideoReader(out) as written, VideoReader(site_b / "dog.mp4") as cows, \
            VideoReader(site_a / "dog.mp4") as camel:
        # the keypoints are drawn on the cows frames, not on the camel's
        first = written.read(0).image.astype(float)
        assert (np.abs(first - cows.read(0).image).mean()
                < np.abs(first - camel.read(0).image).mean() / 3)

    shutil.copy(site_a / "dog.mp4", site_b / "dog.mp4")  # now only a wrong video is there
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "not the video of dog.mp4.clamp.sqlite" in err and str(site_b / "dog.mp4") in err


def test_the_listed_video_meant_for_a_store_is_picked_by_name_or_folder(sites, tmp_path):
    """``finetune --video`` / ``--rerun``: a listed folder or file is matched to each store."""
    site_a, site_b = sites
    path = _make_store(site_b / "dog.mp4")
    card = tmp_path / "card3"
    card.mkdir()
    shutil.move(site_b / "dog.mp4", card / "dog.mp4")
    with ResultStore.open(path, readonly=True) as store:
        assert video_among(store, []) is None
        assert video_among(store, [str(tmp_path / "nothing"), str(card)]) == card / "dog.mp4"
        assert video_among(store, [str(card / "dog.mp4")]) == card / "dog.mp4"
        renamed = shutil.copy(card / "dog.mp4", tmp_path / "renamed.mp4")
        assert video_among(store, [renamed]) == Path(renamed)  # the only file, video missing
        # a same-named video of another card is picked, then refused when checked
        assert video_among(store, [str(site_a)]) == site_a / "dog.mp4"
        with pytest.raises(VideoMismatch):
            resolve_video(store, video_among(store, [str(site_a)]))


def test_finetune_rerun_gives_each_store_its_listed_video(sites, tmp_path, monkeypatch):
    """Before: ``--video`` values were paired with the stores by position, so a folder (which
    ``--video`` accepts) reached ``rerun`` as a file and failed."""
    import types

    import clamp_track.pipelines.run as run
    from clamp_track.commands.finetune import _rerun

    _, site_b = sites
    path = _make_store(site_b / "dog.mp4")
    card = tmp_path / "card3"
    card.mkdir()
    shutil.move(site_b / "dog.mp4", card / "dog.mp4")
    seen = []

    def rerun(store, weights, video=None):
        seen.append((Path(store), video))
        return types.SimpleNamespace(line=lambda: "ok", carried=None)

    monkeypatch.setattr(run, "rerun", rerun)
    _rerun([str(path)], tmp_path / "w.pt", [str(tmp_path / "labels"), str(card)])
    assert seen == [(path, card / "dog.mp4")]


def test_a_run_hashes_the_fingerprint_from_its_own_frames_exactly(shared_data, tmp_path):
    """From frame 0 the run samples the fingerprint's frames (0, 0.5, 1 s) as they pass, with no
    second decode; stopped at its first commit (which comes before frame 24 = 1 s is decoded:
    at most 4 chunks of 4 are in flight), the store keeps the frames hashed so far, which still
    tell a same-sized, same-length other video apart; the resumed run completes it."""
    from clamp_track.pipelines.run import Cancelled, DetectConfig, RunConfig, run_video

    derived = shared_data / "badja-davis" / "derived"
    a = _clip(derived / "cows_480p_24fps.mp4", tmp_path / "a" / "cows.mp4", 30)
    b = _clip(derived / "camel_480p_24fps.mp4", tmp_path / "b" / "cows.mp4", 30)
    boxes = tmp_path / "det.txt"
    boxes.write_text("".join(f"{i + 1},-1,100,100,120,90,0.9,-1,-1,-1\n" for i in range(30)))
    cfg = RunConfig(pose_model="clamp_tiny_rn50", pose_weights=None, chunk=4, exports=(),
                    detect=DetectConfig(name="file", boxes=str(boxes)))

    def stop(progress):
        raise Cancelled("stopped")

    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        run_video(a, cfg, out, progress=stop)
    store = out / "cows.mp4.clamp.sqlite"
    with ResultStore.open(store, readonly=True) as s:
        early = s.video_ref.fingerprint
    full = Fingerprint.of(a)
    assert early.partial and not early.complete and full.complete
    assert 128 <= len(early.frames_hash) < len(full.frames_hash) == 3 * 128
    assert full.frames_hash.startswith(early.frames_hash)
    assert early.differences(full) == [] and early.differences(Fingerprint.of(b)) == [
        "different picture in the sampled frames"]
    run_video(a, cfg, out, resume=True)
    with ResultStore.open(store, readonly=True) as s:
        assert s.video_ref.fingerprint == full  # completed after the resume: the same hash
    run_video(a, cfg, tmp_path / "fresh")  # one uninterrupted pass hashes its own frames
    with ResultStore.open(tmp_path / "fresh" / store.name, readonly=True) as s:
        assert s.video_ref.fingerprint == full
