"""A training run described by one YAML file: ``clamp-track train configs/X.yaml``.

:class:`TrainConfig` is the strict, frozen config of a run (model, data, regime, augmentation,
recipe); :func:`run_training` reads the COCO files, applies the regime, builds the model and
calls :func:`~clamp_track.engine.trainer.fit`. Next to the checkpoints it writes
``config.resolved.yaml`` (every setting, defaults included) and ``samples.json`` (the exact
training and validation instances, with the sampling seed). :func:`run_seeds` repeats a run
over several seeds (few-/zero-shot rows) and reports every metric's mean ± sd.

Relative data paths are resolved against ``data.root``, and a relative ``data.root`` against
the current directory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
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


@dataclass(frozen=True)
class SeedSummary:
    """What :func:`run_seeds` returns: every seed's metrics and their mean and spread.

    Attributes:
        output: Folder holding ``seed<N>/`` runs, ``seeds.json`` and ``seeds.csv``.
        seeds: The seeds, in run order.
        checkpoint: Which validation each run contributes: ``"best"`` (the one with the best
            ``train.eval.best_metric``, the checkpoint the official configs keep with
            ``save_best``) or ``"final"``.
        per_seed: ``{seed: metrics}`` (fractions, as ``val.csv``).
        mean: Mean of every metric over the seeds.
        sd: Sample standard deviation (n - 1; 0 for one seed).
    """

    output: Path
    seeds: tuple[int, ...]
    checkpoint: str
    per_seed: dict[int, dict[str, float]]
    mean: dict[str, float]
    sd: dict[str, float]

    def format(self) -> str:
        """``AP 54.0 ± 0.8`` lines (percent, as the paper), one per metric."""
        lines = [f"{len(self.seeds)} seeds ({', '.join(map(str, self.seeds))}), "
                 f"{self.checkpoint} validation of each run, mean ± sd:"]
        for key, mean in self.mean.items():
            if mean < 0:
                lines.append(f"{key:>8}   n/a")
                continue
            values = ", ".join(f"{100 * m[key]:.1f}" for m in self.per_seed.values())
            lines.append(f"{key:>8} {100 * mean:5.1f} ± {100 * self.sd[key]:.1f}   ({values})")
        return "\n".join(lines)


def seed_config(cfg: TrainConfig, seed: int) -> TrainConfig:
    """``cfg`` with every seed set to ``seed``.

    That is the few-shot draw (``regime.seed``) and the initialisation, sample order and
    augmentations (``train.seed``).
    """
    return replace(cfg, regime=replace(cfg.regime, seed=seed),
                   train=replace(cfg.train, seed=seed))


def run_metrics(run: Path, best_metric: str, checkpoint: str = "best") -> dict[str, float]:
    """The metrics of one run's ``val.csv``: the best validation by ``best_metric``, or the last.

    Raises:
        InputError: If the run has no validation.
    """
    import csv

    from clamp_track.engine.trainer import VAL_COLUMNS

    path = Path(run) / "val.csv"
    rows = []
    if path.is_file():
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get(best_metric)]
    if not rows:
        raise InputError(f"{path}: no validation to summarise; the config needs data.val")
    row = max(rows, key=lambda r: float(r[best_metric])) if checkpoint == "best" else rows[-1]
    return {k: float(row[k]) for k in VAL_COLUMNS if k not in ("epoch", "step") and row.get(k)}


def run_seeds(
    cfg: TrainConfig,
    seeds: Sequence[int],
    *,
    output: str | Path | None = None,
    resume: bool = False,
    checkpoint: str = "best",
    callback: Callback | None = None,
) -> SeedSummary:
    """Train one config once per seed and summarise the spread (few-/zero-shot rows).

    Each seed's run goes to ``output/seed<N>/`` (a normal run folder); ``output/seeds.json``
    and ``output/seeds.csv`` get every seed's metrics and their mean ± sd.

    Args:
        cfg: The run (its ``regime.seed`` and ``train.seed`` are replaced by each seed).
        seeds: Distinct seeds.
        output: Parent folder (default ``cfg.output``, else ``runs/train``).
        resume: Continue unfinished seed runs (finished ones are only read).
        checkpoint: ``"best"`` or ``"final"`` validation of each run.
        callback: Progress callback of every run.

    Returns:
        The :class:`SeedSummary`.

    Raises:
        InputError: If seeds repeat, or a seed's folder holds a run and ``resume`` is False.
    """
    seeds = tuple(int(s) for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds: give distinct seeds, got {list(seeds)}")
    if checkpoint not in ("best", "final"):
        raise ValueError(f"checkpoint must be 'best' or 'final', got {checkpoint!r}")
    out = Path(output or cfg.output or "runs/train")
    for seed in seeds:
        run = out / f"seed{seed}"
        log.info("seed %d -> %s", seed, run)
        run_training(seed_config(cfg, seed), output=run,
                     resume=resume and (run / LAST).is_file(), callback=callback)
    return summarise_seeds(out, seeds, cfg.train.eval.best_metric, checkpoint,
                           description=cfg.description)


def summarise_seeds(output: str | Path, seeds: Sequence[int], best_metric: str = "AP",
                    checkpoint: str = "best", *, description: str = "") -> SeedSummary:
    """Mean ± sd of the runs ``output/seed<N>/`` and write ``seeds.json`` / ``seeds.csv``.

    Args:
        output: Parent folder of the seed runs.
        seeds: Their seeds.
        best_metric: Metric that picks each run's best validation.
        checkpoint: ``"best"`` or ``"final"`` validation of each run.
        description: Stored in ``seeds.json`` (the config's description).

    Returns:
        The :class:`SeedSummary`.
    """
    import statistics

    out = Path(output)
    seeds = tuple(int(s) for s in seeds)
    per_seed = {s: run_metrics(out / f"seed{s}", best_metric, checkpoint) for s in seeds}
    keys = [k for k in per_seed[seeds[0]] if all(k in m for m in per_seed.values())]
    mean, sd = {}, {}
    for k in keys:
        values = [m[k] for m in per_seed.values()]
        if min(values) < 0:  # -1: COCOeval had nothing to score (e.g. no medium animals)
            mean[k] = sd[k] = -1.0
            continue
        mean[k] = statistics.fmean(values)
        sd[k] = statistics.stdev(values) if len(values) > 1 else 0.0
    summary = SeedSummary(out, seeds, checkpoint, per_seed, mean, sd)
    atomic_write_text(out / "seeds.json", json.dumps({
        "config": description, "seeds": list(seeds), "checkpoint": checkpoint,
        "per_seed": {str(s): m for s, m in per_seed.items()}, "mean": mean, "sd": sd,
    }, indent=1) + "\n")
    lines = [",".join(["seed", *keys])]
    lines += [",".join([str(s), *(f"{m[k]:.6g}" for k in keys)]) for s, m in per_seed.items()]
    lines += [",".join(["mean", *(f"{mean[k]:.6g}" for k in keys)]),
              ",".join(["sd", *(f"{sd[k]:.6g}" for k in keys)])]
    atomic_write_text(out / "seeds.csv", "\n".join(lines) + "\n")
    return summary
