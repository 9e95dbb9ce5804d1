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

import base64
import logging
import os
import pickle
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clamp_track.config import dump_yaml, to_dict
from clamp_track.errors import ClampTrackError, InputError
from clamp_track.io.store import ResultStore, store_path
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
        name: ``torchvision`` (default), ``mmdet``, ``file`` or ``motion``.
        every: Run the detector every k-th frame; the tracker predicts the boxes in between.
        score_threshold: Minimum detection score kept (low-score boxes still help ByteTrack
            continue tracks, so this is below the tracker's ``high_threshold``).
        model: torchvision: ``fast``, ``accurate`` or a torchvision detection model name;
            mmdet: the config file.
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
    from clamp_track.io.video import probe

    started = time.perf_counter()
    video = Path(video)
    info = probe(video)
    end = info.n_frames if cfg.end is None else min(cfg.end, info.n_frames)
    if not 0 <= cfg.start < end:
        raise InputError(f"{video}: frame range [{cfg.start}, {end}) is empty; the video has "
                         f"{info.n_frames} frames")
    out = _output_dir(video, out_dir)
    models = models or Models(cfg)
    store, state = _open_store(store_path(video, out), video, info, cfg, models, resume,
                               overwrite)
    resumed_from = state["next"] if state["next"] > cfg.start else None
    timer = StageTimer()
    try:
        if state["next"] < end:
            _process(video, end, store, state, cfg, models, progress, timer)
        outputs = finish(store, cfg, timer)
        frames = len(store.frame_times()[0])
        summary = RunSummary(video, store.path, frames, len(store.track_ids()),
                             time.perf_counter() - started, outputs, resumed_from,
                             timer.seconds)
    finally:
        store.close()
    return summary


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


def _open_store(path: Path, video: Path, info, cfg: RunConfig, models: Models, resume: bool,
                overwrite: bool) -> tuple[ResultStore, dict]:
    resolved = to_dict(cfg)
    if path.exists() and resume:
        store = ResultStore.open(path)
        if store.meta("config") != resolved:
            store.close()
            raise InputError(f"{path}: was made with different settings; run without --resume "
                             "(or with the same options) to start over")
        state = store.meta("resume") or {"next": cfg.start}
        log.info("resuming %s at frame %d", video.name, state["next"])
        return store, state
    if path.exists() and not overwrite:
        with ResultStore.open(path, readonly=True) as old:
            if old.corrections():
                raise InputError(f"{path}: holds your corrections; use --resume to continue it "
                                 "or --overwrite to replace it")
    meta = {
        "config": resolved,
        "video": dict(info.__dict__),
        "keypoints": models.pose.model.keypoints.to_dict(),
        "model": {"variant": cfg.pose_model, "weights": cfg.pose_weights,
                  "input_size": list(models.pose.model.config.input_size)},
        "resume": {"next": cfg.start},
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "dlc_date": time.strftime("%b%d"),
    }
    dump_yaml(resolved, path.parent / "config.resolved.yaml")
    return ResultStore.create(path, meta), {"next": cfg.start}


def _process(video: Path, end: int, store: ResultStore, state: dict, cfg: RunConfig,
             models: Models, progress, timer: StageTimer) -> None:
    from clamp_track.io.video import VideoReader
    from clamp_track.pipelines.tracker import Tracker

    tracking = _load_tracking(state) or Tracking(Tracker(cfg.tracker))
    total, first = end - cfg.start, state["next"]
    t0 = time.perf_counter()
    chunk: list[Frame] = []
    with VideoReader(video, start=first, end=end, backend=cfg.decoder) as reader:
        frames = iter(reader)
        while True:
            with timer("decode"):  # time spent waiting for the decoding thread
                frame = next(frames, None)
            if frame is not None:
                chunk.append(frame)
                # chunks are aligned to cfg.start, so a resumed run forms the same chunks
                if (frame.index - cfg.start + 1) % cfg.chunk and frame.index != end - 1:
                    continue
            if chunk:  # a full chunk, or what is left when a damaged file ends early
                animals = _process_chunk(video, chunk, tracking, store, cfg, models, timer)
                if progress:
                    fps = (chunk[-1].index + 1 - first) / max(time.perf_counter() - t0, 1e-9)
                    progress(Progress(chunk[-1].index + 1 - cfg.start, total, animals, fps))
                chunk = []
            if frame is None:
                break


def _process_chunk(video: Path, frames: list[Frame], tracking: Tracking, store: ResultStore,
                   cfg: RunConfig, models: Models, timer: StageTimer) -> int:
    """Detect, track, pose and commit one chunk; returns the animals in its last frame."""
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
    with timer("pose"):
        poses = models.pose.predict([f.image for f in frames], tracked, [f.index for f in frames])
    _refine_tracker(tracking.tracker, poses[-1], cfg)
    with timer("store"):
        rows = [(f.index, f.time_s, f.index in found) for f in frames]
        state = {"resume": {"next": frames[-1].index + 1, "tracking": _dump(tracking)}}
        store.write_chunk(rows, poses, state=state)
    return len(poses[-1])


class Tracking:
    """The tracker plus the detections it has not confirmed yet.

    ByteTrack gives a track its id only at its second matched detection, so the first frame
    (with detection every k-th frame: the first k frames) of every track arrives unconfirmed.
    Such detections get temporary negative ids, are carried unchanged through the frames
    without detection, posed and stored; :func:`adopt_unconfirmed` later hands them to the
    track they turned into, or drops them. Picklable: it is the resume state.
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
    frame is ``e + 1`` if their boxes overlap there by ``min_iou``; otherwise it is dropped.
    Runs are visited from the last to the first, so a track can grow back over several.
    """
    boxes = store.boxes()
    temp = boxes[boxes.track < 0]
    if temp.empty:
        return
    tracks = boxes[boxes.track >= 1]
    first = tracks.groupby("track").frame.min().to_dict()
    at = {(int(r.frame), int(r.track)): r for r in tracks.itertuples()}
    starts = {}  # first frame -> tracks starting there
    for track, frame in first.items():
        starts.setdefault(frame, []).append(track)
    moves = []
    runs = sorted(temp.groupby("track"), key=lambda item: -item[1].frame.max())
    for temp_id, run in runs:
        end = int(run.frame.max())
        last = run[run.frame == end].iloc[0]
        best, best_iou = None, min_iou
        for track in starts.get(end + 1, []):
            iou = _iou(last, at[(end + 1, track)])
            if iou >= best_iou:
                best, best_iou = track, iou
        moves += [(int(f), int(temp_id), best) for f in run.frame]
        if best is not None:
            starts[end + 1].remove(best)
            start = int(run.frame.min())
            starts.setdefault(start, []).append(best)
            at[(start, best)] = run[run.frame == start].iloc[0]
    store.reassign(moves)


def _iou(a, b) -> float:
    w = min(a.x2, b.x2) - max(a.x1, b.x1)
    h = min(a.y2, b.y2) - max(a.y1, b.y1)
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


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


def _dump(obj) -> str:
    return base64.b64encode(pickle.dumps(obj)).decode()


def _load_tracking(state: dict) -> Tracking | None:
    # the store is the user's own file, written by this program for its own resume
    blob = state.get("tracking")
    return pickle.loads(base64.b64decode(blob)) if blob else None


def finish(store: ResultStore, cfg: RunConfig, timer: StageTimer | None = None) -> list[Path]:
    """Finalise tracks, smooth them, mark the store complete and write the exports."""
    timer = timer or StageTimer()
    with timer("smooth"):
        _finalise(store, cfg)
    with timer("export"):
        return export(store, cfg.exports)


def _finalise(store: ResultStore, cfg: RunConfig) -> None:
    """Re-link and filter tracks, then smooth every track (once per run)."""
    from clamp_track.pipelines.smoother import smooth_track
    from clamp_track.pipelines.tracker import finalize_tracks

    if not store.complete:
        adopt_unconfirmed(store)
        mapping = finalize_tracks(store.boxes(), cfg.tracker)
        store.remap_tracks({old: (new if new > 0 else None) for old, new in mapping.items()})
        frames, times = store.frame_times()
        time_of = dict(zip(frames.tolist(), times.tolist()))
        for track in store.track_ids():
            arrays = store.track(track)
            t = np.array([time_of[int(f)] for f in arrays["frames"]])
            xy, var = smooth_track(t, arrays["raw"][..., :2], arrays["raw"][..., 2],
                                   cfg.smoother)
            store.write_smoothed(track, arrays["frames"], xy, var)
        store.set_meta(status="complete", resume=None)


def export(store: ResultStore, formats, out_dir: str | os.PathLike | None = None, *,
           video: str | os.PathLike | None = None, dlc_net_type: str | None = "resnet_50",
           ) -> list[Path]:
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

    Returns:
        The written files.
    """
    from clamp_track.io import export as writers

    out = _output_dir(store.path, out_dir or store.path.parent)
    info = writers.ExportInfo(
        store.keypoints, store.video_info, model_name=(store.meta("model") or {}).get(
            "variant", "clamp"), date=store.meta("dlc_date"), dlc_net_type=dlc_net_type)
    tidy, boxes, ids = compact_track_ids(corrected_table(store), store.boxes())
    if any(old != new for old, new in ids.items()):
        log.info("animals renumbered for export: %s",
                 ", ".join(f"{old} -> {new}" for old, new in ids.items() if old != new))
    stem = Path(info.video.path).stem
    paths: list[Path] = []
    if "csv" in formats:
        paths.append(writers.write_tidy_csv(tidy, out / f"{stem}.clamp.csv", store.keypoints))
    if "dlc" in formats:
        dlc = writers.write_dlc(tidy, out, info)
        paths += [p for p in (dlc.h5, dlc.csv, dlc.meta) if p]
    if "sleap" in formats:
        from clamp_track.io.sleap_export import write_sleap

        paths += write_sleap(tidy, out, info, boxes)
    if "nwb" in formats:
        from clamp_track.io.nwb_export import write_nwb

        paths.append(write_nwb(tidy, out, info, created=store.meta("created")))
    if "plot" in formats:
        paths += writers.write_track_plots(tidy, out, info)
    if "video" in formats:
        paths.append(_annotated_video(store, tidy, boxes, info, out / f"{stem}.clamp.mp4",
                                      video))
    return paths


def compact_track_ids(tidy, boxes):
    """Number the tracks 1..M in the order of their ids, for export.

    Merging and deleting animals while proofreading leaves gaps (animals 1, 2 and 4); the
    exported files number them 1, 2, 3 so DeepLabCut's ``animal1..animalM`` and SLEAP's
    tracks have no empty slots.

    Args:
        tidy: The tidy keypoint table (a ``track`` column).
        boxes: The box table (a ``track`` column).

    Returns:
        ``(tidy, boxes, ids)``: the tables with the new ids (the inputs are not modified)
        and ``{old id: new id}``.
    """
    old = sorted({int(t) for t in tidy["track"].unique()} | {int(t) for t in boxes["track"]})
    ids = {t: i + 1 for i, t in enumerate(old)}
    return _renumbered(tidy, ids), _renumbered(boxes, ids), ids


def _renumbered(table, ids: dict[int, int]):
    if all(old == new for old, new in ids.items()):
        return table
    return table.assign(track=table["track"].map(ids).astype(table["track"].dtype))


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
    if not fixed.any() or not tidy["x_smooth"].notna().any():
        return tidy  # nothing corrected, or a run without smoothing (e.g. unfinished)
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

    source = Path(video or info.video.path)
    if not source.is_file():
        raise InputError(f"{source}: the video of {store.path.name} is not there any more; "
                         "pass its new location with --video")
    frames, _ = store.frame_times()
    first, last = (int(frames.min()), int(frames.max()) + 1) if len(frames) else (0, 1)
    with VideoReader(source, start=first, end=last) as reader:
        return writers.write_annotated_video(
            ((f.index, f.image) for f in reader), path, info, keypoints=tidy, boxes=boxes)


def rerun(store: str | os.PathLike, weights: str | os.PathLike,
          out_dir: str | os.PathLike | None = None, *, video: str | os.PathLike | None = None,
          progress: Callable[[Progress], None] | None = None) -> RunSummary:
    """Run a stored video again with other pose weights, carrying the corrections over.

    The closing step of the fine-tuning loop: the new run uses the store's settings with
    ``weights``, writes to ``out_dir`` (default: a folder named after the weights beside the
    store, so the first run and its corrections stay untouched), and the user's corrections
    are copied into the new store, each onto the instance whose new prediction is nearest.

    Args:
        store: The ``.clamp.sqlite`` of the first run.
        weights: The new (e.g. fine-tuned) checkpoint.
        out_dir: Where the new run writes.
        video: The video, if it moved since the first run.
        progress: As for :func:`run_video`.

    Returns:
        The new run's :class:`RunSummary`.
    """
    from clamp_track.config import from_dict
    from clamp_track.io.labels import import_into_store, labels_from_store

    store, weights = Path(store), Path(weights)
    with ResultStore.open(store, readonly=True) as old:
        settings = {**old.meta("config"), "pose_weights": str(weights)}
        video = Path(video or old.video_info.path)
        labels = labels_from_store(old, need_video=False)
    cfg = from_dict(RunConfig, settings, source=str(store))
    out = Path(out_dir) if out_dir else store.parent / weights.stem
    if out.resolve() == store.parent.resolve():
        raise InputError(f"{out}: choose another folder than the first run's, whose store "
                         "holds your corrections")
    summary = run_video(video, cfg, out, overwrite=True, progress=progress)
    with ResultStore.open(summary.store) as new:
        imported, skipped = import_into_store(labels, new, match="nearest", add_missing=True)
    log.info("carried %d corrected animals over to %s (%d without a match)", imported,
             summary.store, skipped)
    return summary
