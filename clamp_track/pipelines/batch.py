"""``clamp-track batch``: many videos, one task each, on local worker processes or a Dask cluster.

Each video is one task that calls :func:`~clamp_track.pipelines.run.run_video`, so it writes
exactly the store and exports ``clamp-track run`` writes. The tasks run on

* a local pool of worker **processes** (:class:`concurrent.futures.ProcessPoolExecutor`, spawned)
  sized to the machine: one per GPU, or a few CPU workers with the cores divided among them;
* a ``distributed.LocalCluster`` (``dask="local"``) or an existing Dask scheduler
  (``dask="tcp://host:port"``); Dask is imported only then.

Each worker process (or thread) keeps the last :class:`~clamp_track.pipelines.run.Models` it
built, so the model loads once per worker, not once per video. A video whose store is complete
(and made with the same settings) is skipped; an incomplete one resumes from its last committed
chunk; a video that fails is recorded with its error and the others go on; a video whose worker
died is tried again (Dask reschedules it; the local pool is rebuilt), up to ``retries`` times.
On Ctrl+C the workers stop at their next chunk, leaving resumable stores.

Workers report ``("start", video, done)`` and ``("chunk", video, done, total)`` events (through
a multiprocessing queue, or Dask's event log); the driver turns them into a
:class:`BatchProgress` and keeps ``batch_summary.csv`` up to date.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from clamp_track.config import atomic_write_text, temp_beside
from clamp_track.errors import ClampTrackError, InputError
from clamp_track.io.store import ResultStore, partial_path, store_path
from clamp_track.pipelines.run import (
    Cancelled,
    Models,
    Progress,
    RunConfig,
    corrected_table,
    exports_done,
    run_video,
    same_settings,
)

log = logging.getLogger(__name__)

#: Where the ``file`` detector finds each video's boxes unless ``--boxes`` says otherwise.
DEFAULT_BOXES = "{dir}/{stem}.det.txt"
#: Columns of ``batch_summary.csv``.
SUMMARY_COLUMNS = ("video", "status", "frames", "tracks", "seconds", "error", "store")
#: Seconds between rewrites of the summary file while the batch runs.
SUMMARY_EVERY_S = 10.0


# ============================================================================================
# Value types


@dataclass(frozen=True)
class BatchConfig:
    """Where and how the tasks of a batch run (what each video gets is its ``RunConfig``).

    Attributes:
        workers: Parallel workers; ``None`` sizes the pool to the machine (see
            :func:`machine_plan`). Ignored for an existing Dask scheduler (its workers count).
        dask: ``None`` (local process pool), ``"local"`` (a ``distributed.LocalCluster``) or
            the address of a running scheduler, e.g. ``"tcp://10.0.0.5:8786"``.
        retries: How many times a video is tried again after the worker running it died
            (killed, out of memory, node lost) before it is reported as failed. For an
            existing scheduler its own ``distributed.scheduler.allowed-failures`` applies.
        summary: ``batch_summary.csv`` path, rewritten (atomically) while the batch runs;
            ``None`` writes none.
        behaviour: A :class:`~clamp_track.pipelines.behaviour.BehaviourConfig`: measure the
            behaviour of every finished video at the end (files beside its store) and add
            the per-animal summaries to the summary file; ``None``: no behaviour.
    """

    workers: int | None = None
    dask: str | None = None
    retries: int = 2
    summary: str | None = None
    behaviour: object = None

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.dask not in (None, "local") and "://" not in self.dask:
            raise ValueError(f"--dask {self.dask!r}: use 'local' or a scheduler address such "
                             "as tcp://HOST:8786")


@dataclass(frozen=True)
class VideoTask:
    """One video of a batch: what :func:`process_video` runs on a worker.

    Attributes:
        video: The video file.
        cfg: Its run configuration (with its own boxes file, see :func:`video_config`).
        out_dir: Folder for its store and exports (``None``: beside the video).
        overwrite: Process it even if its store is complete; replace stores with corrections.
    """

    video: Path
    cfg: RunConfig
    out_dir: Path | None = None
    overwrite: bool = False

    @property
    def store(self) -> Path:
        """The result store this task writes."""
        return store_path(self.video, self.out_dir)


@dataclass(frozen=True)
class WorkerSetup:
    """Per-worker settings the driver decides for the machine.

    Attributes:
        threads: torch threads per worker (``None``: leave the worker's default).
        gpus: GPUs to spread the workers over (worker ``i`` uses GPU ``i % gpus``); 0 = none.
    """

    threads: int | None = None
    gpus: int = 0


@dataclass
class VideoResult:
    """What happened to one video: a row of ``batch_summary.csv``.

    ``status`` is ``done`` (processed now), ``skipped`` (complete before), ``failed`` (see
    ``error``), ``interrupted`` (stopped by Ctrl+C; a re-run continues it) or ``pending``
    (not finished yet, in summaries written while the batch runs).
    """

    video: str
    status: str
    frames: int = 0
    tracks: int = 0
    seconds: float = 0.0
    error: str = ""
    store: str = ""


@dataclass(frozen=True)
class BatchProgress:
    """The state of a batch, passed to the progress callback.

    Attributes:
        total: Videos in the batch.
        done: Videos processed in this run.
        skipped: Videos complete before this run.
        failed: Videos that failed.
        running: Videos started and not finished.
        frames: Frames processed in this run (all workers).
        elapsed_s: Seconds since the batch started.
        eta_s: Estimated seconds to go (``None`` until something finished or progressed).
        finished: Videos that finished since the previous call.
    """

    total: int
    done: int
    skipped: int
    failed: int
    running: int
    frames: int
    elapsed_s: float
    eta_s: float | None
    finished: tuple[VideoResult, ...] = ()

    @property
    def fps(self) -> float:
        """Frames per second over the whole batch so far."""
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0


# ============================================================================================
# Planning


def plan_tasks(videos: Sequence[tuple[Path, Path | None]], cfg: RunConfig, *,
               overwrite: bool = False) -> list[VideoTask]:
    """One task per distinct video, each with its own config and output folder.

    Args:
        videos: ``(video, output folder or None)`` pairs, in order.
        cfg: The settings of the batch.
        overwrite: Process complete videos again (see :class:`VideoTask`).

    Returns:
        The tasks, duplicates of a video dropped.

    Raises:
        InputError: Two videos would write the same files (same stem, same output folder),
            or one MOT boxes file is given for several videos.
    """
    tasks, seen, stores = [], set(), {}
    for video, out in videos:
        key = os.path.realpath(video)
        if key in seen:
            continue
        seen.add(key)
        task = VideoTask(Path(video), video_config(cfg, Path(video)), out, overwrite)
        # exports are named by the stem: a.mp4 and a.avi would share a.clamp.csv
        outputs = task.store.parent / task.video.stem
        other = stores.setdefault(os.path.abspath(outputs), task.video)
        if other != task.video:
            raise InputError(f"{other} and {task.video} would both write {outputs}.*; give "
                             "them separate output folders (their own -o DIR) or rename one")
        tasks.append(task)
    _check_shared_boxes(cfg, len(tasks))
    return tasks


def video_config(cfg: RunConfig, video: Path) -> RunConfig:
    """The run configuration of one video of a batch.

    With the ``file`` detector, ``detect.boxes`` may be a pattern with ``{dir}`` (the video's
    folder), ``{stem}`` (its name without extension) and ``{name}`` placeholders, e.g. the
    default ``{dir}/{stem}.det.txt`` (a MOT ``det.txt`` beside each video); a plain path (a
    MegaDetector JSON covering all the videos, matched by video name) is used as it is.
    """
    boxes = cfg.detect.boxes
    if cfg.detect.name != "file" or not boxes or "{" not in boxes:
        return cfg
    try:
        path = boxes.format(dir=video.parent, stem=video.stem, name=video.name)
    except (KeyError, IndexError, ValueError):
        raise InputError(f"--boxes {boxes!r}: unknown placeholder; use {{dir}}, {{stem}} and "
                         "{name}, e.g. boxes/{stem}.det.txt") from None
    return replace(cfg, detect=replace(cfg.detect, boxes=str(Path(path))))


def _check_shared_boxes(cfg: RunConfig, n_videos: int) -> None:
    """One boxes file for several videos must be a MegaDetector JSON (it names its videos)."""
    boxes = cfg.detect.boxes
    if cfg.detect.name != "file" or not boxes or "{" in boxes or n_videos < 2:
        return
    path = Path(boxes)
    if not path.is_file():
        raise InputError(f"{path}: boxes file not found; pass a MegaDetector JSON covering the "
                         f"videos or a pattern such as {DEFAULT_BOXES}")
    with open(path, "rb") as fh:
        is_json = path.suffix.lower() == ".json" or fh.read(64).lstrip().startswith(b"{")
    if not is_json:
        raise InputError(f"{path}: a MOT det.txt holds the boxes of one video, not {n_videos}; "
                         f"put <video stem>.det.txt beside each video (the default) or pass "
                         "--boxes with {stem}, e.g. boxes/{stem}.det.txt")


def store_state(path: Path, cfg: RunConfig, video: Path | None = None) -> tuple[str, int]:
    """What is already in a video's store.

    Returns:
        ``(state, next_frame)``: ``missing``, ``complete`` (made with ``cfg`` and every
        export of ``cfg`` is there), ``unexported`` (complete, but an export is missing: a
        resumed run writes it), ``partial`` (resumes at ``next_frame``; the hidden working
        store of an unfinished run counts), ``different`` (other settings), ``other video``
        (the store was made from another video, e.g. a same-named file of another card: never
        skipped nor resumed, see :func:`~clamp_track.pipelines.run.run_video`) or
        ``unreadable``; ``next_frame`` is ``cfg.start`` unless partial.
    """
    for store_file in (partial_path(path), path):  # the newest unfinished run first
        if not store_file.is_file():
            continue
        try:
            with ResultStore.open(store_file, readonly=True) as store:
                if not same_settings(store.meta("config"), cfg):
                    if store_file != path:
                        continue  # a replacement run given up: the store itself decides
                    return "different", cfg.start
                if (video is not None and Path(video).is_file() and store.video_ref.check(
                        Path(video), store_file, store.video_info) is not None):
                    return "other video", cfg.start
                if store.complete and store_file == path:
                    if exports_done(store, cfg.exports):
                        return "complete", cfg.start
                    return "unexported", cfg.start
                return "partial", (store.meta("resume") or {}).get("next", cfg.start)
        except InputError:
            if store_file == path:
                return "unreadable", cfg.start
    return "missing", cfg.start


# ============================================================================================
# Worker side


class Channel:
    """How a task reports progress to the driver and learns that the batch is stopping.

    This base class reports nothing and never stops (a task run in-process).
    """

    def send(self, event: tuple) -> None:
        """Report an event (a tuple of plain values) to the driver."""

    def stopping(self) -> bool:
        """Whether the driver asked the workers to stop."""
        return False

    def progress(self, task: VideoTask) -> Callable[[Progress], None]:
        """The ``run_video`` progress callback of ``task``: report, and stop when asked."""
        video = str(task.video)

        def report(p: Progress) -> None:
            self.send(("chunk", video, p.done, p.total))
            if self.stopping():
                raise Cancelled(f"{video}: stopped by the batch")

        return report


_local = threading.local()
_loads_lock = threading.Lock()
_loads = 0


def model_loads() -> int:
    """How many times this process built models for batch tasks (one per worker thread)."""
    return _loads


def worker_models(cfg: RunConfig) -> Models:
    """The models of this worker thread, built on first use and rebuilt only for other weights."""
    global _loads
    key = (cfg.pose_model, cfg.pose_weights, cfg.keypoints, cfg.seed, cfg.pose)
    cached = getattr(_local, "models", None)
    if cached is None or cached[0] != key:
        if cached is not None:
            cached[1].close()
        _local.models = None  # free the old model before loading the new one
        _local.models = (key, Models(cfg))
        with _loads_lock:
            _loads += 1
    return _local.models[1]


def process_video(task: VideoTask, channel: Channel | None = None) -> VideoResult:
    """Run one video on this worker: skip, resume or process it; never raises for one video.

    Args:
        task: The video and its settings.
        channel: Progress and stop signals (default: none).

    Returns:
        Its :class:`VideoResult` (``failed`` with the error when anything went wrong).
    """
    channel = channel or Channel()
    started = time.perf_counter()
    try:
        if channel.stopping():
            return _interrupted(task)
        state, next_frame = store_state(task.store, task.cfg, task.video)
        if state == "complete" and not task.overwrite:
            return skipped_result(task)
        _check_boxes_file(task.cfg)
        channel.send(("start", str(task.video), next_frame - task.cfg.start))
        summary = run_video(task.video, task.cfg, task.out_dir,
                            resume=state in ("partial", "unexported"),
                            overwrite=task.overwrite, models=worker_models(task.cfg),
                            progress=channel.progress(task))
    except Cancelled:
        return _interrupted(task, time.perf_counter() - started)
    except ClampTrackError as exc:
        return _failed(task, str(exc), time.perf_counter() - started)
    except Exception as exc:  # one video's crash (decoder, out of memory) must not stop others
        log.warning("%s failed", task.video, exc_info=True)
        return _failed(task, f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
    return VideoResult(str(task.video), "done", summary.frames, summary.tracks,
                       round(summary.seconds, 3), "", str(summary.store))


def _check_boxes_file(cfg: RunConfig) -> None:
    if cfg.detect.name == "file" and not Path(cfg.detect.boxes).is_file():
        raise InputError(f"{cfg.detect.boxes}: boxes file not found; put this video's boxes "
                         f"there or point --boxes elsewhere (default pattern {DEFAULT_BOXES})")


def skipped_result(task: VideoTask) -> VideoResult:
    """The result of a video whose complete store is reused."""
    with ResultStore.open(task.store, readonly=True) as store:
        frames = len(store.frame_times()[0])
        tracks = len(store.track_ids())
    return VideoResult(str(task.video), "skipped", frames, tracks, 0.0, "", str(task.store))


def _failed(task: VideoTask, error: str, seconds: float = 0.0) -> VideoResult:
    error = " ".join(error.split())[:500]  # one line in the summary table
    return VideoResult(str(task.video), "failed", seconds=round(seconds, 3), error=error,
                       store=str(task.store))


def _interrupted(task: VideoTask, seconds: float = 0.0) -> VideoResult:
    return VideoResult(str(task.video), "interrupted", seconds=round(seconds, 3),
                       error="interrupted; run the batch again to continue",
                       store=str(task.store))


def setup_worker(setup: WorkerSetup, slot: int) -> None:
    """Apply ``setup`` in this worker (once per thread): torch threads, its GPU, allocator.

    The allocator tuning is :func:`clamp_track.runtime.tune_allocator`.
    """
    if getattr(_local, "setup", None) == (setup, slot):
        return
    import torch

    from clamp_track.runtime import tune_allocator

    tune_allocator()
    if setup.threads:
        torch.set_num_threads(setup.threads)
    if setup.gpus:
        torch.cuda.set_device(slot % setup.gpus)
    _local.setup = (setup, slot)


# ============================================================================================
# Local process pool


class _QueueChannel(Channel):
    """A pool worker's channel: a multiprocessing queue and event shared with the driver."""

    def __init__(self, events, stop):
        self.events, self.stop = events, stop

    def send(self, event: tuple) -> None:
        """Put the event on the driver's queue."""
        self.events.put(event)

    def stopping(self) -> bool:
        """Whether the driver set the stop event."""
        return self.stop.is_set()


_pool_channel: Channel | None = None


def _init_pool_worker(setup: WorkerSetup, counter, events, stop) -> None:
    """Initialiser of a pool process: Ctrl+C is the driver's business; claim a slot."""
    global _pool_channel
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    setup_worker(setup, slot)
    _pool_channel = _QueueChannel(events, stop)


def _pool_task(task: VideoTask) -> VideoResult:
    return process_video(task, _pool_channel)


@dataclass
class _Lost:
    """A task whose worker went away; it is submitted again unless it used up its retries."""

    reason: str


class ProcessBackend:
    """Tasks on spawned worker processes; a pool broken by a dead worker is rebuilt."""

    def __init__(self, workers: int, setup: WorkerSetup):
        import multiprocessing

        self._ctx = multiprocessing.get_context("spawn")  # never fork a process holding torch
        self._events = self._ctx.Queue()
        self._stop = self._ctx.Event()
        self._workers, self._setup = workers, setup
        self._pool = None

    def _new_pool(self):
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        counter = self._ctx.Value("i", 0)
        self._pool = ProcessPoolExecutor(
            self._workers, mp_context=self._ctx, initializer=_init_pool_worker,
            initargs=(self._setup, counter, self._events, self._stop))

    def submit(self, task: VideoTask):
        """Start ``task``; returns its future."""
        from concurrent.futures.process import BrokenProcessPool

        if self._pool is None:
            self._new_pool()
        try:
            return self._pool.submit(_pool_task, task)
        except BrokenProcessPool:
            self._new_pool()
            return self._pool.submit(_pool_task, task)

    def outcome(self, future, task: VideoTask) -> VideoResult | _Lost:
        """The result of a finished future."""
        from concurrent.futures.process import BrokenProcessPool

        if future.cancelled():
            return _interrupted(task)
        exc = future.exception()
        if isinstance(exc, BrokenProcessPool):
            return _Lost("its worker process died (killed, or out of memory)")
        if exc is not None:
            return _failed(task, f"{type(exc).__name__}: {exc}")
        return future.result()

    def events(self) -> list[tuple]:
        """Events the workers sent since the last call."""
        return _drain(self._events)

    def stop(self) -> None:
        """Ask running tasks to stop at their next chunk and cancel those not started."""
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Shut the pool down."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


# ============================================================================================
# Dask


class _DaskChannel(Channel):
    """A Dask task's channel: the scheduler's event log and a named ``distributed.Event``."""

    CHECK_EVERY_S = 2.0  # is_set() asks the scheduler; chunks take seconds anyway

    def __init__(self, name: str):
        self.name = name
        self._checked = -float("inf")
        self._stop = False

    def send(self, event: tuple) -> None:
        """Log the event under the batch's topic."""
        from distributed import get_worker

        get_worker().log_event(self.name, list(event))

    def stopping(self) -> bool:
        """Whether the batch's stop event is set (asked at most every few seconds)."""
        from distributed import Event

        now = time.monotonic()
        if not self._stop and now - self._checked >= self.CHECK_EVERY_S:
            self._checked = now
            self._stop = Event(self.name).is_set()
        return self._stop


def _dask_task(task: VideoTask, setup: WorkerSetup, name: str) -> VideoResult:
    from distributed import get_worker

    worker_name = get_worker().name
    setup_worker(setup, worker_name if isinstance(worker_name, int) else 0)
    return process_video(task, _DaskChannel(name))


def _ignore_sigint() -> None:
    """Leave Ctrl+C to the driver, which stops the tasks at a chunk (run in each worker)."""
    import signal

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the worker's main thread: nothing to protect
        pass


class DaskBackend:
    """Tasks on a Dask cluster: a new ``LocalCluster`` or an existing scheduler."""

    def __init__(self, address: str, workers: int, setup: WorkerSetup, retries: int):
        from clamp_track.errors import require

        distributed = require("distributed", "dask", "--dask")
        self.cluster = None
        if address == "local":
            self.cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=None, scheduler_kwargs={"allowed_failures": retries})
            address = self.cluster.scheduler_address
        try:
            self.client = distributed.Client(address, timeout="15s")
        except (OSError, TimeoutError) as exc:
            self.close()
            raise ClampTrackError(
                f"{address}: cannot reach the Dask scheduler ({exc}); start it with `dask "
                f"scheduler` and workers with `dask worker {address}`, or use --dask local"
            ) from None
        if self.cluster is not None:  # its workers share our terminal, and so its Ctrl+C
            self.client.register_worker_callbacks(setup=_ignore_sigint)
        self.name = f"clamp-track-{uuid.uuid4().hex[:12]}"
        self._setup = setup
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self.client.subscribe_topic(self.name, lambda event: self._events.put(tuple(event[1])))
        self._stop = distributed.Event(self.name, client=self.client)
        self._killed_worker = distributed.KilledWorker

    def submit(self, task: VideoTask):
        """Start ``task``; returns its future."""
        key = f"{self.name}-{task.video.stem}-{uuid.uuid4().hex[:6]}"
        return self.client.submit(_dask_task, task, self._setup, self.name, key=key,
                                  pure=False)

    def outcome(self, future, task: VideoTask) -> VideoResult | _Lost:
        """The result of a finished future."""
        if future.status == "cancelled":  # e.g. the cluster was restarted
            return _interrupted(task) if self._stop.is_set() else _Lost(
                "its task was cancelled on the cluster")
        if future.status == "error":
            exc = future.exception()
            if isinstance(exc, self._killed_worker):
                return _failed(task, f"workers died while processing it (killed, or out of "
                                     f"memory): {exc}")
            return _failed(task, f"{type(exc).__name__}: {exc}")
        return future.result()

    def events(self) -> list[tuple]:
        """Events the workers logged since the last call."""
        return _drain(self._events)

    def stop(self) -> None:
        """Ask tasks to stop: running ones at their next chunk, queued ones at once."""
        self._stop.set()

    def close(self) -> None:
        """Disconnect (and shut down a cluster started here)."""
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self.cluster is not None:
            self.cluster.close()


# ============================================================================================
# Driver


def machine_plan(cfg: RunConfig, workers: int | None = None, n_videos: int | None = None,
                 ) -> tuple[int, WorkerSetup]:
    """Workers and per-worker settings for this machine.

    One worker per GPU when the pose model may use CUDA (``device`` ``auto`` or ``cuda``;
    one for an explicit ``cuda:N``); otherwise ``min(4, cores)`` CPU workers; never more than
    there are videos. The cores are divided among the workers' torch threads: on a 2-core
    machine, 2 workers x 1 thread did 2.4x the videos/hour of 1 worker x 2 threads
    (``benchmarks/batch_speed.py``), as much of a video's work is serial.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    gpus = _gpu_count() if cfg.pose.device in ("auto", "cuda") else 0
    if workers is None:  # an explicit cuda:N is one GPU for all: one worker
        workers = 1 if cfg.pose.device.startswith("cuda:") else gpus or min(4, cores)
    workers = max(1, min(workers, n_videos or workers))
    return workers, WorkerSetup(threads=max(1, cores // workers), gpus=gpus)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class _Tally:
    """Counts, frames and per-video progress behind :class:`BatchProgress`."""

    def __init__(self, total: int, skipped: int):
        self.total, self.skipped, self.todo = total, skipped, total - skipped
        self.done = self.failed = self.frames = 0
        self.t0 = time.perf_counter()
        self.running: dict[str, tuple[int, int]] = {}  # video -> (done, total) frames
        self.finished: list[VideoResult] = []
        self.ended: set[str] = set()  # videos with a final result

    def event(self, event: tuple) -> None:
        kind, video = event[0], event[1]
        if video in self.ended:  # events travel apart from results and may trail them
            return
        if kind == "start":
            self.running[video] = (int(event[2]), 0)
        elif kind == "chunk":
            before = self.running.get(video, (0, 0))[0]
            self.frames += max(int(event[2]) - before, 0)
            self.running[video] = (int(event[2]), int(event[3]))

    def result(self, result: VideoResult) -> None:
        self.running.pop(result.video, None)
        self.ended.add(result.video)
        if result.status == "skipped":  # completed elsewhere since the batch started
            self.skipped += 1
            self.todo -= 1
        self.done += result.status == "done"
        self.failed += result.status == "failed"
        self.finished.append(result)

    def snapshot(self) -> BatchProgress:
        elapsed = time.perf_counter() - self.t0
        partial = sum(d / t for d, t in self.running.values() if t)
        progressed = self.done + self.failed + partial
        eta = None
        if progressed > 0 and elapsed > 0:
            eta = max(self.todo - progressed, 0.0) * elapsed / progressed
        snap = BatchProgress(self.total, self.done, self.skipped, self.failed,
                             len(self.running), self.frames, elapsed, eta, tuple(self.finished))
        self.finished = []
        return snap


def run_batch(tasks: Sequence[VideoTask], bcfg: BatchConfig = BatchConfig(),
              progress: Callable[[BatchProgress], None] | None = None) -> list[VideoResult]:
    """Process every task; the results come back in the order of ``tasks``.

    Videos whose store is complete (with the same settings) are skipped without a worker.
    The summary file (``bcfg.summary``) is rewritten as videos finish and at the end, also
    after Ctrl+C. The local pool spawns its worker processes, so scripts must call this under
    ``if __name__ == "__main__":``.

    Args:
        tasks: From :func:`plan_tasks`.
        bcfg: Where the tasks run.
        progress: Called from this thread after every change (events are polled a few times a
            second).

    Returns:
        One :class:`VideoResult` per task.

    Raises:
        KeyboardInterrupt: After Ctrl+C, once the running videos stopped at a committed chunk
            (a second Ctrl+C stops waiting); a re-run continues them.
    """
    results: list[VideoResult | None] = [None] * len(tasks)
    for i, task in enumerate(tasks):
        if not task.overwrite and store_state(task.store, task.cfg, task.video)[0] == "complete":
            results[i] = skipped_result(task)
    todo = [i for i, r in enumerate(results) if r is None]
    tally = _Tally(len(tasks), len(tasks) - len(todo))
    behaviour = None
    try:
        if todo:
            with _open_backend(bcfg, tasks[todo[0]].cfg, len(todo)) as backend:
                _Driver(backend, tasks, results, tally, bcfg, progress).run(todo)
        if bcfg.behaviour is not None:
            from clamp_track.pipelines.behaviour import batch_behaviour

            behaviour = batch_behaviour([r.store for r in results if r.status in (
                "done", "skipped")], bcfg.behaviour)
    finally:
        if bcfg.summary:
            write_summary(_final(tasks, results), bcfg.summary, behaviour)
    if progress:
        progress(tally.snapshot())
    return results


@contextmanager
def _open_backend(bcfg: BatchConfig, cfg: RunConfig, n_tasks: int):
    """The backend ``bcfg`` asks for, sized for ``n_tasks`` videos; closed on exit."""
    workers, setup = machine_plan(cfg, bcfg.workers, n_tasks)
    if bcfg.dask is None:
        backend = ProcessBackend(workers, setup)
    elif bcfg.dask == "local":
        backend = DaskBackend("local", workers, setup, bcfg.retries)
    else:  # the cluster's workers bring their own threads and GPUs
        backend = DaskBackend(bcfg.dask, workers, WorkerSetup(), bcfg.retries)
    try:
        yield backend
    finally:
        backend.close()


def _final(tasks: Sequence[VideoTask], results) -> list[VideoResult]:
    return [r or VideoResult(str(t.video), "pending", store=str(t.store))
            for t, r in zip(tasks, results)]


@dataclass
class _Driver:
    """Submits the tasks, collects results and events, resubmits lost tasks, stops on Ctrl+C."""

    backend: ProcessBackend | DaskBackend
    tasks: Sequence[VideoTask]
    results: list
    tally: _Tally
    bcfg: BatchConfig
    progress: Callable[[BatchProgress], None] | None
    running: dict = field(default_factory=dict)  # future -> task index
    attempts: dict = field(default_factory=dict)  # task index -> lost attempts
    written: float = 0.0

    def run(self, todo: list[int]) -> None:
        """Run the ``todo`` tasks to the end (or to a clean stop on Ctrl+C)."""
        for i in todo:
            self.running[self.backend.submit(self.tasks[i])] = i
        try:
            self._loop()
        except KeyboardInterrupt:
            log.warning("stopping: running videos finish their current chunk "
                        "(Ctrl+C again to stop waiting)")
            self.backend.stop()
            try:
                self._loop(resubmit=False)
            finally:
                for i in self.running.values():
                    self.results[i] = _interrupted(self.tasks[i])
            raise

    def _loop(self, resubmit: bool = True) -> None:
        while self.running:
            done = [f for f in self.running if f.done()]
            changed = self._events()
            for future in done:
                self._finish(future, resubmit)
            if (done or changed) and self.progress:
                self.progress(self.tally.snapshot())
            if done:
                self._write_summary()
            else:
                time.sleep(0.2)

    def _events(self) -> bool:
        events = self.backend.events()
        for event in events:
            self.tally.event(event)
        return bool(events)

    def _finish(self, future, resubmit: bool) -> None:
        i = self.running.pop(future)
        task = self.tasks[i]
        out = self.backend.outcome(future, task)
        if isinstance(out, _Lost):
            out = self._retry(i, out) if resubmit else _interrupted(task)
            if out is None:
                return
        self.results[i] = out
        self.tally.result(out)

    def _retry(self, i: int, lost: _Lost) -> VideoResult | None:
        """Submit a lost task again unless it used up its retries (``None`` if resubmitted).

        Only attempts that started count: a broken local pool also loses its queued tasks.
        """
        task = self.tasks[i]
        started = self.tally.running.pop(str(task.video), None) is not None
        self.attempts[i] = self.attempts.get(i, 0) + started
        if self.attempts[i] > self.bcfg.retries:
            return _failed(task, f"{lost.reason}; gave up after {self.attempts[i]} attempts")
        if started:
            log.warning("%s: %s; trying again", task.video, lost.reason)
        self.running[self.backend.submit(task)] = i
        return None

    def _write_summary(self) -> None:
        now = time.perf_counter()
        if self.bcfg.summary and now - self.written >= SUMMARY_EVERY_S:
            write_summary(_final(self.tasks, self.results), self.bcfg.summary)
            self.written = now


# ============================================================================================
# Outputs


def write_summary(results: Sequence[VideoResult], path: str | os.PathLike,
                  behaviour: dict | None = None) -> Path:
    """Write ``batch_summary.csv`` (:data:`SUMMARY_COLUMNS`, one row per video) atomically.

    With ``behaviour`` (from :func:`~clamp_track.pipelines.behaviour.batch_behaviour`) the
    rows are per video and animal, with the behaviour summary columns added.
    """
    import pandas as pd

    path = Path(path)
    table = pd.DataFrame([r.__dict__ for r in results], columns=list(SUMMARY_COLUMNS))
    if behaviour is not None:
        from clamp_track.pipelines.behaviour import merge_batch_summary

        table = merge_batch_summary(table, behaviour)
    _writable(path)
    atomic_write_text(path, table.to_csv(index=False))
    return path


def write_combined_csv(results: Sequence[VideoResult], path: str | os.PathLike) -> Path:
    """Write all finished videos' keypoints as one tidy CSV.

    The columns are ``video``, then those of each video's ``.clamp.csv``. Videos are read one
    at a time into a temporary file, which is renamed onto ``path`` at the end.
    """
    from clamp_track.io.export import KEYPOINT_COLUMNS

    path = Path(path)
    _writable(path)
    tmp = temp_beside(path)
    try:
        with open(tmp, "w", newline="") as fh:
            header = True
            for r in results:
                if r.status not in ("done", "skipped"):
                    continue
                with ResultStore.open(r.store, readonly=True) as store:
                    tidy = corrected_table(store)  # as in the per-video .clamp.csv
                tidy.insert(0, "video", r.video)
                tidy.to_csv(fh, header=header, index=False)
                header = False
            if header:  # no video finished: still a valid table
                fh.write(",".join(("video", *KEYPOINT_COLUMNS, "corrected")) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _writable(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{path.parent}: cannot create it ({exc.strerror}); choose another "
                         "place for the batch outputs with -o DIR") from None
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"{path.parent}: not writable; choose another place for the batch "
                         "outputs with -o DIR")


def _drain(events) -> list[tuple]:
    """Everything waiting in a queue, without blocking."""
    out = []
    while True:
        try:
            out.append(events.get_nowait())
        except queue.Empty:
            return out
