"""The training loop: one function, :func:`fit`, for the CLI, fine-tuning and the GUI.

``fit(model, train_set, config, output)`` trains any pose model on any
:class:`~clamp_track.data.dataset.TopDownDataset` (COCO records, corrected video frames, ...)
with the official recipe (:mod:`clamp_track.engine.optim`), and writes into ``output``:

* ``log.csv`` — one row per iteration: epoch, step, learning rate, every loss term, samples/s;
* ``val.csv`` — one row per evaluation: AP, AP50, AP75, APM, APL, AR, PCK@0.05, PCK@0.1;
* ``last.pt`` — every ``checkpoint_interval`` epochs and at the end: a normal clamp-track
  checkpoint (``create_model(weights=...)`` loads it) that also carries the training state
  (optimizer, schedule position, AMP scaler, RNG, best metric) for ``resume=True``;
* ``best.pt`` — the weights with the best validation metric (``config.eval.best_metric``).

Reproducibility: the sample order and augmentations of epoch ``e`` depend only on
``(seed, e)`` (see :class:`~clamp_track.data.dataset.EpochSampler`), and the torch RNG state is
saved with ``last.pt``, so a run resumed after a crash continues like the uninterrupted run (on
the CPU bit for bit; CUDA kernels may differ in the last bits).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from clamp_track.config import atomic_write_text
from clamp_track.data.dataset import TopDownDataset, make_loader, prepare_batch
from clamp_track.engine.evaluate import METRIC_KEYS, PCK_THRESHOLDS, EvalConfig, evaluate
from clamp_track.engine.optim import OptimConfig, WarmupStepSchedule, build_optimizer
from clamp_track.errors import CheckpointError
from clamp_track.models import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

LAST, BEST = "last.pt", "best.pt"
LOSS_TERMS = ("pose", "spatial", "feature", "total")
LOG_COLUMNS = ("epoch", "step", "lr", *LOSS_TERMS, "samples_per_s", "time_s")  # time_s: Unix time
VAL_COLUMNS = ("epoch", "step", *METRIC_KEYS, *(f"PCK@{t}" for t in PCK_THRESHOLDS))


@dataclass(frozen=True)
class LoopConfig:
    """How to train (defaults: the official AP-10K supervised recipe).

    Attributes:
        epochs: Training epochs.
        batch_size: Samples per step (the paper: 128 = 4 GPUs x 32).
        workers: DataLoader worker processes.
        optim: Optimiser, parameter groups and schedule.
        eval: Validation protocol and the metric that picks ``best.pt``.
        val_interval: Validate every this many epochs (and after the last).
        checkpoint_interval: Write ``last.pt`` every this many epochs (and after the last).
        amp: fp16 mixed precision with loss scaling on CUDA, validation included (ignored on
            the CPU). Off by default: the official configs train and test in fp32.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        seed: Seed of the sample order, the augmentations and torch's RNG.
        progress_bar: Show a tqdm bar (the GUI turns it off and uses the callback).
    """

    epochs: int = 210
    batch_size: int = 128
    workers: int = 4
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    val_interval: int = 10
    checkpoint_interval: int = 10
    amp: bool = False
    device: str = "auto"
    seed: int = 0
    progress_bar: bool = True

    def __post_init__(self):
        for name in ("epochs", "batch_size", "val_interval", "checkpoint_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")


@dataclass(frozen=True)
class TrainProgress:
    """What the callback receives after every step and every epoch.

    Attributes:
        event: ``"step"`` or ``"epoch"`` (end of an epoch, after validation if any).
        epoch: Current epoch, 0-based.
        epochs: Total epochs.
        step: Optimiser steps done so far.
        total_steps: Steps of the whole run.
        lr: Current base learning rate.
        losses: Mean of every loss term over the epoch so far.
        samples_per_s: Training throughput (smoothed).
        metrics: Validation metrics (``"epoch"`` events after a validation), else None.
    """

    event: Literal["step", "epoch"]
    epoch: int
    epochs: int
    step: int
    total_steps: int
    lr: float
    losses: dict[str, float]
    samples_per_s: float
    metrics: dict[str, float] | None = None


#: A progress callback; returning True asks the loop to stop (cancel).
Callback = Callable[[TrainProgress], "bool | None"]


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    Attributes:
        output: The run folder.
        model: The trained model (in memory, on the training device).
        last: ``last.pt`` if written.
        best: ``best.pt`` if written.
        epochs_done: Completed epochs.
        steps: Optimiser steps done.
        best_metric: ``(name, value, epoch)`` of the best validation, or None.
        metrics: The last validation metrics, or None.
        cancelled: The callback stopped the run.
    """

    output: Path
    model: torch.nn.Module = field(repr=False)
    last: Path | None = None
    best: Path | None = None
    epochs_done: int = 0
    steps: int = 0
    best_metric: tuple[str, float, int] | None = None
    metrics: dict[str, float] | None = None
    cancelled: bool = False


@dataclass
class _State:
    epoch: int = 0
    step: int = 0
    best: tuple[str, float, int] | None = None
    metrics: dict | None = None


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fit(
    model: torch.nn.Module,
    train_set: TopDownDataset,
    config: LoopConfig,
    output: str | Path,
    *,
    val_set: TopDownDataset | None = None,
    resume: bool = False,
    callback: Callback | None = None,
    extra: dict | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_set``, validating on ``val_set``.

    ``torch.manual_seed(config.seed)`` is called first (dropout and drop-path draws), so the
    caller's global torch RNG is reseeded.

    Args:
        model: A pose model (e.g. from ``create_model``); trained in place.
        train_set: Augmenting dataset of the training records.
        config: The recipe.
        output: Run folder (created) for the logs and checkpoints.
        val_set: Un-augmented dataset to evaluate on (AP needs its ground truth).
        resume: Continue from ``output/last.pt`` (model, optimizer, schedule, scaler, RNG,
            epoch, best metric); the CSV logs are cut back to that point.
        callback: Called with a :class:`TrainProgress` after every step and epoch; returning
            True stops the run (``result.cancelled``; the last checkpoint stays as it was).
        extra: Plain data stored in every checkpoint (e.g. the resolved run config).

    Returns:
        A :class:`TrainResult`.

    Raises:
        CheckpointError: If ``resume`` finds no usable ``last.pt``.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if len(train_set) == 0:
        raise ValueError("the training set is empty")
    device = resolve_device(config.device)
    amp = config.amp and device.type == "cuda"
    torch.manual_seed(config.seed)
    model.to(device).train()
    loader = make_loader(train_set, config.batch_size, shuffle=True, workers=config.workers,
                         seed=config.seed, pin_memory=device.type == "cuda")
    optimizer = build_optimizer(model, config.optim)
    schedule = WarmupStepSchedule(optimizer, config.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    parts = _Parts(model, optimizer, schedule, scaler, device, amp)
    train_log = _CsvLog(output / "log.csv", LOG_COLUMNS)
    val_log = _CsvLog(output / "val.csv", VAL_COLUMNS)
    state = _State()
    if resume:
        state = _restore(output / LAST, parts)
        train_log.cut("step", state.step)
        val_log.cut("epoch", state.epoch)
        log.info("resumed %s at epoch %d, step %d", output / LAST, state.epoch, state.step)
    else:
        train_log.start()
        val_log.start()
    n_params = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    log.info("training %.1f M parameters on %d samples, %d steps/epoch, on %s%s",
             n_params / 1e6, len(train_set), len(loader), device, " with AMP" if amp else "")
    run = _Run(config, parts, loader, train_log, callback, state)
    result = TrainResult(output, model)
    extra = dict(extra or {})
    for epoch in range(state.epoch, config.epochs):
        if run.train_epoch(epoch):
            result.cancelled = True
            break
        state.epoch = epoch + 1
        last_epoch = state.epoch == config.epochs
        validated = val_set is not None and (state.epoch % config.val_interval == 0
                                             or last_epoch)
        if validated:
            _validate(run, val_set, val_log, output, extra)
        if state.epoch % config.checkpoint_interval == 0 or last_epoch:
            _save_last(output / LAST, parts, state, extra)
        if run.notify("epoch", epoch, metrics=state.metrics if validated else None):
            result.cancelled = True
            break
    result.last = output / LAST if (output / LAST).is_file() else None
    result.best = output / BEST if (output / BEST).is_file() else None
    result.epochs_done, result.steps = state.epoch, state.step
    result.best_metric, result.metrics = state.best, state.metrics
    return result


@dataclass
class _Parts:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: WarmupStepSchedule
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: bool


class _Run:
    """The per-epoch work of :func:`fit` and its running statistics."""

    def __init__(self, config: LoopConfig, parts: _Parts, loader, train_log, callback, state):
        self.config, self.parts, self.loader = config, parts, loader
        self.train_log, self.callback, self.state = train_log, callback, state
        self.total_steps = config.epochs * len(loader)
        self.losses: dict[str, float] = {}
        self.lr = 0.0
        self.speed = 0.0

    def train_epoch(self, epoch: int) -> bool:
        """One epoch; returns True if the callback asked to stop."""
        from tqdm.auto import tqdm

        self.loader.sampler.set_epoch(epoch)
        self.parts.model.train()
        sums: dict[str, float] = {}
        n = 0
        bar = tqdm(total=len(self.loader), desc=f"epoch {epoch + 1}/{self.config.epochs}",
                   disable=not self.config.progress_bar, leave=False, dynamic_ncols=True)
        tick = time.perf_counter()
        try:
            for batch in self.loader:
                values = self.step(batch, epoch)
                now = time.perf_counter()
                speed = len(batch["index"]) / max(now - tick, 1e-9)
                self.speed = speed if n == 0 else 0.9 * self.speed + 0.1 * speed
                tick = now
                n += 1
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                self.losses = {k: v / n for k, v in sums.items()}
                self.train_log.write({"epoch": epoch, "step": self.state.step, "lr": self.lr,
                                      **values, "samples_per_s": speed, "time_s": time.time()})
                bar.set_postfix({**{k: f"{v:.4g}" for k, v in self.losses.items()},
                                 "lr": f"{self.lr:.2e}", "samples/s": f"{self.speed:.1f}"},
                                refresh=False)
                bar.update()
                if self.notify("step", epoch):
                    return True
        finally:
            bar.close()
            self.train_log.flush()
        log.info("epoch %d/%d: %s, %.1f samples/s", epoch + 1, self.config.epochs,
                 ", ".join(f"{k} {v:.4g}" for k, v in self.losses.items()), self.speed)
        return False

    def step(self, batch: dict, epoch: int) -> dict[str, float]:
        """One optimiser step; returns the loss terms."""
        p = self.parts
        self.lr = p.schedule.set(epoch, self.state.step)
        b = prepare_batch(batch, p.model.config, p.device)
        with torch.autocast(p.device.type, torch.float16, enabled=p.amp):
            outputs = p.model(b.images)
        losses = p.model.loss(outputs, b.targets, b.target_weights, b.keypoints, b.visible)
        if not math.isfinite(losses["total"].item()):
            raise FloatingPointError(
                f"the loss became {losses['total'].item()} at step {self.state.step}; "
                "lower the learning rate or enable clip_grad"
            )
        p.optimizer.zero_grad(set_to_none=True)
        p.scaler.scale(losses["total"]).backward()
        clip = self.config.optim.clip_grad
        if clip is not None:
            p.scaler.unscale_(p.optimizer)
            torch.nn.utils.clip_grad_norm_(
                [q for g in p.optimizer.param_groups for q in g["params"]], clip)
        p.scaler.step(p.optimizer)
        p.scaler.update()
        self.state.step += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    def notify(self, event: str, epoch: int, metrics=None) -> bool:
        """Call the callback; True means stop."""
        if self.callback is None:
            return False
        progress = TrainProgress(event, epoch, self.config.epochs, self.state.step,
                                 self.total_steps, self.lr, dict(self.losses), self.speed,
                                 metrics)
        return bool(self.callback(progress))


def _validate(run: _Run, val_set, val_log, output: Path, extra: dict) -> None:
    """Evaluate, log, and write ``best.pt`` when the chosen metric improves."""
    cfg, state, parts = run.config, run.state, run.parts
    result = evaluate(parts.model, val_set, cfg.eval, device=parts.device,
                      workers=min(cfg.workers, 2), amp=parts.amp)
    state.metrics = result.metrics
    val_log.write({"epoch": state.epoch, "step": state.step, **result.metrics})
    val_log.flush()
    name = cfg.eval.best_metric
    value = result.metrics[name]
    log.info("validation after epoch %d: %s", state.epoch,
             ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items()))
    if value >= 0 and (state.best is None or value > state.best[1]):
        state.best = (name, value, state.epoch)
        save_checkpoint(parts.model, output / BEST, extra={
            **extra, "epoch": state.epoch, "step": state.step, "metrics": result.metrics})


def _save_last(path: Path, parts: _Parts, state: _State, extra: dict) -> None:
    train_state = {
        "epoch": state.epoch,
        "step": state.step,
        "optimizer": parts.optimizer.state_dict(),
        "schedule": parts.schedule.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "best": list(state.best) if state.best else None,
        "metrics": state.metrics,
    }
    save_checkpoint(parts.model, path, extra={
        **extra, "epoch": state.epoch, "step": state.step, "train_state": train_state})


def _restore(path: Path, parts: _Parts) -> _State:
    if not path.is_file():
        raise CheckpointError(f"{path}: nothing to resume (no checkpoint); start without --resume")
    ckpt = load_checkpoint(path)
    train_state = ckpt.extra.get("train_state")
    if train_state is None:
        raise CheckpointError(f"{path}: has no training state to resume from")
    model = parts.model
    if ckpt.config != model.config or ckpt.keypoints != model.keypoints:
        raise CheckpointError(
            f"{path}: was trained with another model or keypoint set than this run's; "
            "resume with the same config or choose another output folder"
        )
    model.load_state_dict(ckpt.state_dict)
    try:
        parts.optimizer.load_state_dict(train_state["optimizer"])
    except ValueError:  # parameter groups of another size
        raise CheckpointError(
            f"{path}: was trained with other optimizer parameter groups than this run's "
            "(train.optim.no_decay / bias_decay, or frozen parts); resume with the run's "
            "config.resolved.yaml"
        ) from None
    parts.schedule.load_state_dict(train_state["schedule"])
    if train_state["scaler"]:  # empty when saved without AMP (e.g. on the CPU)
        parts.scaler.load_state_dict(train_state["scaler"])
    torch.set_rng_state(train_state["rng_cpu"])
    if train_state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(train_state["rng_cuda"])
    best = train_state.get("best")
    return _State(train_state["epoch"], train_state["step"], tuple(best) if best else None,
                  train_state.get("metrics"))


class _CsvLog:
    """An append-only CSV file with a fixed header; :meth:`cut` drops rows past a point."""

    def __init__(self, path: Path, columns):
        self.path, self.columns = path, tuple(columns)
        self._fh = None
        self._writer = None

    def start(self) -> None:
        """Begin a new file with the header."""
        atomic_write_text(self.path, ",".join(self.columns) + "\n")

    def cut(self, column: str, last: int) -> None:
        """Keep the rows whose ``column`` is <= ``last`` (rows after a resumed checkpoint)."""
        if not self.path.is_file():
            self.start()
            return
        with open(self.path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get(column) and int(r[column]) <= last]
        lines = [",".join(self.columns)]
        lines += [",".join(r.get(c, "") or "" for c in self.columns) for r in rows]
        atomic_write_text(self.path, "\n".join(lines) + "\n")

    def write(self, row: dict) -> None:
        """Append one row (missing columns stay empty)."""
        if self._fh is None:
            self._fh = open(self.path, "a", newline="")  # noqa: SIM115 - kept open across rows
            self._writer = csv.DictWriter(self._fh, self.columns, extrasaction="ignore")
        self._writer.writerow({k: _fmt(v) for k, v in row.items()})
        self._fh.flush()

    def flush(self) -> None:
        """Flush and close (reopened by the next write)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = self._writer = None


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
