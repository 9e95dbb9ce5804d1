"""Batch runs of real videos: in-process, on a real Dask LocalCluster and on the local pool.

Every batch store is compared with ``run_video`` on the same video (what ``clamp-track run``
does). The tiny random-weight model is built from ``RunConfig.seed`` in every process, and the
reference runs with as many torch threads as a worker (1), so the results are bit-identical.
"""

from __future__ import annotations

import os
import shutil
import signal

import numpy as np
import pandas as pd
import pytest

from clamp_track.errors import InputError, MissingDependencyError
from clamp_track.io.store import ResultStore
from clamp_track.pipelines import batch
from clamp_track.pipelines.batch import (
    DEFAULT_BOXES,
    BatchConfig,
    Channel,
    VideoTask,
    plan_tasks,
    process_video,
    run_batch,
    store_state,
    video_config,
    write_combined_csv,
)
from clamp_track.pipelines.pose import PoseConfig
from clamp_track.pipelines.run import DetectConfig, Models, RunConfig, run_video
from clamp_track.pipelines.smoother import SmootherConfig
from clamp_track.pipelines.tracker import TrackerConfig

VIDEOS = ("camA/cows.mp4", "camB/camel.mp4", "camB/dog.avi")
CORRUPT = "camB/corrupt.mp4"


def mask_boxes_to_mot(mask_dir, out_file) -> None:
    """MOTChallenge det.txt (1-based frames) from the DAVIS object masks of a sequence."""
    import cv2

    lines = []
    for i, mask_path in enumerate(sorted(mask_dir.glob("*.png"))):
        ys, xs = np.nonzero(cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127)
        if len(xs):
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            lines.append(f"{i + 1},-1,{x1},{y1},{x2 - x1},{y2 - y1},0.95,-1,-1,-1")
    out_file.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def collection(shared_data, tmp_path_factory):
    """Two camera folders: cows, camel and the DLC-live dog (each with <stem>.det.txt beside
    it) and a corrupt mp4 (the head of a real one) with boxes too."""
    root = tmp_path_factory.mktemp("season")
    (root / "camA").mkdir()
    (root / "camB").mkdir()
    davis = shared_data / "badja-davis"
    for name, seq in (("camA/cows", "cows"), ("camB/camel", "camel")):
        shutil.copy(davis / "derived" / f"{seq}_480p_24fps.mp4", root / f"{name}.mp4")
        mask_boxes_to_mot(davis / "DAVIS" / "Annotations" / "480p" / seq, root / f"{name}.det.txt")
    shutil.copy(shared_data / "deeplabcut-live" / "check_install" / "dog_clip.avi",
                root / "camB/dog.avi")
    (root / "camB/dog.det.txt").write_text(
        "\n".join(f"{i},-1,20,20,310,330,0.9,-1,-1,-1" for i in range(1, 49)) + "\n")
    head = (root / "camB/camel.mp4").read_bytes()[:5000]
    (root / CORRUPT).write_bytes(head)
    shutil.copy(root / "camB/camel.det.txt", root / "camB/corrupt.det.txt")
    return root


def _cfg(**kw) -> RunConfig:
    base = dict(pose_model="clamp_tiny_rn50", pose_weights=None, seed=0, end=24, chunk=8,
                detect=DetectConfig(name="file", boxes=DEFAULT_BOXES),
                tracker=TrackerConfig(min_track_length=5),
                smoother=SmootherConfig(min_confidence=1e-12),
                pose=PoseConfig(flip_test=False), exports=("csv", "dlc"))
    base.update(kw)
    return RunConfig(**base)


def _tasks(root, out, names=VIDEOS + (CORRUPT,), **kw):
    return plan_tasks([(root / n, out / n.split("/")[0]) for n in names], _cfg(**kw))


@pytest.fixture(scope="module")
def reference(collection, tmp_path_factory):
    """``run_video`` on each video, as ``clamp-track run`` does it, with one torch thread."""
    import torch

    out = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stores = {}
        for name in VIDEOS:
            video = collection / name
            cfg = video_config(_cfg(), video)
            stores[name] = run_video(video, cfg, out / name.split("/")[0],
                                     models=Models(cfg)).store
    finally:
        torch.set_num_threads(threads)
    return stores


def assert_same_store(path, ref):
    with ResultStore.open(path, readonly=True) as a, ResultStore.open(ref, readonly=True) as b:
        assert a.complete and b.complete
        assert a.meta("config") == b.meta("config")
        assert a.track_ids() == b.track_ids()
        pd.testing.assert_frame_equal(a.tidy(), b.tidy(), check_exact=True)
        pd.testing.assert_frame_equal(a.boxes(), b.boxes(), check_exact=True)
        assert len(a.tidy()) > 0
    csv = path.name.replace(".clamp.sqlite", "").rsplit(".", 1)[0] + ".clamp.csv"
    assert (path.parent / csv).read_bytes() == (ref.parent / csv).read_bytes()


def _by_video(results):
    return {"/".join(os.path.normpath(r.video).split(os.sep)[-2:]): r for r in results}


# ------------------------------------------------------------------------------- planning


def test_per_video_boxes_and_output_folders(collection, tmp_path):
    tasks = _tasks(collection, tmp_path)
    assert [t.cfg.detect.boxes for t in tasks] == [
        str(collection / n).rsplit(".", 1)[0] + ".det.txt" for n in VIDEOS + (CORRUPT,)]
    assert tasks[0].store == tmp_path / "camA" / "cows.mp4.clamp.sqlite"
    # the same video twice is one task; two videos writing one store is an error
    assert len(plan_tasks([(collection / VIDEOS[0], None)] * 2, _cfg())) == 1
    twin = tmp_path / "other" / "cows.mp4"
    twin.parent.mkdir()
    shutil.copy(collection / VIDEOS[0], twin)
    with pytest.raises(InputError, match="would both write"):
        plan_tasks([(collection / VIDEOS[0], tmp_path), (twin, tmp_path)], _cfg())
    other_format = tmp_path / "other" / "cows.avi"  # a different store, the same cows.clamp.csv
    shutil.copy(collection / VIDEOS[0], other_format)
    with pytest.raises(InputError, match="would both write"):
        plan_tasks([(twin, None), (other_format, None)], _cfg())


def test_one_mot_file_for_several_videos_is_refused_but_megadetector_json_is_shared(
        collection, tmp_path):
    mot = str(collection / "camA/cows.det.txt")
    pairs = [(collection / n, tmp_path) for n in VIDEOS[:2]]
    with pytest.raises(InputError, match=r"holds the boxes of one video.*\{stem\}"):
        plan_tasks(pairs, _cfg(detect=DetectConfig(name="file", boxes=mot)))
    md = tmp_path / "season_md.json"
    md.write_text('{"images": [], "detection_categories": {"1": "animal"}}')
    tasks = plan_tasks(pairs, _cfg(detect=DetectConfig(name="file", boxes=str(md))))
    assert {t.cfg.detect.boxes for t in tasks} == {str(md)}
    with pytest.raises(InputError, match="unknown placeholder"):
        video_config(_cfg(detect=DetectConfig(name="file", boxes="{folder}/x.txt")),
                     collection / VIDEOS[0])


# ------------------------------------------------------------------------------ in-process


class StopAfterFirstChunk(Channel):
    def __init__(self):
        self.events = []

    def send(self, event):
        self.events.append(event)

    def stopping(self):
        return any(e[0] == "chunk" for e in self.events)


def test_process_video_stops_resumes_then_skips(collection, reference, tmp_path):
    import torch

    task = _tasks(collection, tmp_path, names=VIDEOS[1:2])[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        channel = StopAfterFirstChunk()
        first = process_video(task, channel)
        assert first.status == "interrupted" and "run the batch again" in first.error
        assert channel.events[0] == ("start", str(task.video), 0)
        assert store_state(task.store, task.cfg) == ("partial", 8)
        second = process_video(task)
        assert (second.status, second.frames, second.tracks) == ("done", 24, 1)
    finally:
        torch.set_num_threads(threads)
    assert_same_store(task.store, reference[VIDEOS[1]])
    third = process_video(task)
    assert (third.status, third.frames, third.tracks, third.error) == ("skipped", 24, 1, "")
    # other settings: not "complete" any more, so the video would be processed again
    assert store_state(task.store, _cfg(end=16))[0] == "different"


def test_a_same_named_video_of_another_card_is_not_skipped_as_done(collection, reference,
                                                                    tmp_path):
    """Issue 11: card2/cows.mp4 into the folder of card1's complete cows.mp4 store is neither
    skipped (another video's results) nor run over them: it fails, naming both videos."""
    # one config, as with a real detector; no exports: the store alone is complete
    cfg = video_config(_cfg(exports=()), collection / VIDEOS[0])
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(reference[VIDEOS[0]], out / "cows.mp4.clamp.sqlite")
    own = VideoTask(collection / VIDEOS[0], cfg, out)
    assert store_state(own.store, cfg, own.video)[0] == "complete"
    other = tmp_path / "card2" / "cows.mp4"
    other.parent.mkdir()
    shutil.copy(collection / "camB/camel.mp4", other)
    task = VideoTask(other, cfg, out)
    assert store_state(task.store, cfg, task.video)[0] == "other video"
    result = process_video(task)
    assert result.status == "failed" and "holds the results of" in result.error
    assert str(other) in result.error and str(collection / VIDEOS[0]) in result.error
    with ResultStore.open(task.store, readonly=True) as kept, \
            ResultStore.open(reference[VIDEOS[0]], readonly=True) as ref:
        pd.testing.assert_frame_equal(kept.tidy(), ref.tidy())  # card1's results untouched


def test_failures_are_results_not_exceptions(collection, tmp_path):
    corrupt = _tasks(collection, tmp_path, names=(CORRUPT,))[0]
    result = process_video(corrupt)
    assert result.status == "failed" and "corrupt.mp4: not a readable video" in result.error
    lonely = tmp_path / "lonely.mp4"
    shutil.copy(collection / VIDEOS[0], lonely)
    result = process_video(VideoTask(lonely, video_config(_cfg(), lonely), tmp_path))
    assert result.status == "failed"
    assert result.error.startswith(f"{tmp_path / 'lonely.det.txt'}: boxes file not found")


def test_combined_csv_has_every_finished_video(collection, reference, tmp_path):
    results = [batch.VideoResult(str(collection / n), "done", store=str(reference[n]))
               for n in VIDEOS]
    results.append(batch.VideoResult(str(collection / CORRUPT), "failed", error="x"))
    path = write_combined_csv(results, tmp_path / "all.csv")
    table = pd.read_csv(path)
    assert list(table.columns[:5]) == ["video", "frame", "time_s", "track", "keypoint"]
    for name in VIDEOS:
        with ResultStore.open(reference[name], readonly=True) as store:
            tidy = store.tidy()
        part = table[table.video == str(collection / name)].drop(columns="video")
        np.testing.assert_allclose(part["x"].to_numpy(), tidy["x"].to_numpy(), rtol=1e-6)
        assert len(part) == len(tidy)
    assert not list(tmp_path.glob(".all.csv*"))  # no temporary file left


def test_dask_is_optional(monkeypatch):
    import subprocess
    import sys

    code = ("import sys, clamp_track.pipelines.batch, clamp_track.commands.batch; "
            "print('distributed' in sys.modules, 'dask' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'clamp-track\[dask\]'"):
        batch.DaskBackend("tcp://127.0.0.1:8786", 1, batch.WorkerSetup(), 1)


# ---------------------------------------------------------------------- real LocalCluster


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield cluster, client


def test_dask_batch_matches_run_fails_one_and_skips_on_rerun(collection, reference, cluster,
                                                            tmp_path):
    _, client = cluster
    assert set(client.run(lambda: __import__("torch").get_num_threads()).values()) == {1}
    tasks = _tasks(collection, tmp_path)
    seen = []
    bcfg = BatchConfig(dask=cluster[0].scheduler_address, summary=str(tmp_path / "summary.csv"))
    results = _by_video(run_batch(tasks, bcfg, progress=seen.append))

    assert results[CORRUPT].status == "failed"
    assert "corrupt.mp4: not a readable video" in results[CORRUPT].error
    for name in VIDEOS:
        assert (results[name].status, results[name].frames) == ("done", 24)
        assert_same_store(tmp_path / name.split("/")[0] / f"{name.split('/')[1]}.clamp.sqlite",
                          reference[name])
    # models load once per worker, not once per video (4 tasks, 2 workers)
    loads = client.run(batch.model_loads)
    assert sum(loads.values()) <= 2 and all(n <= 1 for n in loads.values())
    summary = pd.read_csv(tmp_path / "summary.csv", keep_default_na=False)
    assert list(summary.columns) == list(batch.SUMMARY_COLUMNS)
    assert summary.status.tolist() == ["done", "done", "done", "failed"]
    assert summary.frames.tolist() == [24, 24, 24, 0] and summary.tracks.tolist()[:2] == [1, 1]
    # frames come from per-chunk events, which may trail the results: at most all of them
    assert seen[-1].done == 3 and seen[-1].failed == 1 and 0 < seen[-1].frames <= 72
    assert any(p.running and p.frames for p in seen)  # per-chunk progress arrived

    again = _by_video(run_batch(tasks, bcfg))
    assert [again[n].status for n in VIDEOS] == ["skipped"] * 3
    assert again[CORRUPT].status == "failed"  # failures are tried again
    assert [again[n].frames for n in VIDEOS] == [24, 24, 24]


@pytest.mark.slow
def test_dask_batch_survives_a_killed_worker(collection, reference, cluster, tmp_path):
    _, client = cluster
    tasks = _tasks(collection, tmp_path, names=VIDEOS)
    killed = []

    def kill_a_busy_worker(progress):
        if killed or not progress.frames:
            return
        busy = [(addr, str(k)) for addr, keys in client.processing().items() for k in keys
                if str(k).startswith("clamp-track-")]
        if busy:
            addr, key = busy[0]
            pid = client.run(os.getpid, workers=[addr])[addr]
            os.kill(pid, signal.SIGKILL)  # like the kernel's OOM killer
            killed.append(key)

    bcfg = BatchConfig(dask=cluster[0].scheduler_address)
    results = _by_video(run_batch(tasks, bcfg, progress=kill_a_busy_worker))
    assert killed
    # the workers' events: the video of the killed task started twice (3 videos, 4 starts)
    topic = killed[0][:len("clamp-track-") + 12]
    starts = [msg[1] for _, msg in client.get_events(topic) if msg[0] == "start"]
    assert len(starts) == 4 and len(set(starts)) == 3
    assert [results[n].status for n in VIDEOS] == ["done"] * 3
    for name in VIDEOS:
        assert_same_store(tmp_path / name.split("/")[0] / f"{name.split('/')[1]}.clamp.sqlite",
                          reference[name])
    client.wait_for_workers(2, timeout=60)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_a_rerun_continues(collection, reference, cluster, tmp_path):
    tasks = _tasks(collection, tmp_path, names=VIDEOS)
    bcfg = BatchConfig(dask=cluster[0].scheduler_address, summary=str(tmp_path / "s.csv"))

    pressed = []

    def press_ctrl_c(progress):
        if progress.frames and not pressed:
            pressed.append(True)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(tasks, bcfg, progress=press_ctrl_c)
    # a video may still finish (the stop is seen within a chunk or two); none is left unknown
    summary = pd.read_csv(tmp_path / "s.csv").set_index("video").status
    assert "interrupted" in set(summary) and set(summary) <= {"interrupted", "done"}
    # (whether a video was caught mid-way depends on timing; resuming a partial store is
    # covered by tests/pipelines/test_run.py)
    states = {str(t.video): store_state(t.store, t.cfg)[0] for t in tasks}
    for video, status in summary.items():  # interrupted: stopped at a chunk, or never started
        assert states[video] in (("complete",) if status == "done" else ("partial", "missing"))
    results = run_batch(tasks, bcfg)
    assert [r.status for r in results] == [
        "skipped" if summary[str(t.video)] == "done" else "done" for t in tasks]
    for task, name in zip(tasks, VIDEOS):
        assert_same_store(task.store, reference[name])


# ------------------------------------------------------------------------ local process pool


@pytest.mark.slow
def test_local_pool_matches_run_and_survives_a_killed_worker(collection, reference, tmp_path,
                                                             monkeypatch):
    import psutil

    # two cores -> two workers of one torch thread each, like the reference run
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)

    tasks = _tasks(collection, tmp_path)
    killed = []

    def kill_a_worker(progress):
        if killed or not progress.frames:
            return
        for child in psutil.Process().children():
            if any("spawn_main" in part for part in child.cmdline()):
                child.send_signal(signal.SIGKILL)
                killed.append(child.pid)
                return

    results = _by_video(run_batch(tasks, BatchConfig(), progress=kill_a_worker))
    assert killed
    assert results[CORRUPT].status == "failed"
    for name in VIDEOS:
        assert results[name].status == "done", results[name].error
        assert_same_store(tmp_path / name.split("/")[0] / f"{name.split('/')[1]}.clamp.sqlite",
                          reference[name])


# ------------------------------------------------------------------------------ unit logic


def test_machine_plan(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(batch, "_gpu_count", lambda: 0)
    assert batch.machine_plan(_cfg()) == (4, batch.WorkerSetup(threads=2, gpus=0))
    assert batch.machine_plan(_cfg(), n_videos=1) == (1, batch.WorkerSetup(threads=8, gpus=0))
    assert batch.machine_plan(_cfg(), workers=3)[1].threads == 2
    monkeypatch.setattr(batch, "_gpu_count", lambda: 2)
    assert batch.machine_plan(_cfg()) == (2, batch.WorkerSetup(threads=4, gpus=2))
    on_one = _cfg(pose=PoseConfig(device="cuda:1"))
    assert batch.machine_plan(on_one) == (1, batch.WorkerSetup(threads=8, gpus=0))
    on_cpu = _cfg(pose=PoseConfig(device="cpu"))
    assert batch.machine_plan(on_cpu) == (4, batch.WorkerSetup(threads=2, gpus=0))


class LosingBackend:
    """Every task's worker dies; tasks 'start' (send their start event) from a given attempt."""

    def __init__(self, starts_from: int):
        from concurrent.futures import Future

        self.Future, self.starts_from, self.submitted, self.queue = Future, starts_from, [], []

    def submit(self, task):
        self.submitted.append(task.video)
        if len(self.submitted) >= self.starts_from:
            self.queue.append(("start", str(task.video), 0))
        future = self.Future()
        future.set_result(None)
        return future

    def outcome(self, future, task):
        return batch._Lost("its worker process died")

    def events(self):
        out, self.queue = self.queue, []
        return out


@pytest.mark.parametrize("starts_from", [1, 3])
def test_a_video_whose_worker_keeps_dying_fails_after_its_retries(tmp_path, starts_from):
    task = VideoTask(tmp_path / "v.mp4", _cfg(), tmp_path)
    backend = LosingBackend(starts_from)
    results = [None]
    driver = batch._Driver(backend, [task], results, batch._Tally(1, 0), BatchConfig(retries=2),
                           None)
    driver.run([0])
    # attempts that never started (a broken pool's queue) do not count against the retries
    assert len(backend.submitted) == 3 + starts_from - 1
    assert results[0].status == "failed"
    assert results[0].error == "its worker process died; gave up after 3 attempts"
