"""Review work survives ``rerun()`` (issue 11.2): deletes, merges, swaps, occluded marks and
track names are replayed onto the re-run's tracks by overlap, and what cannot be placed is said.

The first run is the BADJA cows clip (32 frames) with the ``file`` detector: the cow, a static
decoy box all along (track ``still``), and a second decoy that jumps place at frame 16 so the
tracker breaks it in two (``early``, ``late``).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from clamp_track.io.store import ResultStore

N = 32
STILL = (20, 300, 120, 90)  # x, y, w, h
EARLY, LATE = (600, 20, 100, 80), (740, 390, 100, 80)  # the broken decoy, before/after frame 16


def _boxes(mask_dir, out) -> None:
    import cv2

    lines = []
    for i, mask_path in enumerate(sorted(mask_dir.glob("*.png"))[:N]):
        ys, xs = np.nonzero(cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127)
        x1, y1 = xs.min(), ys.min()
        lines.append(f"{i + 1},-1,{x1},{y1},{xs.max() + 1 - x1},{ys.max() + 1 - y1},0.95,-1,-1,-1")
        lines.append(f"{i + 1},-1,{','.join(map(str, STILL))},0.9,-1,-1,-1")
        if i < 14 or i >= 18:
            jump = EARLY if i < 16 else LATE
            lines.append(f"{i + 1},-1,{','.join(map(str, jump))},0.9,-1,-1,-1")
    out.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def first_run(shared_data, tmp_path_factory):
    import torch

    from clamp_track.config import from_dict
    from clamp_track.models import create_model, save_checkpoint
    from clamp_track.pipelines.run import RunConfig, run_video

    folder = tmp_path_factory.mktemp("replay")
    video = folder / "cows.mp4"
    shutil.copy(shared_data / "badja-davis" / "derived" / "cows_480p_24fps.mp4", video)
    davis = shared_data / "badja-davis" / "DAVIS" / "Annotations" / "480p" / "cows"
    _boxes(davis, folder / "det.txt")
    torch.manual_seed(0)
    settings = {"pose_model": "clamp_tiny_rn50", "pose_weights": None, "chunk": 8, "end": N,
                "exports": [], "detect": {"name": "file", "boxes": str(folder / "det.txt")},
                "tracker": {"min_track_length": 3},
                "smoother": {"min_confidence": 1e-12},
                "pose": {"flip_test": False, "batch_size": 16}}
    summary = run_video(video, from_dict(RunConfig, settings), folder / "first")
    weights = save_checkpoint(create_model("clamp_tiny_rn50"), folder / "tuned.pt")
    return summary.store, weights


def _track_at(store, box) -> int:
    """The track whose box in its first frame is ``box`` (x, y, w, h)."""
    x, y, w, h = box
    for track in store.track_ids():
        b = store.track(track)["boxes"][0]
        if np.allclose(b, (x, y, x + w, y + h), atol=1):
            return track
    raise AssertionError(f"no track at {box}")


def _cow(store) -> int:
    return max(store.track_ids(), key=lambda t: len(store.track(t)["frames"]) * (
        store.track(t)["boxes"][0, 0] > 200))


def test_delete_merge_swap_occlude_and_names_survive_a_rerun(first_run, tmp_path):
    from clamp_track.pipelines.run import rerun

    store_file, weights = first_run
    first = tmp_path / "first" / store_file.name
    first.parent.mkdir()
    shutil.copy(store_file, first)
    with ResultStore.open(first) as store:
        assert len(store.track_ids()) == 4
        cow, still = _cow(store), _track_at(store, STILL)
        early, late = _track_at(store, EARLY), _track_at(store, LATE)
        store.merge_tracks(early, late)  # the broken decoy, mended
        store.delete_track(early, 0, 9)  # and its start deleted
        store.swap_tracks(cow, still, 20)  # an identity switch at frame 20, made by hand
        store.set_correction(5, cow, 0, 300.0, 200.0)
        store.set_correction(5, cow, 3, None, None, visible=False)  # occluded mark
        store.set_correction(25, still, 1, 310.0, 210.0)  # the cow, after the swap
        store.set_track_name(cow, "female")
        store.set_track_name(still, "male")
        expected = {t: store.track(t)["boxes"] for t in store.track_ids()}
        names_before = store.track_names()
        corrections = len(store.corrections())
    summary = rerun(first, weights, tmp_path / "second")
    report = summary.carried
    assert report.rules == 3 and report.unplaced == []
    assert (report.corrections, report.corrections_total) == (corrections, 3)
    assert report.names == 2 and report.compared > 0
    with ResultStore.open(summary.store, readonly=True) as new, \
            ResultStore.open(first, readonly=True) as old:
        # same tracks, same boxes in every frame: the edits were replayed
        assert len(new.track_ids()) == len(expected) == 3
        names = new.track_names()
        assert sorted(names.values()) == sorted(names_before.values())
        for track, name in names.items():
            (old_track,) = [t for t, n in names_before.items() if n == name]
            np.testing.assert_allclose(new.track(track)["boxes"], expected[old_track])
        female = next(t for t, n in names.items() if n == "female")
        assert new.correction(5, female, 3) == (None, None, False)  # occluded mark kept
        assert new.correction(5, female, 0) == (300.0, 200.0, True)
        male = next(t for t, n in names.items() if n == "male")
        assert new.correction(25, male, 1) == (310.0, 210.0, True)
        merged = [t for t in new.track_ids() if t not in names]
        assert new.track(merged[0])["frames"].tolist() == [10, 11, 12, 13, *range(18, N)]
        assert len(new.rules()) == 3  # recorded again: a further re-run carries them too
        assert new.meta("carried_from")["source"] == str(first.resolve())
        assert old.rules() and old.track_names() == names_before  # the first run untouched


def test_a_rule_that_finds_no_track_is_reported(first_run, tmp_path):
    from clamp_track.pipelines.replay import replay_rules

    store_file, _ = first_run
    copy = tmp_path / store_file.name
    shutil.copy(store_file, copy)
    with ResultStore.open(copy) as store:
        rule = {"id": 1, "kind": "delete", "track": 9, "from_frame": 0, "to_frame": 3,
                "boxes": {"1": [800.0, 400.0, 850.0, 470.0]}}  # nothing was ever there
        before = len(store.tidy())
        applied, unplaced = replay_rules([rule], store)
        assert applied == 0 and len(store.tidy()) == before
        assert unplaced == ["delete track 9 (frames 0-3): no track of the re-run is there"]


def test_undoing_an_edit_drops_its_rule(first_run, tmp_path):
    store_file, _ = first_run
    copy = tmp_path / store_file.name
    shutil.copy(store_file, copy)
    with ResultStore.open(copy) as store:
        a, b = store.track_ids()[:2]
        rule = store.swap_tracks(a, b, 10)
        store.swap_tracks(a, b, 10, record=False, forget=rule)
        snapshot = store.snapshot(a, 3, 5)
        rule = store.delete_track(a, 3, 5)
        assert [r["kind"] for r in store.rules()] == ["delete"]
        store.restore(snapshot, forget=rule)
        assert store.rules() == []


def test_moved_keypoints_counts_what_moved_more_than_a_few_pixels(first_run, tmp_path):
    from clamp_track.pipelines.replay import moved_keypoints

    store_file, _ = first_run
    copy = tmp_path / store_file.name
    shutil.copy(store_file, copy)
    with ResultStore.open(store_file, readonly=True) as old, ResultStore.open(copy) as new:
        track = new.track_ids()[0]
        x, y = new.track(track)["raw"][3, 0, :2]
        new.set_correction(3, track, 0, float(x) + 20, float(y))  # moved 20 px
        new.set_correction(4, track, 0, *map(float, new.track(track)["raw"][4, 0, :2] + 2))
        moved, compared = moved_keypoints(old, new)
        assert moved == 1 and compared == len(old.tidy().dropna(subset=["x"]))
