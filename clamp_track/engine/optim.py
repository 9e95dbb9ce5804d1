"""Optimiser and learning-rate schedule of the official recipe (``clamp-model-spec.md`` §2).

**Parameter groups.** The official configs build AdamW with mmcv's ``paramwise_cfg``
``custom_keys``, matched as substrings of a parameter's name, longest key first, and only the
first match applies:

* RN50 (``CLAMP_res50_ap10k_256x256.py``): ``text_encoder`` lr ×0, ``bias`` decay ×0, ``norm``
  decay ×0. So *every* bias (93 tensors in CLAMP RN50 besides the context decoder's ``norm``
  biases: convolutions, linear layers, the attention pool's and the prompt encoder's
  ``in_proj_bias``, the heads) and the context decoder's ``norm1/2/3`` LayerNorms go without
  weight decay. CLIP's layers are called ``ln_*`` / ``bn*``, so ``norm`` reaches nothing else.
* ViT-B (``CLAMP_ViTB_ap10k_256x256.py``): ``text_encoder`` lr ×0, ``backbone`` lr ×0.1,
  ``norm`` decay ×0; ``backbone`` is the longer key, so ``norm`` never reaches backbone
  parameters: only the context decoder's ``norm1/2/3`` go without decay, and biases decay.

``no_decay="official"`` (the default, for reproducing the paper) does exactly that, with
``bias_decay`` choosing between the two configs (False: RN50, the default; True: ViT-B; every
preset states it). ``no_decay="norm_bias"`` is the common modern choice — no decay on every
norm, bias, embedding and scalar (all parameters with fewer than 2 dimensions, plus
positional/class embeddings and the learnable prompt contexts) — which can help small
fine-tuning sets; with weight decay 1e-4 the choices barely differ. The text encoder is frozen
(``requires_grad=False``), so it is simply not in any group; gradients still reach ``contexts``
through it.

**Schedule** (mmcv's ``step`` policy with linear warm-up): the rate of epoch ``e`` is
``lr * gamma ** (number of milestones <= e)``; during the first ``warmup_iters`` iterations it is
multiplied by ``1 - (1 - i / warmup_iters) * (1 - warmup_ratio)``, so the first step runs at
``warmup_ratio * lr``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

#: Parameters (by name) treated as embeddings by ``no_decay="norm_bias"``.
EMBEDDING_NAMES = ("positional_embedding", "class_embedding", "contexts", "token_embedding")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW, parameter groups and schedule (defaults: official AP-10K supervised RN50).

    Attributes:
        lr: Base learning rate.
        weight_decay: AdamW (decoupled) weight decay.
        betas: AdamW betas.
        backbone_lr_mult: Learning-rate multiplier of the image backbone (0.1 for ViT-B).
        no_decay: Which parameters skip weight decay: ``"official"`` (names containing
            ``norm`` outside backbone/text encoder, and biases unless ``bias_decay``) or
            ``"norm_bias"`` (all norms, biases, embeddings and scalars).
        bias_decay: With ``no_decay="official"``: biases get weight decay, as in the official
            ViT-B config; False (the default): they do not, as in the official RN50 config
            (``bias`` decay ×0).
        warmup_iters: Linear warm-up iterations (0 disables it).
        warmup_ratio: Learning-rate factor of the first warm-up iteration.
        milestones: Epochs (0-based) from which the rate is multiplied by ``gamma`` again.
        gamma: Step decay factor.
        clip_grad: Clip the global gradient norm to this value (None: no clipping).
    """

    lr: float = 5e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    backbone_lr_mult: float = 1.0
    no_decay: Literal["official", "norm_bias"] = "official"
    bias_decay: bool = False
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    milestones: tuple[int, ...] = (170, 200)
    gamma: float = 0.1
    clip_grad: float | None = None

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {list(self.milestones)}")


def decays(name: str, param: torch.Tensor, rule: str, bias_decay: bool = False) -> bool:
    """Whether parameter ``name`` gets weight decay under ``rule`` (see the module docstring)."""
    if rule == "official":
        if not bias_decay and "bias" in name:
            return False
        return not ("norm" in name and not name.startswith(("backbone.", "text_encoder.")))
    if param.ndim < 2:
        return False
    return not any(e in name for e in EMBEDDING_NAMES)


def parameter_groups(model: torch.nn.Module, cfg: OptimConfig) -> list[dict]:
    """AdamW parameter groups: (backbone or not) x (decay or not), trainable parameters only.

    Each group carries ``name``, ``lr`` (base rate times its multiplier), ``initial_lr`` (the
    same, used by the schedule) and ``weight_decay``.
    """
    groups: dict[tuple[bool, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        backbone = name.startswith("backbone.")
        decay = decays(name, param, cfg.no_decay, cfg.bias_decay)
        group = groups.get((backbone, decay))
        if group is None:
            lr = cfg.lr * (cfg.backbone_lr_mult if backbone else 1.0)
            group = groups[(backbone, decay)] = {
                "name": f"{'backbone' if backbone else 'heads'}{'' if decay else '_no_decay'}",
                "params": [], "lr": lr, "initial_lr": lr,
                "weight_decay": cfg.weight_decay if decay else 0.0,
            }
        group["params"].append(param)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`."""
    return torch.optim.AdamW(parameter_groups(model, cfg), lr=cfg.lr, betas=cfg.betas,
                             weight_decay=cfg.weight_decay)


def lr_factor(epoch: int, step: int, cfg: OptimConfig) -> float:
    """Multiplier of the base rate at global iteration ``step`` (0-based) in ``epoch``."""
    factor = cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if step < cfg.warmup_iters:
        factor *= 1 - (1 - step / cfg.warmup_iters) * (1 - cfg.warmup_ratio)
    return factor


class WarmupStepSchedule:
    """Sets every group's rate to ``initial_lr * lr_factor(epoch, step)`` before each step.

    Its state is the position ``(epoch, step)``; the rate is a pure function of it, so a resumed
    run continues exactly where the checkpoint left off.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: OptimConfig):
        self.optimizer, self.cfg = optimizer, cfg
        self.epoch = self.step_count = 0

    def set(self, epoch: int, step: int) -> float:
        """Move to iteration ``step`` of ``epoch``; returns the base (non-backbone) rate."""
        self.epoch, self.step_count = epoch, step
        factor = lr_factor(epoch, step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        return self.cfg.lr * factor

    def state_dict(self) -> dict:
        """The position."""
        return {"epoch": self.epoch, "step": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        """Restore the position and the rates that go with it."""
        self.set(int(state["epoch"]), int(state["step"]))
