"""Initialising a pose model from CLIP weights (OpenAI ``RN50.pt`` / ``ViT-B-16.pt`` layout).

Accepts OpenAI's TorchScript archives and plain state dicts with the same keys (open_clip's
``open_clip_pytorch_model.bin`` / ``.safetensors`` for the ``openai`` tag). Loading does what the
official code's ``init_weights`` does:

* ``visual.*`` -> ``backbone.*``; the attention-pool (RN) or patch (ViT) positional embedding is
  bilinearly resized from CLIP's 224-px grid (7x7 / 14x14) to the model's grid (8x8 / 16x16);
* the text tower -> ``text_encoder.*``, the positional embedding truncated to the first 13 rows;
* everything else (context decoder, heads, contexts, gamma, logit scale) keeps its init.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from clamp_track.errors import CheckpointError
from clamp_track.models.backbones import resize_pos_embed

_TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.",
              "text_projection")


def read_clip_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a CLIP weights file as a float32 state dict with OpenAI's key names."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: CLIP weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            try:
                with warnings.catch_warnings():  # torch.jit.load's deprecation notice
                    warnings.simplefilter("ignore", FutureWarning)
                    state = torch.jit.load(str(path), map_location="cpu").state_dict()
            except RuntimeError:  # not TorchScript: a plain state dict
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read CLIP weights ({exc.__class__.__name__}); "
                              "re-download the file") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or "visual.conv1.weight" not in state:
        raise CheckpointError(f"{path}: not a CLIP weights file (no visual.conv1.weight)")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def clip_to_model_state(clip_state: dict, model) -> dict[str, torch.Tensor]:
    """Map a CLIP state dict onto ``model``'s parameter names and shapes.

    Args:
        clip_state: OpenAI-layout CLIP weights (float32).
        model: A pose model whose backbone (and text encoder, for CLAMP) come from CLIP.

    Returns:
        Partial state dict for ``model`` (the keys CLIP provides).
    """
    own = model.state_dict()
    out = {}
    for key, value in clip_state.items():
        if key.startswith("visual."):
            target = "backbone." + key[len("visual."):]
        elif key.startswith(_TEXT_KEYS):
            target = "text_encoder." + key
        else:
            continue  # logit_scale, input_resolution, context_length, vocab_size
        if target not in own:
            continue  # e.g. the pool of a baseline backbone, or the text tower of a baseline
        out[target] = _fit(target, value, own[target].shape)
    return out


def _fit(key: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if value.shape == shape:
        return value
    if key == "text_encoder.positional_embedding" and value.shape[1:] == shape[1:]:
        return value[: shape[0]]  # 77 -> 13 rows
    if key.endswith("positional_embedding") and value.shape[1:] == shape[1:]:
        side = int(round((shape[0] - 1) ** 0.5))
        return resize_pos_embed(value, (side, side))  # 7x7 -> 8x8 (RN), 14x14 -> 16x16 (ViT)
    raise CheckpointError(
        f"CLIP weight {key} has shape {tuple(value.shape)}, the model needs {tuple(shape)}: "
        "the CLIP file is for a different architecture"
    )


def load_clip_weights(model, path: str | os.PathLike) -> None:
    """Initialise ``model``'s backbone and text encoder from a CLIP weights file.

    Raises:
        CheckpointError: If the file is unreadable or does not provide every CLIP-initialised
            parameter with a compatible shape.
    """
    clip_state = read_clip_state_dict(path)
    try:
        mapped = clip_to_model_state(clip_state, model)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    wanted = [
        k for k in model.state_dict()
        if k.startswith(("backbone.", "text_encoder.")) and not k.endswith("num_batches_tracked")
    ]
    missing = [k for k in wanted if k not in mapped]
    if missing:
        raise CheckpointError(
            f"{path}: the CLIP file lacks {len(missing)} weights the model needs "
            f"(e.g. {missing[0]}); is it the right CLIP model?"
        )
    model.load_state_dict(mapped, strict=False)
