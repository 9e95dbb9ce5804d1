"""``batch --behaviour``: the per-animal summaries join ``batch_summary.csv``."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

pytest.importorskip("movement")

from clamp_track import cli  # noqa: E402
from clamp_track.config import to_dict  # noqa: E402
from clamp_track.io.store import ResultStore  # noqa: E402
from clamp_track.pipelines import behaviour as bh  # noqa: E402
from clamp_track.pipelines.batch import (  # noqa: E402
    SUMMARY_COLUMNS,
    BatchConfig,
    VideoTask,
    run_batch,
)
from clamp_track.pipelines.run import RunConfig  # noqa: E402


def _complete(behaviour_store, folder, name, cfg, drop_tracks=False):
    """A copy of the synthetic store for video ``name``, complete with ``cfg``'s settings."""
    path = folder / f"{name}.clamp.sqlite"
    shutil.copy(behaviour_store, path)
    with ResultStore.open(path) as store:
        store.set_meta(config=to_dict(cfg),
                       video={**store.meta("video"), "path": str(folder / name)})
        if drop_tracks:
            for track in store.track_ids():
                store.delete_track(track)
    return VideoTask(folder / name, cfg)


def test_summaries_are_added_per_video_and_animal(behaviour_store, tmp_path):
    cfg = RunConfig(exports=())  # complete with nothing to export: batch skips them
    tasks = [_complete(behaviour_store, tmp_path, "a.mp4", cfg),
             _complete(behaviour_store, tmp_path, "b.mp4", cfg),
             _complete(behaviour_store, tmp_path, "empty.mp4", cfg, drop_tracks=True)]
    summary = tmp_path / "batch_summary.csv"
    results = run_batch(tasks, BatchConfig(summary=str(summary),
                                           behaviour=bh.BehaviourConfig(px_per_m=100.0)))
    assert [r.status for r in results] == ["skipped"] * 3  # complete stores: no worker
    table = pd.read_csv(summary, keep_default_na=False)
    assert list(table.columns) == [*SUMMARY_COLUMNS, *bh.SUMMARY_COLUMNS, "behaviour_error"]
    assert table.video.tolist() == [str(tmp_path / n) for n in
                                    ("a.mp4", "a.mp4", "b.mp4", "b.mp4", "empty.mp4")]
    assert table.individual.tolist() == ["animal1", "animal2"] * 2 + [""]
    assert table.total_distance[:4].astype(float).tolist() == pytest.approx([0.98, 8.8] * 2)
    assert table.length_unit[:4].tolist() == ["m"] * 4
    # each video's own behaviour files are written beside its store
    assert (tmp_path / "a.behaviour_summary.csv").is_file()
    assert (tmp_path / "b.behaviour_ethogram.png").is_file()


def test_without_behaviour_the_summary_is_unchanged(behaviour_store, tmp_path):
    tasks = [_complete(behaviour_store, tmp_path, "a.mp4", RunConfig(exports=()))]
    summary = tmp_path / "batch_summary.csv"
    run_batch(tasks, BatchConfig(summary=str(summary)))
    assert list(pd.read_csv(summary).columns) == list(SUMMARY_COLUMNS)


def test_px_per_m_needs_behaviour(tmp_path, capsys):
    assert cli.main(["batch", str(tmp_path), "--px-per-m", "100"]) == 2
    assert "--px-per-m is a behaviour setting; add --behaviour" in capsys.readouterr().err
