"""``clamp-track run``: video -> detections -> tracks -> poses -> smoothed tracks -> files.

Frames stream from the :class:`~clamp_track.io.video.VideoReader` (decoded ahead in a thread) in
chunks of ``chunk`` frames. For each chunk the detector runs on every ``detect_every``-th frame
(batched), the tracker assigns ids (and predicts boxes for the frames in between, refined by the
previous chunk's poses), all crops of the chunk go through the pose model in batches, and the
chunk is committed to the result store together with the state needed to resume. Chunks are
aligned to ``start``, so a resumed run processes exactly the chunks an uninterrupted run would.
After the last frame, tracks are re-linked and filtered, each track is smoothed, and the
exports are written.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from clamp_track.config import dump_yaml, to_dict
from clamp_track.data.transforms import box_iou
from clamp_track.errors import ClampTrackError, InputError
from clamp_track.io.export import dlc_date
from clamp_track.io.store import VIDEO_REF, ResultStore, store_path
from clamp_track.io.video_ref import Fingerprint, FrameSampler, VideoRef, resolve_video
from clamp_track.pipelines.pose import PoseConfig, PoseEstimator
from clamp_track.pipelines.smoother import SmootherConfig
from clamp_track.pipelines.tracker import TrackerConfig
from clamp_track.types import Detections, Frame, PosePredictions

log = logging.getLogger(__name__)


#: What :func:`export` writes: tidy CSV, DeepLabCut files, SLEAP files (``sleap`` extra), NWB
#: with ndx-pose (``nwb`` extra), annotated video, per-track plots.
EXPORT_FORMATS = ("csv", "dlc", "sleap", "nwb", "video", "plot")


@dataclass(frozen=True)
class DetectConfig:
    """Which detector runs, and how often.

    Attributes:
        name: ``torchvision`` (default), ``mmdet``, ``file``, ``motion`` or ``megadetector``.
        every: Run the detector every k-th frame; the tracker predicts the boxes in between.
        score_threshold: Minimum detection score kept (low-score boxes still help ByteTrack
            continue tracks, so this is below the tracker's ``high_threshold``).
        model: torchvision: ``fast``, ``accurate`` or a torchvision detection model name;
            megadetector: ``fast`` (``MDV6-mit-yolov9-c``), ``accurate``
            (``MDV6-apa-rtdetr-c``) or the variant's name; mmdet: the config file.
        checkpoint: mmdet checkpoint file.
        boxes: Boxes file for the ``file`` detector (MegaDetector JSON or MOT ``det.txt``).
        options: Any other setting of the backend (see ``clamp_track.pipelines.detectors``),
            e.g. ``{"history": 300}`` for ``motion``.
    """

    name: str = "torchvision"
    every: int = 1
    score_threshold: float = 0.3
    model: str = "fast"
    checkpoint: str | None = None
    boxes: str | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"detect every must be >= 1, got {self.every}")
        if self.name == "file" and not self.boxes:
            raise ValueError("the file detector needs a boxes file (--boxes FILE)")

    def backend_options(self, video: Path, device: str) -> dict:
        """The options of :func:`~clamp_track.pipelines.detectors.make_detector`."""
        common = {
            "torchvision": {"model": self.model, "score_threshold": self.score_threshold,
                            "device": device},
            "mmdet": {"config": self.model, "checkpoint": self.checkpoint,
                      "score_threshold": self.score_threshold, "device": device},
            "file": {"path": self.boxes, "video": str(video), "min_score": self.score_threshold},
            "motion": {},
            "megadetector": {"model": self.model, "score_threshold": self.score_threshold,
                             "device": device},
        }.get(self.name, {})
        return {**common, **self.options}

    @property
    def per_video(self) -> bool:
        """Whether the detector holds per-video state (boxes of one file, a background model)."""
        return self.name in ("file", "motion")


@dataclass(frozen=True)
class RunConfig:
    """Everything ``clamp-track run`` does, written next to its outputs as ``config.resolved.yaml``.

    Attributes:
        pose_model: Model variant (see ``clamp_track.models.list_models``).
        pose_weights: ``"auto"`` (the official AP-10K weights of ``pose_model``, fetched once
            and cached), a checkpoint file (ours or official), a cached weights name, or
            ``None`` for an untrained model (tests).
        keypoints: Keypoint set for random weights (checkpoints carry their own).
        seed: Seed of the random weights when ``pose_weights`` is ``None``, so that separate
            processes (batch workers) build the same model; ``None`` draws from torch's global
            generator. Ignored with real weights.
        start: First frame.
        end: One past the last frame (``None``: to the end).
        chunk: Frames per decode/pose/commit step (also the resume granularity).
        decoder: Video decoder: ``auto`` (PyAV, bounded memory) or ``decord`` (see
            ``clamp_track.io.video``).
        detect: Detector settings.
        tracker: Tracker settings.
        pose: Pose-stage settings.
        smoother: Smoother settings.
        exports: Files to write after the run: any of ``csv``, ``dlc``, ``video``, ``plot``.
    """

    pose_model: str = "clamp_rn50"
    pose_weights: str | None = "auto"
    keypoints: str | None = None
    seed: int | None = None
    start: int = 0
    end: int | None = None
    chunk: int = 8
    decoder: str = "auto"
    detect: DetectConfig = field(default_factory=DetectConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    smoother: SmootherConfig = field(default_factory=SmootherConfig)
    exports: tuple[str, ...] = ("csv", "dlc")

    def __post_init__(self):
        unknown = set(self.exports) - set(EXPORT_FORMATS)
        if unknown:
            raise ValueError(f"unknown export formats {sorted(unknown)}; use "
                             f"{', '.join(EXPORT_FORMATS)}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")
        if self.pose.batch_size < 1:
            raise ValueError(f"pose.batch_size (--batch-size) must be >= 1, got "
                             f"{self.pose.batch_size}")
        if not 0 <= self.detect.score_threshold <= 1:
            raise ValueError(f"detect.score_threshold must be within [0, 1], got "
                             f"{self.detect.score_threshold}")
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise ValueError(f"--start {self.start} / --end {self.end}: need 0 <= start < end")
        bad = _not_finite(to_dict(self))
        if bad:
            raise ValueError(f"{bad} must be a finite number")


def _not_finite(data, prefix: str = "") -> str | None:
    """The first setting in ``data`` that is NaN or infinite, by its dotted name."""
    if isinstance(data, dict):
        for key, value in data.items():
            found = _not_finite(value, f"{prefix}{key}.")
            if found:
                return found
    elif isinstance(data, float) and not np.isfinite(data):
        return prefix.rstrip(".")
    return None


@dataclass
class RunSummary:
    """What a run did."""

    video: Path
    store: Path
    frames: int
    tracks: int
    seconds: float
    outputs: list[Path]
    resumed_from: int | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    carried: object | None = None  # a re-run's replay.CarryReport

    def line(self) -> str:
        """One-line summary for the terminal."""
        fps = self.frames / self.seconds if self.seconds else 0.0
        resumed = f", resumed at frame {self.resumed_from}" if self.resumed_from else ""
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in self.stage_seconds.items())
        return (f"{self.video.name}: {self.frames} frames, {self.tracks} tracks, "
                f"{self.seconds:.1f} s ({fps:.1f} frames/s; {stages}){resumed} -> {self.store}")


class StageTimer:
    """Accumulates wall time per pipeline stage (``with timer("pose"): ...``)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        """Time the ``with`` block as part of ``stage``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


class Cancelled(ClampTrackError):
    """The run was cancelled; the store keeps every committed chunk and can be resumed."""


@dataclass
class Progress:
    """Progress report passed to callbacks after every chunk."""

    done: int
    total: int
    animals: int
    fps: float


class Models:
    """The loaded, reusable parts of a run (model, detector), shareable across videos."""

    def __init__(self, cfg: RunConfig):
        from clamp_track.models import create_model

        weights = None
        if cfg.pose_weights:
            from clamp_track.weights import resolve_pose_weights

            weights = resolve_pose_weights(cfg.pose_weights, cfg.pose_model)
        with _seeded(None if weights else cfg.seed):
            model = create_model(None if weights else cfg.pose_model, weights=weights,
                                 keypoints=None if weights else cfg.keypoints)
        from clamp_track.models.registry import variant_name

        #: The model actually loaded (a checkpoint's own variant wins over ``pose_model``).
        self.variant = variant_name(model.config) or cfg.pose_model
        if weights and self.variant != cfg.pose_model:
            log.info("%s holds %s weights: running %s, not --pose-model %s (recorded in "
                        "the store)", weights, self.variant, self.variant, cfg.pose_model)
        if weights and cfg.keypoints and cfg.keypoints != model.keypoints.name:
            log.warning("%s was trained for keypoint set %s: --keypoints %s is ignored",
                        weights, model.keypoints.name, cfg.keypoints)
        self.pose = PoseEstimator(model, cfg.pose)
        self._detector = None
        self._detector_key = None

    def detector(self, video: Path, cfg: DetectConfig):
        """The detector for ``video``, created on first use (its weights may need fetching).

        It is reused for later videos unless its settings differ or it holds per-video state.
        """
        from clamp_track.pipelines.detectors import make_detector

        key = (cfg, video if cfg.per_video else None)
        if key != self._detector_key:
            self.close()
            options = cfg.backend_options(video, str(self.pose.device))
            self._detector = make_detector(cfg.name, **options)
            self._detector_key = key
        return self._detector

    def close(self) -> None:
        """Release the detector."""
        if self._detector is not None:
            self._detector.close()
        self._detector, self._detector_key = None, None


@contextmanager
def _seeded(seed: int | None):
    """Draw from a generator seeded with ``seed`` inside the block; the global state is kept."""
    if seed is None:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass
class StorePlan:
    """What :func:`run_video` will do with a video's store, decided before any model loads.

    Attributes:
        final: The store the user sees (``<video>.clamp.sqlite``).
        action: ``new`` (build a new store, in the working file if ``final`` exists, and
            move it to ``final`` when complete), ``continue`` (resume the store ``work``), or
            ``export`` (``final`` is a complete run: write its exports only).
        work: The store to continue (the working file, or ``final`` if a first run stopped).
        info: The video.
        end: One past the last frame to process.
    """

    final: Path
    action: str
    work: Path | None
    info: object
    end: int


def run_video(
    video: str | os.PathLike,
    cfg: RunConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    models: Models | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> RunSummary:
    """Process one video end to end.

    A finished run is never lost: where a store exists already, the new run builds its store
    in a hidden working file beside it (see :func:`~clamp_track.io.store.partial_path`) and
    replaces the old store only once the new one is complete; until then a failure, Ctrl+C or
    kill leaves the old store, its exports and ``config.resolved.yaml`` as they were (a first
    run builds its store in place, so its partial results can be looked at). ``resume``
    continues the newest unfinished store, and on a complete store writes its exports again
    and processes nothing. The store is locked while this runs.

    Args:
        video: The video file.
        cfg: The run configuration.
        out_dir: Folder for the store and exports (default: beside the video).
        resume: Continue an interrupted run from its last committed chunk.
        overwrite: Replace an existing store even if it holds user corrections.
        models: Preloaded models (to reuse across videos).
        progress: Called after every chunk; raise :class:`Cancelled` in it to stop cleanly.

    Returns:
        A :class:`RunSummary`.
    """
    from clamp_track.io.store import partial_path, store_lock

    started = time.perf_counter()
    video = Path(video)
    plan = plan_store(video, cfg, out_dir, resume=resume, overwrite=overwrite)
    if plan.final.exists() and not overwrite:  # never continue another video's results
        _check_same_video(plan.final, video)
    timer = StageTimer()
    with store_lock(plan.final):  # decide again: another process may have changed the store
        plan = plan_store(video, cfg, plan.final.parent, resume=resume, overwrite=overwrite,
                          info=plan.info, check=False)
        resumed_from = None
        if plan.info.rotation:
            log.warning("%s: the file tells players to turn it %d° clockwise (a phone's display "
                        "matrix; OpenCV and DeepLabCut show it turned); clamp-track processes "
                        "the frames as stored, so its coordinates are for the unturned frames "
                        "(recorded as video.rotation in the store); to work upright, re-encode "
                        "it turned first (e.g. ffmpeg -i IN.mp4 OUT.mp4)", video,
                        plan.info.rotation)
        if plan.action != "export":
            models = models or Models(cfg)
            if plan.action == "continue":
                store = ResultStore.open(plan.work)
                state = store.meta("resume") or {"next": cfg.start}
                if store.complete:
                    state = {"next": plan.end}
                log.info("resuming %s at frame %d", video.name, state["next"])
            else:
                # a store already there is only replaced once the new one is complete
                work = partial_path(plan.final)
                for suffix in ("", "-wal", "-shm"):  # a replacement run given up before
                    Path(str(work) + suffix).unlink(missing_ok=True)
                store = ResultStore.create(work if plan.final.exists() else plan.final,
                                           _new_meta(video, plan.final, plan.info, cfg, models))
                state = {"next": cfg.start}
            resumed_from = state["next"] if state["next"] > cfg.start else None
            try:
                if state["next"] < plan.end:
                    _rewarm_detector(video, state["next"], cfg, models, timer)
                    _process(video, plan.end, store, state, cfg, models, progress, timer)
                _complete_fingerprint(store, video)
                with timer("smooth"):
                    _finalise(store, cfg)
            except BaseException:
                store.close()
                raise
            resolved = store.meta("config")
            store.commit_to(plan.final)
            dump_yaml(resolved, plan.final.parent / "config.resolved.yaml")
        with ResultStore.open(plan.final, check=plan.action == "export") as store:
            with timer("export"):
                outputs = write_exports(store, cfg.exports, missing_only=plan.action == "export")
            frames = len(store.frame_times()[0])
            tracks = len(store.track_ids())
    return RunSummary(video, plan.final, frames, tracks, time.perf_counter() - started,
                      outputs, resumed_from, timer.seconds)


def plan_store(video: str | os.PathLike, cfg: RunConfig, out_dir: str | os.PathLike | None = None,
               *, resume: bool = False, overwrite: bool = False, info=None,
               check: bool = True) -> StorePlan:
    """Check a run's inputs and decide what to do with its store, without loading a model.

    Everything a run needs that can be wrong is checked here, so that a mistake stops the run
    with one line before anything is loaded or written: the video, the frame range, the output
    folder, the settings (:func:`check_settings`) and the existing store (corrections that a new
    run would replace, or settings that differ from a run to resume).

    Args:
        video: The video file.
        cfg: The run's settings.
        out_dir: Its output folder (default: beside the video).
        resume: As for :func:`run_video`.
        overwrite: As for :func:`run_video`.
        info: The video's :class:`~clamp_track.types.VideoInfo` if probed already.
        check: Check the settings (:func:`check_settings`); off when they were checked.

    Raises:
        ClampTrackError: What is wrong, in one line naming the file and the fix.
    """
    from clamp_track.io.store import partial_path
    from clamp_track.io.video import probe

    video = Path(video)
    info = info or probe(video)
    end = info.n_frames if cfg.end is None else min(cfg.end, info.n_frames)
    if not 0 <= cfg.start < end:
        raise InputError(f"{video}: frame range [{cfg.start}, {end}) is empty; the video has "
                         f"{info.n_frames} frames")
    if check:
        check_settings(cfg, video, end - cfg.start)
    out = _output_dir(video, out_dir)
    final = store_path(video, out)
    work = partial_path(final)
    if resume:
        for path in (work, final):
            if not path.is_file():
                continue
            with ResultStore.open(path, readonly=True) as store:
                if not same_settings(store.meta("config"), cfg):
                    raise InputError(f"{final}: was made with different settings; run without "
                                     "--resume (or with the same options) to start over")
                if path == final and store.complete:
                    return StorePlan(final, "export", None, info, end)
            return StorePlan(final, "continue", path, info, end)
    elif final.is_file() and not overwrite:
        try:
            with ResultStore.open(final, readonly=True) as old:
                corrected = bool(old.corrections())
        except InputError:
            raise InputError(f"{final}: an unreadable result store is in the way; use "
                             "--overwrite to replace it") from None
        if corrected:
            raise InputError(f"{final}: holds your corrections; use --resume to continue it "
                             "(or `clamp-track export` to write its files again) or "
                             "--overwrite to replace it")
    return StorePlan(final, "new", None, info, end)


def write_exports(store: ResultStore, formats, *, missing_only: bool = False) -> list[Path]:
    """Write a run's exports beside its store and record their files in the store.

    The store's ``exports`` metadata maps each format written to its files (relative to the
    store's folder), so a run is known to be done only when every requested export exists
    (:func:`exports_done`).

    Args:
        store: A complete store, open for writing.
        formats: The formats to write (see :func:`export`).
        missing_only: Write only formats with a file missing (resuming a finished run): the
            files there are left byte for byte as they are.

    Returns:
        The export files of ``formats``.
    """
    done = dict(store.meta("exports") or {})
    folder = store.path.parent
    kept = {fmt for fmt in formats if missing_only and exports_done(store, [fmt])}
    written = {}
    # the table is read once for all formats; each is recorded as soon as it is written
    for fmt, files in export_each(store, [f for f in formats if f not in kept]):
        written[fmt] = files
        done[fmt] = [os.path.relpath(p, folder) for p in files]
        store.set_meta(exports=done)
    paths: list[Path] = []
    for fmt in formats:
        paths += written[fmt] if fmt in written else [folder / name for name in done.get(fmt, [])]
    return paths


def exports_done(store: ResultStore, formats) -> bool:
    """Whether every file of every format in ``formats`` was written and is still there."""
    done = store.meta("exports") or {}
    folder = store.path.parent
    return all(isinstance(done.get(fmt), list) and all(
        (folder / str(name)).is_file() for name in done[fmt]) for fmt in formats)


def same_settings(stored: dict | None, cfg: RunConfig) -> bool:
    """Whether a store made with ``stored`` settings can be continued with ``cfg``.

    The exports and the pose backend do not change the results, so they may differ.
    """
    if not isinstance(stored, dict):
        return False
    def results(settings: dict) -> dict:  # the backend changes no result either (1e-13)
        settings = {k: v for k, v in settings.items() if k != "exports"}
        if isinstance(settings.get("pose"), dict):
            settings["pose"] = {k: v for k, v in settings["pose"].items() if k != "backend"}
        return settings

    return results(stored) == results(to_dict(cfg))


def check_settings(cfg: RunConfig, video: Path | None = None, frames: int | None = None) -> None:
    """Check the settings of a run against this machine and its input files.

    The device must be one torch sees, the pose weights file and the boxes file must exist
    (the boxes file must be readable as boxes), and a detector that fetches weights must have
    them or the internet; unusual values that are allowed get a warning.

    Raises:
        ClampTrackError: One line naming the setting or file and the fix.
    """
    from clamp_track.pipelines.backends import check_backend
    from clamp_track.pipelines.pose import resolve_device
    from clamp_track.runtime import check_device

    check_device(cfg.pose.device)
    check_backend(cfg.pose.backend, resolve_device(cfg.pose.device))
    if cfg.pose_weights and str(cfg.pose_weights) != "auto":
        from clamp_track.weights import resolve_pose_weights

        resolve_pose_weights(cfg.pose_weights, cfg.pose_model)
    if cfg.detect.name == "file":
        from clamp_track.pipelines.detectors import make_detector

        make_detector("file", **cfg.detect.backend_options(video or Path(""), "cpu")).close()
    if cfg.detect.name == "mmdet" and cfg.detect.checkpoint and not Path(
            cfg.detect.checkpoint).is_file():
        raise InputError(f"{cfg.detect.checkpoint}: detector checkpoint not found; fix "
                         "--detector-checkpoint")
    if cfg.detect.name == "torchvision":
        from clamp_track.pipelines.detectors import check_torchvision_weights

        check_torchvision_weights(**cfg.detect.backend_options(video or Path(""), "cpu"))
    if frames is not None and cfg.detect.every > 1 and cfg.detect.every >= frames:
        log.warning("--detect-every %d: the detector runs on the first frame only (%d frames "
                    "to process); boxes elsewhere are predicted", cfg.detect.every, frames)


def _new_meta(video: Path, store_file: Path, info, cfg: RunConfig, models: Models) -> dict:
    return {
        "config": to_dict(cfg),
        "video": {**info.__dict__, "path": str(video.absolute())},  # from any folder
        # from frame 0 the run decodes the frames the fingerprint samples: it hashes them then
        VIDEO_REF: VideoRef.make(video, store_file, Fingerprint.unsampled(video, info)
                                 if cfg.start == 0 else None).to_dict(),
        "keypoints": models.pose.model.keypoints.to_dict(),
        "model": {"variant": models.variant, "weights": cfg.pose_weights,
                  "input_size": list(models.pose.model.config.input_size)},
        "resume": {"next": cfg.start},
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "dlc_date": dlc_date(),
    }


def _output_dir(video: Path, out_dir) -> Path:
    out = Path(out_dir) if out_dir else video.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the output folder ({exc.strerror}); "
                         "choose another with -o DIR") from None
    if not os.access(out, os.W_OK):
        raise InputError(f"{out}: output folder is not writable; choose another with -o DIR")
    return out


def _rewarm_detector(video: Path, first: int, cfg: RunConfig, models: Models,
                     timer: StageTimer) -> None:
    """Give a stateful detector the frames before the resume point, as the first run did.

    The motion detector's background model learns from every frame it sees; a resumed run
    replays the detected frames of ``[start, first)`` through it (their boxes are dropped), so
    it continues with the model an uninterrupted run has at ``first``.
    """
    if cfg.detect.name != "motion" or first <= cfg.start:
        return
    from clamp_track.io.video import VideoReader

    detector = models.detector(video, cfg.detect)
    with timer("detect"), VideoReader(video, start=cfg.start, end=first,
                                      backend=cfg.decoder) as reader:
        batch = []
        for frame in reader:
            if (frame.index - cfg.start) % cfg.detect.every == 0:
                batch.append(frame)
            if len(batch) == cfg.chunk:
                detector.detect(batch)
                batch = []
        if batch:
            detector.detect(batch)


def _complete_fingerprint(store: ResultStore, video: Path) -> None:
    """Hash the sampled frames now if the run did not pass them all.

    (Resumed, ended before 1 s, or damaged frames): a finished store's fingerprint is complete.
    """
    ref = store.video_ref
    if ref.fingerprint is not None and not ref.fingerprint.complete:
        store.set_video_ref(replace(ref, fingerprint=Fingerprint.of(video)))


def _check_same_video(path: Path, video: Path) -> None:
    """Refuse to resume or replace the results of another video.

    E.g. a same-named ``IMAG0001.AVI`` of another card run into the same ``-o`` folder.
    """
    try:
        with ResultStore.open(path, readonly=True) as old:
            ref = old.video_ref
            why = ref.check(video, path, old.video_info)
    except InputError:  # unreadable: the old checks say what to do with it
        return
    if why is not None:
        raise InputError(f"{path}: holds the results of {ref.absolute}, not of {video} "
                         f"({why.reason}); write these elsewhere with -o DIR, or replace them "
                         "with --overwrite")


#: Chunks handed to the pose worker and not committed yet, at most (bounds the crops in memory).
MAX_PENDING_CHUNKS = 3


def _process(video: Path, end: int, store: ResultStore, state: dict, cfg: RunConfig,
             models: Models, progress, timer: StageTimer) -> None:
    """Decode, detect, track and crop chunk after chunk while the pose worker runs the model.

    The main thread decodes (waits for the decoding thread), detects, tracks and cuts the
    crops of a chunk, hands them to the :class:`~clamp_track.pipelines.pose.PoseWorker` and
    goes on with the next chunk; finished chunks are committed in order, each with the resume
    state it had when it was tracked, so a resumed run continues exactly as an uninterrupted
    one. Poses feed back into the tracker only with ``detect.every > 1``; then each chunk
    waits for its poses before the next is tracked.
    """
    from clamp_track.io.video import VideoReader
    from clamp_track.pipelines.pose import PoseWorker
    from clamp_track.pipelines.tracker import Tracker

    tracking = _load_tracking(state, store.path) or Tracking(Tracker(cfg.tracker))
    total, first = end - cfg.start, state["next"]
    t0 = time.perf_counter()
    ref = store.video_ref
    sampler = None  # the store's fingerprint is hashed from the frames passing by
    if ref.fingerprint is not None and not ref.fingerprint.complete:
        sampler = FrameSampler(store.video_info)
        if sampler.frames[0] < first:
            sampler = None  # (resumed: _complete_fingerprint decodes them afterwards)

    def commit(item) -> None:
        nonlocal sampler, ref
        (rows, resume), poses = item
        meta = {"resume": resume}
        if sampler is not None and sampler.frames_hash != ref.fingerprint.frames_hash:
            # the frames hashed so far go with the chunk (a killed run keeps them)
            ref = replace(ref, fingerprint=ref.fingerprint.sampled(
                sampler.frames_hash, partial=not sampler.done))
            meta[VIDEO_REF] = ref.to_dict()
        if sampler is not None and sampler.done:
            sampler = None
        with timer("store"):
            store.write_chunk(rows, poses, state=meta)
        if progress:
            done = rows[-1][0] + 1
            fps = (done - first) / max(time.perf_counter() - t0, 1e-9)
            progress(Progress(done - cfg.start, total, len(poses[-1]), fps))

    chunk: list[Frame] = []
    with VideoReader(video, start=first, end=end, backend=cfg.decoder) as reader, \
            PoseWorker(models.pose) as worker:
        frames = iter(reader)
        while True:
            with timer("decode"):  # time spent waiting for the decoding thread
                frame = next(frames, None)
            if frame is not None:
                chunk.append(frame)
                if sampler is not None:
                    sampler.see(frame.index, frame.image)
                # chunks are aligned to cfg.start, so a resumed run forms the same chunks
                if (frame.index - cfg.start + 1) % cfg.chunk and frame.index != end - 1:
                    continue
            if chunk:  # a full chunk, or what is left when a damaged file ends early
                _process_chunk(video, chunk, tracking, worker, cfg, models, timer, commit)
                chunk = []
            if frame is None:
                break
        with timer("pose"):  # waiting for the pose worker
            rest = worker.drain()
        for item in rest:
            commit(item)


def _process_chunk(video: Path, frames: list[Frame], tracking: Tracking, worker, cfg: RunConfig,
                   models: Models, timer: StageTimer, commit) -> None:
    """Detect and track one chunk and hand its crops to the pose worker.

    Chunks the worker has finished are committed (``commit``) on the way, oldest first.
    """
    to_detect = [f for f in frames if (f.index - cfg.start) % cfg.detect.every == 0]
    with timer("detect"):
        found = models.detector(video, cfg.detect).detect(to_detect) if to_detect else []
    found = dict(zip((f.index for f in to_detect), found))
    tracked = []
    with timer("track"):
        for f in frames:
            if f.index in found:
                tracked.append(tracking.update(f.index, found[f.index]))
            else:
                tracked.append(tracking.predict(f.index))
    rows = [(f.index, f.time_s, f.index in found) for f in frames]
    tag = [rows, None]  # the resume state is filled in once the tracker is final for the chunk
    with timer("crop"):
        worker.submit(tag, [f.image for f in frames], tracked, [f.index for f in frames])
    if cfg.detect.every > 1:
        # the boxes the tracker predicts next are refined from this chunk's last poses
        with timer("pose"):
            done = worker.drain()
        _refine_tracker(tracking.tracker, done[-1][1][-1], cfg)
    else:
        done = worker.ready()
    tag[1] = {"next": frames[-1].index + 1, "tracking": _dump(tracking)}
    for item in done:
        commit(item)
    while worker.pending > MAX_PENDING_CHUNKS:
        with timer("pose"):
            item = worker.wait()
        commit(item)


class Tracking:
    """The tracker plus the detections it has not confirmed yet.

    ByteTrack gives a track its id only at its second matched detection, so the first frame
    (with detection every k-th frame: the first k frames) of every track arrives unconfirmed.
    Such detections get temporary negative ids, are carried unchanged through the frames
    without detection, posed and stored; :func:`adopt_unconfirmed` later hands them to the
    track they turned into, or drops them. It is the resume state, stored as data
    (:mod:`clamp_track.io.state`).
    """

    def __init__(self, tracker):
        self.tracker = tracker
        self.pending = Detections.empty()
        self.next_temp = -1

    def update(self, frame: int, detections: Detections) -> Detections:
        """Track one frame's detections; unconfirmed ones get fresh negative ids."""
        out = self.tracker.update(frame, detections)
        ids = out.track_ids.copy()
        new = ids < 1
        ids[new] = self.next_temp - np.arange(new.sum())
        self.next_temp -= int(new.sum())
        tracked = Detections(out.boxes, out.scores, out.class_ids, ids)
        self.pending = tracked[new]
        return tracked

    def predict(self, frame: int) -> Detections:
        """Boxes of the confirmed tracks (predicted) and of the pending detections (held)."""
        predicted = self.tracker.predict(frame)
        if not len(self.pending):
            return predicted
        return Detections(*(np.concatenate([getattr(predicted, k), getattr(self.pending, k)])
                            for k in ("boxes", "scores", "class_ids", "track_ids")))


def adopt_unconfirmed(store: ResultStore, min_iou: float = 0.3) -> None:
    """Give each run of unconfirmed instances to the track that starts right after it.

    An unconfirmed run (one temporary id) ending at frame ``e`` joins the track whose first
    frame is ``e + 1`` if their boxes overlap there by ``min_iou`` (the best overlap);
    otherwise it is dropped. Runs are visited from the last to the first (on the same last
    frame, the lowest temporary id first), so a track can grow back over several.
    """
    boxes = store.boxes()
    frame, track = boxes.frame.to_numpy(), boxes.track.to_numpy()
    if not (track < 0).any():
        return
    xyxy = boxes[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)
    head = {}  # track -> (its first frame, its box there); rows come ordered by frame
    for row in np.flatnonzero(track >= 1):
        head.setdefault(int(track[row]), (int(frame[row]), xyxy[row]))
    starts: dict[int, list[int]] = {}  # first frame -> the tracks starting there, by id
    for tid in sorted(head):
        starts.setdefault(head[tid][0], []).append(tid)
    runs = []  # (temp id, its rows in frame order)
    for temp_id in np.unique(track[track < 0]):
        runs.append((int(temp_id), np.flatnonzero(track == temp_id)))
    runs.sort(key=lambda run: -frame[run[1][-1]])
    moves = []
    for temp_id, rows in runs:
        end = int(frame[rows[-1]])
        best, best_iou = None, min_iou
        for tid in starts.get(end + 1, []):
            iou = float(box_iou(xyxy[rows[-1]], head[tid][1]))
            if iou >= best_iou:
                best, best_iou = tid, iou
        moves += [(int(frame[r]), temp_id, best) for r in rows]
        if best is not None:
            starts[end + 1].remove(best)
            start = int(frame[rows[0]])
            starts.setdefault(start, []).append(best)
            head[best] = (start, xyxy[rows[0]])
    store.reassign(moves)


def _refine_tracker(tracker, pose: PosePredictions, cfg: RunConfig) -> None:
    """Feed boxes around confident keypoints back to the tracker for the next predictions."""
    if cfg.detect.every == 1:
        return
    for tid, kp, conf, box in zip(pose.track_ids, pose.keypoints, pose.scores, pose.boxes):
        if tid < 1:
            continue
        good = kp[conf >= 0.3]
        if len(good) < 3:
            continue
        lo, hi = good.min(0), good.max(0)
        pad = 0.1 * (hi - lo) + 2
        # never shrink below half the tracked box: keypoints rarely reach the box edges
        size = np.maximum(hi - lo + 2 * pad, 0.5 * (box[2:] - box[:2]))
        centre = (lo + hi) / 2
        tracker.refine(int(tid), np.concatenate([centre - size / 2, centre + size / 2]))


def _dump(obj) -> dict:
    from clamp_track.io.state import dump_state

    return dump_state(obj)


def _load_tracking(state: dict, path: Path | None = None) -> Tracking | None:
    """The tracking state saved with the last committed chunk, read as data (never unpickled)."""
    from clamp_track.io.state import StateError, load_state

    data = state.get("tracking")
    if not data:
        return None
    where = path or "the result store"
    try:
        tracking = load_state(data)
    except StateError as exc:
        raise InputError(f"{where}: its resume state cannot be read ({exc}); run without "
                         "--resume to start over") from None
    if not isinstance(tracking, Tracking):
        raise InputError(f"{where}: its resume state is not a tracker's; run without --resume "
                         "to start over")
    return tracking


def finish(store: ResultStore, cfg: RunConfig, timer: StageTimer | None = None) -> list[Path]:
    """Finalise tracks, smooth them, mark the store complete and write the exports."""
    timer = timer or StageTimer()
    with timer("smooth"):
        _finalise(store, cfg)
    with timer("export"):
        return export(store, cfg.exports)


def _finalise(store: ResultStore, cfg: RunConfig) -> None:
    """Re-link and filter tracks, then smooth every track (once per run)."""
    from clamp_track.pipelines.smoother import smooth_tracks
    from clamp_track.pipelines.tracker import finalize_tracks

    if not store.complete:
        adopt_unconfirmed(store)
        mapping = finalize_tracks(store.boxes(), cfg.tracker)
        store.remap_tracks({old: (new if new > 0 else None) for old, new in mapping.items()})
        frames, times = store.frame_times()
        time_of = dict(zip(frames.tolist(), times.tolist()))
        def tracks():  # read one at a time; several animals are smoothed in one pass
            for track in store.track_ids():
                arrays = store.track(track)
                t = np.array([time_of[int(f)] for f in arrays["frames"]])
                yield (track, arrays["frames"]), t, arrays["raw"][..., :2], arrays["raw"][..., 2]

        for (track, frames), xy, var in smooth_tracks(tracks(), cfg.smoother):
            store.write_smoothed(track, frames, xy, var)
        store.set_meta(status="complete", resume=None)


def export(store: ResultStore, formats, out_dir: str | os.PathLike | None = None, *,
           video: str | os.PathLike | None = None, dlc_net_type: str | None = "resnet_50",
           dlc_layout: str = "auto", untouched: str = "ignore") -> list[Path]:
    """Write export files from a store (what ``clamp-track export`` does).

    Args:
        store: A complete result store.
        formats: Any of ``csv`` (tidy table), ``dlc`` (DeepLabCut ``.h5``/``.csv``/meta),
            ``sleap`` (SLEAP ``.slp`` and analysis ``.h5``), ``nwb`` (NWB with ndx-pose),
            ``video`` (annotated video),
            ``plot`` (per-track PNGs).
        out_dir: Destination folder (default: the store's folder).
        video: The video, if it moved since the run (for ``video``).
        dlc_net_type: DeepLabCut net type named in the scorer. DeepLabCut derives scorers
            only from its own net types, so ``"resnet_50"`` (the default) lets its
            project tools find the file; ``None`` names the clamp-track model instead. The
            real model is recorded in the ``_meta.pickle`` either way.
        dlc_layout: DeepLabCut layout: ``"auto"`` (single-animal files for one animal),
            ``"single"`` or ``"multi"``.
        untouched: What the keypoints the user did not correct count as in the ``.slp``'s
            user instances (``ignore``, ``confident``, ``all``), as in ``labels export``.

    Returns:
        The written files.
    """
    return [path for _, files in export_each(
        store, formats, out_dir, video=video, dlc_net_type=dlc_net_type, dlc_layout=dlc_layout,
        untouched=untouched) for path in files]


def export_each(store: ResultStore, formats, out_dir: str | os.PathLike | None = None, *,
                video: str | os.PathLike | None = None, dlc_net_type: str | None = "resnet_50",
                dlc_layout: str = "auto", untouched: str = "ignore"
                ) -> Iterator[tuple[str, list[Path]]]:
    """:func:`export`, one format at a time: yields ``(format, its files)`` as each is written.

    The store's tables are read once for all the formats.
    """
    from clamp_track.io import export as writers

    if not formats:
        return
    out = _output_dir(store.path, out_dir or store.path.parent)
    # every file that names the video records its absolute path (a legacy store's typed
    # path is taken relative to the store's folder, as VideoRef resolves it)
    video_info = replace(store.video_info, path=store.video_ref.absolute)
    info = writers.ExportInfo(
        store.keypoints, video_info, model_name=(store.meta("model") or {}).get(
            "variant", "clamp"), date=store.meta("dlc_date"), dlc_net_type=dlc_net_type,
        track_names=store.track_names())
    tidy = corrected_table(store)
    boxes = store.boxes() if {"sleap", "video"} & set(formats) else None
    stem = Path(info.video.path).stem
    if "csv" in formats:
        yield "csv", [writers.write_tidy_csv(tidy, out / f"{stem}.clamp.csv", store.keypoints)]
    if "dlc" in formats:
        yield "dlc", writers.write_dlc(tidy, out, info, layout=dlc_layout).paths
    if "sleap" in formats:
        from clamp_track.io.sleap_export import write_sleap

        yield "sleap", write_sleap(tidy, out, info, boxes,
                                   user_points=_user_points(store, untouched))
    if "nwb" in formats:
        from clamp_track.io.nwb_export import write_nwb

        yield "nwb", write_nwb(tidy, out, info, created=store.meta("created"),
                               frame_times=store.frame_times())
    if "plot" in formats:
        yield "plot", writers.write_track_plots(tidy, out, info)
    if "video" in formats:
        yield "video", [_annotated_video(store, tidy, boxes, info, out / f"{stem}.clamp.mp4",
                                         video)]


def _user_points(store: ResultStore, untouched: str) -> dict:
    """``{(frame, track): (K, 2)}`` labelled points of the corrected instances (NaN: not).

    The instances ``labels export`` writes, with the same ``untouched`` rule.
    """
    from clamp_track.io.labels import labels_from_store, track_of

    labels = labels_from_store(store, untouched=untouched, need_video=False)
    return {(int(item.frame), track_of(item.individual)):
            np.where(item.labelled[:, None], item.keypoints[:, :2], np.nan)
            for item in labels.items}


def corrected_table(store: ResultStore):
    """The store's tidy table with the user's corrections in the smoothed coordinates too.

    This is what every export writes. The stored smoothed coordinates were computed from the
    model's keypoints when the run finished, so on their own they would hide corrections made
    later. Each track with corrections is smoothed again with the run's smoother settings, its
    corrected keypoints as measurements of confidence 1 and the ones marked occluded as
    missing, so that the frames around a fix follow it too; then a corrected keypoint takes
    the user's position exactly (variance 0) and one marked occluded or absent has none (NaN).
    """
    from clamp_track.pipelines.smoother import smooth_track, stored_config

    tidy = store.tidy()
    fixed = tidy["corrected"].to_numpy(bool)
    if not fixed.any() or not store.complete:
        return tidy  # nothing corrected, or a run not smoothed yet (unfinished)
    cfg = stored_config(store)
    k = store.keypoints.num_keypoints
    for _, rows in tidy[tidy["track"].isin(tidy.loc[fixed, "track"].unique())].groupby("track"):
        # rows are in (frame, keypoint) order: the table is sorted by frame, stably
        t = len(rows) // k
        xy = rows[["x", "y"]].to_numpy(np.float64).reshape(t, k, 2)
        conf = rows["confidence"].to_numpy(np.float64).reshape(t, k)
        smooth, var = smooth_track(rows["time_s"].to_numpy()[::k], xy, conf, cfg)
        for column, values in (("x_smooth", smooth[..., 0]), ("y_smooth", smooth[..., 1]),
                               ("variance", var)):
            tidy.loc[rows.index, column] = values.ravel().astype(tidy[column].dtype)
    tidy.loc[fixed, "x_smooth"] = tidy.loc[fixed, "x"].astype(tidy["x_smooth"].dtype)
    tidy.loc[fixed, "y_smooth"] = tidy.loc[fixed, "y"].astype(tidy["y_smooth"].dtype)
    tidy.loc[fixed, "variance"] = np.where(tidy.loc[fixed, "x"].notna(), 0.0, np.nan).astype(
        tidy["variance"].dtype)
    return tidy


def _annotated_video(store: ResultStore, tidy, boxes, info, path: Path, video) -> Path:
    from clamp_track.io import export as writers
    from clamp_track.io.video import VideoReader

    source = resolve_video(store, video)
    frames, _ = store.frame_times()
    first, last = (int(frames.min()), int(frames.max()) + 1) if len(frames) else (0, 1)
    with VideoReader(source, start=first, end=last) as reader:
        return writers.write_annotated_video(
            ((f.index, f.image) for f in reader), path, info, keypoints=tidy, boxes=boxes)


def rerun(store: str | os.PathLike, weights: str | os.PathLike,
          out_dir: str | os.PathLike | None = None, *, video: str | os.PathLike | None = None,
          progress: Callable[[Progress], None] | None = None) -> RunSummary:
    """Run a stored video again with other pose weights, carrying the review work over.

    The closing step of the fine-tuning loop: the new run uses the store's settings with
    ``weights``, writes to ``out_dir`` (default: a folder named after the weights beside the
    store, so the first run and its corrections stay untouched), and everything the reviewer
    did is carried into the new store by :func:`clamp_track.pipelines.replay.carry_review`:
    deletes, merges and swaps replayed onto the overlapping new tracks, corrections and
    occluded marks onto the overlapping instances, track names onto the overlapping tracks.

    Args:
        store: The ``.clamp.sqlite`` of the first run.
        weights: The new (e.g. fine-tuned) checkpoint.
        out_dir: Where the new run writes.
        video: The video, if it moved since the first run (checked by its fingerprint).
        progress: As for :func:`run_video`.

    Returns:
        The new run's :class:`RunSummary`, with the carry report in ``carried``.
    """
    from dataclasses import replace

    from clamp_track.config import from_dict
    from clamp_track.pipelines.replay import carry_review

    store, weights = Path(store), Path(weights)
    with ResultStore.open(store, readonly=True) as old:
        settings = {**old.meta("config"), "pose_weights": str(weights)}
        video = resolve_video(old, video)
    cfg = from_dict(RunConfig, settings, source=str(store))
    out = Path(out_dir) if out_dir else store.parent / weights.stem
    if out.resolve() == store.parent.resolve():
        raise InputError(f"{out}: choose another folder than the first run's, whose store "
                         "holds your corrections")
    summary = run_video(video, cfg, out, overwrite=True, progress=progress)
    with ResultStore.open(store, readonly=True) as old, ResultStore.open(summary.store) as new:
        report = carry_review(old, new)
    log.info("%s: %s", summary.store, report.line())
    return replace(summary, carried=report)
