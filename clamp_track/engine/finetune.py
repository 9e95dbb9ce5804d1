"""Fine-tuning on corrections: the one function the CLI and the GUI's Fine-tune button call.

::

    from clamp_track.engine.finetune import FinetuneConfig, finetune

    result = finetune(["cows.mp4.clamp.sqlite"], FinetuneConfig(output="cows-ft.pt"),
                      progress=print, cancel=lambda: False)
    result.weights   # a normal clamp-track checkpoint: create_model(weights=result.weights)

**Data.** The labels are the corrected instances of the stores (frames read from their videos
by index, boxes from the tracks; see :mod:`clamp_track.io.labels` for which keypoints count),
and/or DeepLabCut / COCO labels passed as :class:`~clamp_track.io.labels.Labels`. A seeded
``val_fraction`` of the labelled *images* is held out (with at least ``min_val_images``
images); it picks the best weights and stops training early.

**Recipe** (for 5-200 labelled instances; every number is a :class:`FinetuneConfig` field):
AdamW at a low learning rate (1e-4, the backbone at 0.1x, no weight decay on norms, biases and
embeddings), a short warm-up, gradient clipping; the text encoder is frozen (as always), the
backbone optionally (``freeze_backbone``) and its BatchNorm statistics by default (batches of
8 would otherwise overwrite statistics learnt on large data); strong augmentation (flip,
rotation up to ±90°, scale ±35 %, box shift, colour jitter, grey, blur); validation every
``val_every`` steps on the held-out images (PCK@0.1) and early stopping after ``patience``
validations without improvement; ``steps`` steps at most, rounded up to whole validation
periods (small label sets are repeated and large ones sliced so that a period is about
``val_every`` steps). Optional replay mixes each epoch with
fresh samples of a base COCO dataset (``replay.ratio`` per label sample), its keypoints matched
to the new set by name, against forgetting.

**Keypoint sets.** The weights must predict the labels' keypoint set. Weights for another set
are refused unless ``adapt_keypoints`` (``--adapt-keypoints``) asks for new keypoint heads
(:func:`clamp_track.models.adapt_to_keypoints`); a set with the same names in the same order
(only flip pairs, skeleton or sigmas differ) needs no new heads and is taken as is.

**Output.** A normal clamp-track checkpoint with ``extra["finetune"]``: the start weights, the
sources, every training and held-out image, the split, the recipe, the step count, and the
held-out metrics before and after. The run folder beside it keeps ``log.csv``, ``val.csv``,
``split.json`` and ``finetune.resolved.yaml``.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from clamp_track.data.augment import AugmentConfig
from clamp_track.data.corrections import PhotometricConfig
from clamp_track.errors import CheckpointError, InputError
from clamp_track.io.labels import Labels
from clamp_track.skeleton import KeypointSet

log = logging.getLogger(__name__)

#: Geometric augmentation of the recipe: stronger than the AP-10K recipe's, for small sets.
STRONG_AUGMENT = AugmentConfig(flip_prob=0.5, half_body_prob=0.3, scale=0.35, rotation=45.0,
                               rotation_prob=0.8, shift_prob=0.5, shift=0.15)
#: The held-out metric that picks the best weights and drives early stopping.
METRIC = "PCK@0.1"


@dataclass(frozen=True)
class ReplayConfig:
    """A base COCO keypoint dataset mixed into every epoch against forgetting.

    Attributes:
        annotations: The COCO keypoint JSON file.
        images: Folder of its images.
        ratio: Replay samples per label sample in each epoch (fresh draws every epoch).
    """

    annotations: str
    images: str = "."
    ratio: float = 1.0

    def __post_init__(self):
        if self.ratio <= 0:
            raise ValueError(f"replay ratio must be positive, got {self.ratio}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything a fine-tuning run does (defaults: the small-data recipe).

    Attributes:
        weights: Start weights: a checkpoint, a cached weights name, or a model variant name
            (random or ``clip_weights`` initialisation). None: the weights the (first) store
            was made with.
        clip_weights: With a variant name: ``"openai"`` or a CLIP file for the image/text towers.
        keypoints: The keypoint set to train (built-in name, keypoint-set YAML, or a
            DeepLabCut project's ``config.yaml``); None: the labels'.
        adapt_keypoints: Allow start weights of another keypoint set (new keypoint heads).
        output: The new weights file; None: ``<video>.finetuned.pt`` beside the first store
            (a free name), or in the current folder for label files.
        run_dir: Logs folder; None: ``<output stem>.run`` beside the output.
        videos: Video files or folders for stores whose video moved.
        untouched: What a corrected instance's untouched keypoints count as: ``ignore``
            (unlabelled), ``confident`` or ``all`` (predictions as labels).
        min_confidence: Prediction confidence needed with ``untouched="confident"``.
        val_fraction: Fraction of labelled images held out for early stopping.
        min_val_images: Hold nothing out with fewer labelled images than this.
        steps: Most optimiser steps (rounded up to whole validation periods).
        val_every: Validate (and consider stopping) every this many steps.
        patience: Stop after this many validations without a better held-out PCK@0.1.
        batch_size: Crops per step.
        lr: Learning rate (heads, prompts, decoder).
        backbone_lr_mult: Backbone learning-rate factor.
        weight_decay: AdamW weight decay (not on norms, biases, embeddings).
        warmup_steps: Linear warm-up steps.
        clip_grad: Gradient-norm clipping (None: off).
        freeze_backbone: Train only the heads, prompts and decoder.
        backbone_bn: ``frozen``: keep the backbone's BatchNorm statistics; ``train``: update
            them (needed when starting from random weights).
        augment: Geometric augmentation.
        photometric: Colour augmentation (None: off).
        replay: Base dataset to mix in (None: off).
        box_margin_px: Smallest margin of keypoint-derived boxes, pixels.
        box_margin_frac: Margin as a fraction of the keypoints' longer side, if larger.
        flip_test: Flip test in the held-out evaluation.
        device: ``auto``, ``cpu``, ``cuda``, ...
        workers: DataLoader worker processes (0 in a GUI).
        seed: Seed of the split, the sample order and the augmentations.
        keep_run_files: Keep ``last.pt``, ``best.pt`` and the frame cache in the run folder.
    """

    weights: str | None = None
    clip_weights: str | None = None
    keypoints: str | None = None
    adapt_keypoints: bool = False
    output: str | None = None
    run_dir: str | None = None
    videos: tuple[str, ...] = ()
    untouched: Literal["ignore", "confident", "all"] = "ignore"
    min_confidence: float = 0.5
    val_fraction: float = 0.2
    min_val_images: int = 5
    steps: int = 600
    val_every: int = 30
    patience: int = 5
    batch_size: int = 8
    lr: float = 1e-4
    backbone_lr_mult: float = 0.1
    weight_decay: float = 1e-4
    warmup_steps: int = 30
    clip_grad: float | None = 1.0
    freeze_backbone: bool = False
    backbone_bn: Literal["frozen", "train"] = "frozen"
    augment: AugmentConfig = STRONG_AUGMENT
    photometric: PhotometricConfig | None = field(default_factory=PhotometricConfig)
    replay: ReplayConfig | None = None
    box_margin_px: float = 20.0
    box_margin_frac: float = 0.1
    flip_test: bool = True
    device: str = "auto"
    workers: int = 0
    seed: int = 0
    keep_run_files: bool = False

    def __post_init__(self):
        for name in ("steps", "val_every", "patience", "batch_size", "min_val_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@dataclass(frozen=True)
class FinetuneProgress:
    """What ``progress`` receives.

    Attributes:
        stage: ``"frames"`` (reading the corrected frames from the videos), ``"training"`` or
            ``"done"``.
        done: Frames read / optimiser steps done.
        total: Frames to read / most steps (early stopping may end sooner).
        epoch: Validation period (epoch), 0-based.
        loss: Mean training loss of the current period.
        metric: Last held-out PCK@0.1 (None before the first validation or without one).
        best_metric: Best held-out PCK@0.1 so far.
        message: One line for a status bar.
    """

    stage: Literal["frames", "training", "done"]
    done: int
    total: int
    epoch: int = 0
    loss: float | None = None
    metric: float | None = None
    best_metric: float | None = None
    message: str = ""

    @property
    def step(self) -> int:
        """Optimiser steps done (0 outside training)."""
        return self.done if self.stage != "frames" else 0


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
        weights: The new checkpoint (when cancelled: the best weights so far, None if no
            held-out evaluation had happened yet).
        keypoints: Its keypoint set.
        run_dir: The logs folder.
        train_images: Labelled images trained on.
        val_images: Held-out images.
        train_instances: Labelled animals trained on.
        val_instances: Held-out animals.
        steps: Optimiser steps done.
        metrics_before: Held-out metrics of the start weights (None without a held-out part).
        metrics_after: Held-out metrics of the new weights.
        stopped_early: Training stopped because the held-out metric stopped improving.
        cancelled: ``cancel`` stopped the run; ``weights`` holds the best weights so far.
        adapted: Names kept from the start weights' keypoints when the heads were adapted to a
            new keypoint set (None: no adaptation).
        warnings: Ways the labels are lopsided (keypoints without labels, frames from few
            stretches of video, one source dominating), also logged.
    """

    weights: Path | None
    keypoints: KeypointSet
    run_dir: Path
    train_images: int = 0
    val_images: int = 0
    train_instances: int = 0
    val_instances: int = 0
    steps: int = 0
    metrics_before: dict | None = None
    metrics_after: dict | None = None
    stopped_early: bool = False
    cancelled: bool = False
    adapted: tuple[str, ...] | None = None
    warnings: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.cancelled and self.weights is None:
            return f"cancelled after {self.steps} steps; no weights written"
        if self.cancelled:
            return (f"cancelled after {self.steps} steps; kept the best weights so far in "
                    f"{self.weights}")
        text = (f"{self.weights} ({self.train_instances} animals in {self.train_images} frames, "
                f"{self.steps} steps")
        if self.metrics_before and self.metrics_after:
            text += (f"; held-out {METRIC} {100 * self.metrics_before[METRIC]:.1f} -> "
                     f"{100 * self.metrics_after[METRIC]:.1f} on {self.val_images} frames")
        return text + ")"


Progress = Callable[[FinetuneProgress], object]


# ------------------------------------------------------------------------------ the run


def finetune(stores: Sequence, cfg: FinetuneConfig | None = None, *,
             progress: Progress | None = None,
             cancel: Callable[[], bool] | None = None) -> FinetuneResult:
    """Fine-tune pose weights on the corrections of result stores (and/or label sets).

    Runs in the calling thread (the GUI calls it from a worker thread) and never imports Qt.

    Args:
        stores: Result-store paths (``*.clamp.sqlite``) or open stores, and/or
            :class:`~clamp_track.io.labels.Labels` (e.g. from a DeepLabCut folder) or label
            file paths (a ``labeled-data`` folder, ``CollectedData_*.h5/.csv``, COCO ``.json``).
        cfg: The run; default :class:`FinetuneConfig`.
        progress: Called with a :class:`FinetuneProgress` while frames are read and after
            every training step.
        cancel: Polled between steps; returning True stops the run, keeping the best weights
            so far (``best.pt``, by the held-out metric) as ``output``.

    Returns:
        The :class:`FinetuneResult`.

    Raises:
        InputError: No corrected frames, a missing video, labels in an unknown keypoint set.
        CheckpointError: Start weights that cannot be read, or of another keypoint set without
            ``adapt_keypoints``.
    """
    from clamp_track.io.labels import close_video_readers

    cfg = cfg or FinetuneConfig()
    try:
        return _finetune(stores, cfg, _Reporter(progress, cancel))
    finally:
        close_video_readers()


def _finetune(stores: Sequence, cfg: FinetuneConfig, report: _Reporter) -> FinetuneResult:
    from clamp_track.config import dump_yaml
    from clamp_track.data.corrections import split_images

    labels, store_meta = load_sources(stores, cfg)
    model, start = start_model(cfg, labels, store_meta)
    kp = model.keypoints
    replay = _replay_records(cfg, kp)  # before anything is written: bad input fails first
    output = _output_path(cfg, labels)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else output.parent / f"{output.stem}.run"
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, run_dir / "finetune.resolved.yaml")
    split = split_images(labels, cfg.val_fraction, min_images=cfg.min_val_images,
                         seed=cfg.seed)
    cached = _cache_frames(labels.with_items(split.train + split.val), run_dir, report)
    if report.cancelled:
        return FinetuneResult(None, kp, run_dir, cancelled=True)
    data = _datasets(cached, len(split.train), kp, model.config.input_size, cfg, replay)
    _write_split(run_dir / "split.json", split, cfg)
    _freeze(model, cfg)
    warnings = _warn_imbalance(split.train, kp)  # said before the wait, not after it
    result = _train(model, data, cfg, run_dir, report, start)
    result.warnings = warnings
    if result.cancelled and result.metrics_after is None:
        return result  # no held-out result yet: nothing better than the start is known
    provenance = _provenance(cfg, labels, split, start, result, data)
    _save(model, output, provenance)
    result.weights = output
    if not cfg.keep_run_files:
        _clean(run_dir)
    report.send(FinetuneProgress("done", result.steps, result.steps, message=str(result)))
    return result


class _Reporter:
    """Progress and cancel polling, tolerant of a missing callback."""

    def __init__(self, progress: Progress | None, cancel: Callable[[], bool] | None):
        self.progress, self.cancel_fn = progress, cancel
        self.cancelled = False

    def send(self, info: FinetuneProgress) -> None:
        if self.progress is not None:
            self.progress(info)

    def should_stop(self) -> bool:
        if self.cancel_fn is not None and self.cancel_fn():
            self.cancelled = True
        return self.cancelled


# ------------------------------------------------------------------------------ sources


def load_sources(sources: Sequence, cfg: FinetuneConfig) -> tuple[Labels, dict | None]:
    """Read every store / label source into one :class:`Labels` in the target keypoint set.

    Returns:
        ``(labels, model)``: the labels and the first store's ``model`` metadata (how its
        predictions were made; None without a store).

    Raises:
        InputError: No sources, or no labelled keypoint in any of them.
    """
    from clamp_track.io.labels import combine, load_keypoint_set

    if not sources:
        raise InputError("nothing to fine-tune on: give one or more result stores or label "
                         "folders/files")
    parts, meta, names = [], None, []
    for source in sources:
        labels, store_meta = _read_source(source, cfg)
        parts.append(labels)
        names.append(labels.sources[0] if labels.sources else str(source))
        if meta is None and store_meta is not None:
            meta = store_meta
    target = load_keypoint_set(cfg.keypoints) if cfg.keypoints else parts[0].keypoints
    labels = combine(parts, target)
    if not labels.labelled_items():
        raise InputError(_nothing_labelled(names, parts))
    return labels, meta


def _read_source(source, cfg: FinetuneConfig) -> tuple[Labels, dict | None]:
    from clamp_track.io.labels import read_labels
    from clamp_track.io.store import SUFFIX, ResultStore

    if isinstance(source, Labels):
        return source, None
    if isinstance(source, ResultStore):
        return _store_labels(source, cfg), source.meta("model")
    path = Path(source)
    if path.name.endswith(SUFFIX) or path.suffix in (".sqlite", ".db"):
        with ResultStore.open(path, readonly=True, check=True) as store:
            return _store_labels(store, cfg), store.meta("model")
    return read_labels(path, keypoints=cfg.keypoints), None


def _store_labels(store, cfg: FinetuneConfig) -> Labels:
    from clamp_track.io.labels import labels_from_store
    from clamp_track.io.video_ref import video_among

    return labels_from_store(store, untouched=cfg.untouched, min_confidence=cfg.min_confidence,
                             video=video_among(store, cfg.videos))


def _nothing_labelled(names: list[str], parts: list[Labels]) -> str:
    if len(names) == 1 and not parts[0].items:
        return (f"{names[0]}: no corrected frames; correct some keypoints first (clamp-track "
                "review)")
    if all(not p.items for p in parts):
        return (f"no corrected frames in {', '.join(names)}; correct some keypoints first "
                "(clamp-track review)")
    return (f"no labelled keypoints in {', '.join(names)} (corrections only mark keypoints as "
            "absent); place some keypoints, or use --untouched confident|all")


# ------------------------------------------------------------------------------ model


@dataclass(frozen=True)
class Start:
    """Where the fine-tune started from (recorded in the checkpoint)."""

    weights: str
    keypoints: str
    adapted: tuple[str, ...] | None = None


def start_model(cfg: FinetuneConfig, labels: Labels, store_meta: dict | None):
    """The model to fine-tune, for the labels' keypoint set.

    Returns:
        ``(model, Start)``.

    Raises:
        CheckpointError: Weights of another keypoint set without ``adapt_keypoints``.
        InputError: No start weights known.
    """
    from clamp_track.models import adapt_to_keypoints, create_model
    from clamp_track.models.registry import VARIANTS

    spec, target = _start_spec(cfg, store_meta), labels.keypoints
    if spec in VARIANTS:
        model = create_model(spec, keypoints=target, clip_weights=cfg.clip_weights)
        init = f"{cfg.clip_weights} CLIP" if cfg.clip_weights else "random"
        return model, Start(f"{spec} ({init} initialisation)", target.name)
    from clamp_track.weights import resolve_pose_weights

    path = resolve_pose_weights(spec)
    model = create_model(weights=path)
    old = model.keypoints
    if old == target:
        return model, Start(str(path), old.name)
    same_names = old.names == target.names  # same prompts, same channels: nothing to adapt
    if not (same_names or cfg.adapt_keypoints):
        raise CheckpointError(
            f"{path}: the weights predict keypoint set {old.name!r} ({_names(old)}) but the "
            f"labels use {target.name!r} ({_names(target)}); pass --adapt-keypoints "
            "(adapt_keypoints=True) to keep the backbone and language parts and train new "
            "keypoint heads for these names")
    model = adapt_to_keypoints(model, target)
    kept = tuple(target.names[j] for j, _ in model.adaptation.matched)
    if not same_names:
        log.info("new keypoint heads for %s: kept %s from %s, new: %s", target.name,
                 ", ".join(kept) or "none", old.name,
                 ", ".join(n for n in target.names if n not in kept) or "none")
    return model, Start(str(path), old.name, None if same_names else kept)


def _start_spec(cfg: FinetuneConfig, meta: dict | None) -> str:
    if cfg.weights:
        return str(cfg.weights)
    if meta and meta.get("weights"):
        return str(meta["weights"])
    if meta and meta.get("variant"):
        log.warning("the store was made with untrained %s weights; fine-tuning starts from "
                    "them (give --from WEIGHTS to start from trained ones)", meta["variant"])
        return str(meta["variant"])
    raise InputError("no start weights: pass --from WEIGHTS (a checkpoint, a cached weights "
                     "name, or a model name such as clamp_rn50)")


def _names(kp: KeypointSet, limit: int = 6) -> str:
    names = list(kp.names[:limit]) + (["..."] if kp.num_keypoints > limit else [])
    return ", ".join(names)


def _freeze(model, cfg: FinetuneConfig) -> None:
    """Freeze the backbone (or only its BatchNorm statistics), as configured."""
    import torch

    if cfg.freeze_backbone:
        model.backbone.requires_grad_(False)
        _keep_eval(model.backbone)
    elif cfg.backbone_bn == "frozen":
        for module in model.backbone.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                _keep_eval(module)


def _keep_eval(module) -> None:
    """Keep ``module`` in eval mode whatever ``model.train()`` asks (frozen statistics)."""
    import torch

    def train(self, mode: bool = True):
        return torch.nn.Module.train(self, False)

    module.train = types.MethodType(train, module)
    module.eval()


# ------------------------------------------------------------------------------ data


def _output_path(cfg: FinetuneConfig, labels: Labels) -> Path:
    if cfg.output:
        return Path(cfg.output)
    from clamp_track.io.store import SUFFIX

    first = labels.labelled_items()[0]
    store = next((s for s in labels.sources if s.endswith(SUFFIX)), None)
    folder = Path(store).parent if store else Path.cwd()
    stem = f"{first.video}.finetuned"
    path, n = folder / f"{stem}.pt", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}.pt"
    return path


def _cache_frames(labels: Labels, run_dir: Path, report: _Reporter) -> Labels:
    """Decode the corrected video frames once into ``run_dir/frames`` (PNG)."""
    from clamp_track.io.labels import write_images

    total = len({i.image_key for i in labels.items if callable(i.image)})

    def tick(done: int, _total: int) -> None:
        report.send(FinetuneProgress("frames", done, total,
                                     message=f"reading corrected frames {done}/{total}"))
        if report.should_stop():
            raise _Stop

    try:
        return write_images(labels, run_dir / "frames", copy_files=False, progress=tick)
    except _Stop:
        return labels


class _Stop(Exception):
    pass


@dataclass
class _Data:
    train: object
    val: object | None
    train_records: list
    val_records: list
    repeats: int
    replay_per_epoch: int
    replay_shared: list[str]


def _datasets(labels: Labels, n_train_items: int, kp: KeypointSet, input_size,
              cfg: FinetuneConfig, replay_records: tuple[list, list[str]]) -> _Data:
    from clamp_track.data.corrections import FinetuneDataset, repeats_for, to_instances
    from clamp_track.data.dataset import TopDownDataset

    margins = {"margin_px": cfg.box_margin_px, "margin_frac": cfg.box_margin_frac}
    items = labels.items
    train = to_instances(items[:n_train_items], kp, **margins)
    val = to_instances(items[n_train_items:], kp, first_image_id=len(items) + 1,
                       first_instance_id=len(items) + 1, **margins)
    if not train:
        raise InputError("no usable training instance (every labelled animal needs a box); "
                         "label at least two keypoints per animal in label files")
    replay, shared = replay_records
    ratio = cfg.replay.ratio if replay else 0.0
    # one epoch = one validation period of about val_every steps: small label sets are
    # repeated, large ones are seen in slices
    repeats = repeats_for(len(train), cfg.batch_size, cfg.val_every, ratio)
    labels_per_epoch = len(train) * repeats if repeats > 1 else min(len(train), math.ceil(
        cfg.val_every * cfg.batch_size / (1.0 + ratio)))
    per_epoch = round(ratio * labels_per_epoch) if replay else 0
    train_set = FinetuneDataset(train * repeats, kp, input_size, cfg.augment,
                                photometric=cfg.photometric, replay=replay,
                                replay_per_epoch=per_epoch, labels_per_epoch=labels_per_epoch,
                                seed=cfg.seed)
    val_set = TopDownDataset(val, kp, input_size) if val else None
    return _Data(train_set, val_set, train, val, repeats, per_epoch, shared)


def _replay_records(cfg: FinetuneConfig, kp: KeypointSet) -> tuple[list, list[str]]:
    if cfg.replay is None:
        return [], []
    from clamp_track.data.coco import load_coco
    from clamp_track.data.corrections import map_records

    base = load_coco(cfg.replay.annotations, cfg.replay.images)
    records, shared = map_records(base.records, base.keypoints, kp)
    log.info("replay: %d instances of %s, sharing %s", len(records), base.path.name,
             ", ".join(shared))
    return records, shared


def _write_split(path: Path, split, cfg: FinetuneConfig) -> None:
    import json

    from clamp_track.config import atomic_write_text

    atomic_write_text(path, json.dumps({
        "seed": cfg.seed, "val_fraction": cfg.val_fraction,
        "train": [_describe(i) for i in split.train],
        "val": [_describe(i) for i in split.val],
    }, indent=1) + "\n")


def _describe(item) -> dict:
    return {"origin": item.origin, "video": item.video, "image": item.image_name,
            "frame": item.frame, "individual": item.individual,
            "labelled": int(item.labelled.sum())}


# ------------------------------------------------------------------------------ training


def _train(model, data: _Data, cfg: FinetuneConfig, run_dir: Path, report: _Reporter,
           start: Start) -> FinetuneResult:
    from clamp_track.data.dataset import iters_per_epoch
    from clamp_track.engine.evaluate import EvalConfig, evaluate
    from clamp_track.engine.trainer import LoopConfig, fit, resolve_device

    eval_cfg = EvalConfig(flip_test=cfg.flip_test, best_metric=METRIC,
                          batch_size=max(cfg.batch_size, 8))
    steps_per_epoch = iters_per_epoch(len(data.train), cfg.batch_size)
    epochs = max(1, math.ceil(cfg.steps / steps_per_epoch))
    loop = LoopConfig(epochs=epochs, batch_size=cfg.batch_size, workers=cfg.workers,
                      optim=_optim(cfg, epochs), eval=eval_cfg, val_interval=1,
                      checkpoint_interval=epochs, device=cfg.device, seed=cfg.seed,
                      amp=True, progress_bar=False)  # fp16 on CUDA: quick fine-tuning
    result = FinetuneResult(None, model.keypoints, run_dir, adapted=start.adapted,
                            train_instances=len(data.train_records),
                            val_instances=len(data.val_records),
                            train_images=len({r.image_id for r in data.train_records}),
                            val_images=len({r.image_id for r in data.val_records}))
    device = resolve_device(cfg.device)
    if data.val is not None:
        model.to(device)
        result.metrics_before = evaluate(model, data.val, eval_cfg, device=device,
                                         amp=loop.amp).metrics  # as fit's validations
        log.info("held-out %s of the start weights: %.3f", METRIC,
                 result.metrics_before[METRIC])
    watch = _EarlyStop(cfg.patience, report)
    trained = fit(model, data.train, loop, run_dir, val_set=data.val, callback=watch,
                  extra={"finetune_run": str(run_dir)})
    result.steps, result.stopped_early = trained.steps, watch.stopped
    result.cancelled = watch.cancelled
    if trained.best is not None:  # also when cancelled: keep the best weights so far
        from clamp_track.models import load_checkpoint

        best = load_checkpoint(trained.best)
        model.load_state_dict(best.state_dict)
        result.metrics_after = best.extra.get("metrics")
        before, after = result.metrics_before[METRIC], result.metrics_after[METRIC]
        if after <= before and not result.cancelled:
            log.warning("fine-tuning did not improve the held-out %s (%.3f before, %.3f "
                        "after); check the corrections, add more, or train longer", METRIC,
                        before, after)
    return result


def _warn_imbalance(items, kp: KeypointSet) -> tuple[str, ...]:
    from clamp_track.data.corrections import imbalance_warnings

    warnings = tuple(imbalance_warnings(items, kp))
    for text in warnings:
        log.warning("training labels: %s", text)
    return warnings


def _optim(cfg: FinetuneConfig, epochs: int):
    from clamp_track.engine.optim import OptimConfig

    return OptimConfig(lr=cfg.lr, weight_decay=cfg.weight_decay,
                       backbone_lr_mult=cfg.backbone_lr_mult, no_decay="norm_bias",
                       warmup_iters=cfg.warmup_steps, warmup_ratio=0.1,
                       milestones=(max(1, round(0.75 * epochs)),) if epochs >= 4 else (),
                       gamma=0.1, clip_grad=cfg.clip_grad)


class _EarlyStop:
    """The ``fit`` callback: progress, cancel, early stopping on the held-out metric."""

    def __init__(self, patience: int, report: _Reporter):
        self.patience, self.report = patience, report
        self.best = None
        self.metric = None
        self.bad = 0
        self.stopped = self.cancelled = False

    def __call__(self, p) -> bool:
        if self.report.should_stop():
            self.cancelled = True
            return True
        if p.event == "epoch" and p.metrics is not None:
            self.metric = p.metrics[METRIC]
            if self.best is None or self.metric > self.best:
                self.best, self.bad = self.metric, 0
            else:
                self.bad += 1
        loss = p.losses.get("total")
        text = f"step {p.step}/{p.total_steps}" + (f", loss {loss:.4g}" if loss else "")
        if self.metric is not None:
            text += f", held-out {METRIC} {100 * self.metric:.1f} (best {100 * self.best:.1f})"
        self.report.send(FinetuneProgress("training", p.step, p.total_steps, p.epoch, loss,
                                          self.metric, self.best, text))
        if self.bad >= self.patience:
            self.stopped = True
            log.info("early stop: %s did not improve for %d validations", METRIC, self.bad)
            return True
        return False


# ------------------------------------------------------------------------------ output


def _provenance(cfg: FinetuneConfig, labels: Labels, split, start: Start,
                result: FinetuneResult, data: _Data) -> dict:
    from clamp_track import __version__
    from clamp_track.config import to_dict

    return {"finetune": {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "clamp_track_version": __version__,
        "start": {"weights": start.weights, "keypoints": start.keypoints,
                  "adapted_keeping": list(start.adapted) if start.adapted is not None
                  else None},
        "sources": list(labels.sources),
        "split": {"seed": cfg.seed, "val_fraction": cfg.val_fraction,
                  "train_images": result.train_images, "val_images": result.val_images,
                  "train_instances": result.train_instances,
                  "val_instances": result.val_instances, "repeats": data.repeats,
                  "replay_per_epoch": data.replay_per_epoch,
                  "replay_keypoints": data.replay_shared},
        "train": [_describe(i) for i in split.train],
        "val": [_describe(i) for i in split.val],
        "recipe": to_dict(cfg),
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "warnings": list(result.warnings),
        "metrics_before": result.metrics_before,
        "metrics_after": result.metrics_after,
    }}


def _save(model, output: Path, extra: dict) -> None:
    from clamp_track.models import save_checkpoint

    save_checkpoint(model, output, extra=extra)
    log.info("wrote %s", output)


def _clean(run_dir: Path) -> None:
    from clamp_track.engine.trainer import BEST, LAST

    for name in (LAST, BEST):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "frames", ignore_errors=True)


