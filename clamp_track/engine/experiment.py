"""A training run described by one YAML file: ``clamp-track train configs/X.yaml``.

:class:`TrainConfig` is the strict, frozen config of a run (model, data, regime, augmentation,
recipe); :func:`run_training` reads the COCO files, applies the regime, builds the model and
calls :func:`~clamp_track.engine.trainer.fit`. Next to the checkpoints it writes
``config.resolved.yaml`` (every setting, defaults included) and ``samples.json`` (the exact
training and validation instances, with the sampling seed).

Relative data paths are resolved against ``data.root``, and a relative ``data.root`` against
the current directory.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

import torch

from clamp_track.config import atomic_write_text, dump_yaml, to_dict
from clamp_track.data.augment import AugmentConfig
from clamp_track.data.coco import CocoData, load_coco
from clamp_track.data.dataset import TopDownDataset
from clamp_track.engine.regimes import RegimeConfig, apply_regime, sample_list
from clamp_track.engine.trainer import LAST, Callback, LoopConfig, TrainResult, fit
from clamp_track.errors import CheckpointError, InputError
from clamp_track.models import (
    ModelConfig,
    PoseModel,
    build_model,
    check_fits,
    init_pretrained,
    load_checkpoint,
)
from clamp_track.models.registry import get_config
from clamp_track.skeleton import KeypointSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitConfig:
    """One COCO keypoint file and its image folder (relative to ``data.root``)."""

    annotations: str
    images: str = "."


@dataclass(frozen=True)
class DataConfig:
    """Where the data is.

    Attributes:
        root: Folder the split paths are relative to.
        train: Training split.
        val: Validation split (evaluated every ``train.val_interval`` epochs).
        keypoints: ``ap10k``, ``animalpose`` or a keypoint-set file; default: from the
            annotation file's category.
        skip_bad: Skip damaged records (counted in the log) instead of stopping.
    """

    root: str = "."
    train: SplitConfig | None = None
    val: SplitConfig | None = None
    keypoints: str | None = None
    skip_bad: bool = False

    def path(self, relative: str) -> Path:
        """``relative`` resolved against :attr:`root`."""
        return Path(self.root) / relative


@dataclass(frozen=True)
class ModelOverrides:
    """Model-config fields a run may change (loss and ablations); None keeps the variant's.

    Attributes:
        pose_weight: Weight of L_pose.
        spatial_weight: Weight of L_spatial (0: without L_spatial).
        feature_weight: Weight of L_feature (0: without L_feature).
        feature_loss: ``"official"`` (the official code's L_feature, every preset) or
            ``"bilinear"`` (see :mod:`clamp_track.models.losses`).
        use_prompt_encoder: False: without the prompt encoder.
    """

    pose_weight: float | None = None
    spatial_weight: float | None = None
    feature_weight: float | None = None
    feature_loss: Literal["official", "bilinear"] | None = None
    use_prompt_encoder: bool | None = None

    def apply(self, config: ModelConfig) -> ModelConfig:
        """``config`` with the given fields replaced."""
        changes = {f.name: getattr(self, f.name) for f in fields(self)
                   if getattr(self, f.name) is not None}
        return replace(config, **changes)


@dataclass(frozen=True)
class PaperResult:
    """The paper's numbers for a preset (percent), for the record and the docs."""

    table: str
    row: str
    AP: float | None = None
    AP50: float | None = None
    AP75: float | None = None
    APM: float | None = None
    APL: float | None = None
    AR: float | None = None


@dataclass(frozen=True)
class TrainConfig:
    """A complete training run.

    Attributes:
        description: Free text (which paper row this is).
        model: Variant name (``clamp_rn50``, ``simplebaseline_vitb16``, ...).
        clip_weights: Pretrained initialisation: ``"openai"`` (CLIP), ``"imagenet"`` (the
            ImageNet SimpleBaseline) or a file; None: random init (see ``init_pretrained``).
        weights: Start from this clamp-track/official checkpoint instead (fine-tuning).
        model_overrides: Loss weights / prompt encoder for ablations.
        data: The COCO files.
        regime: supervised, few-shot or zero-shot.
        augment: Training augmentation.
        train: The recipe (epochs, batch, optimiser, schedule, evaluation, checkpoints).
        output: Run folder (default ``runs/<config file name>``).
        paper: The paper's numbers for this run, if it reproduces a table row.
    """

    description: str = ""
    model: str = "clamp_rn50"
    clip_weights: str | None = "openai"
    weights: str | None = None
    model_overrides: ModelOverrides = field(default_factory=ModelOverrides)
    data: DataConfig = field(default_factory=DataConfig)
    regime: RegimeConfig = field(default_factory=RegimeConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    output: str | None = None
    paper: PaperResult | None = None


def load_data(cfg: TrainConfig) -> tuple[CocoData, CocoData | None]:
    """Read the training and validation files and apply the regime."""
    data = cfg.data
    if data.train is None:
        raise InputError("the config has no data.train (annotations and images of the "
                         "training split)")
    train = load_coco(data.path(data.train.annotations), data.path(data.train.images),
                      data.keypoints, skip_bad=data.skip_bad)
    val = None
    if data.val is not None:
        val = load_coco(data.path(data.val.annotations), data.path(data.val.images),
                        train.keypoints, skip_bad=data.skip_bad)
    return apply_regime(train, val, cfg.regime)


def build_training_model(cfg: TrainConfig, keypoints: KeypointSet) -> PoseModel:
    """The model to train: variant + overrides, from a checkpoint, CLIP, or random init.

    Raises:
        CheckpointError: If ``weights`` do not fit the model or the keypoint set.
    """
    torch.manual_seed(cfg.train.seed)
    if cfg.weights is not None:
        ckpt = load_checkpoint(cfg.weights, keypoints=keypoints)
        if ckpt.keypoints != keypoints:
            raise CheckpointError(
                f"{cfg.weights}: trained for keypoint set {ckpt.keypoints.name!r}, the data "
                f"uses {keypoints.name!r}"
            )
        config = cfg.model_overrides.apply(ckpt.config)
        model = build_model(config, keypoints)
        check_fits(ckpt, config, keypoints, cfg.model)
        model.load_state_dict(ckpt.state_dict)
        return model
    config = cfg.model_overrides.apply(get_config(cfg.model))
    model = build_model(config, keypoints)
    if cfg.clip_weights is not None:
        init_pretrained(model, cfg.clip_weights)
    return model


def run_training(
    cfg: TrainConfig,
    *,
    output: str | Path | None = None,
    resume: bool = False,
    callback: Callback | None = None,
) -> TrainResult:
    """Run a configured training: data, regime, model, :func:`fit`.

    Args:
        cfg: The run.
        output: Run folder (default ``cfg.output``, else ``runs/train``).
        resume: Continue the run in ``output`` from its ``last.pt``.
        callback: Progress callback (see :func:`~clamp_track.engine.trainer.fit`).

    Returns:
        The :class:`~clamp_track.engine.trainer.TrainResult`.

    Raises:
        InputError: If ``output`` holds a run and ``resume`` is False, or the data is bad.
    """
    out = Path(output or cfg.output or "runs/train")
    if not resume and (out / LAST).is_file():
        raise InputError(f"{out}: holds a run already ({LAST}); pass --resume to continue "
                         "it, or choose another output folder (-o/--output)")
    train, val = load_data(cfg)
    out.mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, out / "config.resolved.yaml")
    samples = sample_list(train, val, cfg.regime)
    samples_file = out / "samples.json"
    if resume and samples_file.is_file() and json.loads(samples_file.read_text()) != samples:
        raise InputError(f"{samples_file}: the run was trained on other samples than this "
                         "config selects (data, regime or seed changed); resume with the "
                         "run's config.resolved.yaml")
    atomic_write_text(samples_file, json.dumps(samples, indent=1) + "\n")
    log.info("training on %d instances (%d species)%s", len(train.records),
             len(samples["train"]["per_species"]),
             f", validating on {len(val.records)}" if val is not None else "")
    model = build_training_model(cfg, train.keypoints)
    size = model.config.input_size
    train_set = TopDownDataset(train.records, train.keypoints, size, cfg.augment,
                               seed=cfg.train.seed)
    val_set = None
    if val is not None:
        val_set = TopDownDataset(val.records, val.keypoints, size,
                                 ground_truth=val.ground_truth)
    return fit(model, train_set, cfg.train, out, val_set=val_set, resume=resume,
               callback=callback, extra={"run": to_dict(cfg)})
