"""Pose models in plain PyTorch: CLAMP and the SimpleBaseline, on open_clip's CLIP towers.

Public API (shared by the CLI, the pipeline, the GUI and users)::

    from clamp_track.models import create_model, list_models, decode_heatmaps

    model = create_model("clamp_rn50", weights="clamp_rn50_ap10k.pt")   # ours or official
    out = model(images)          # dict: heatmaps, score_map, prompt_embeddings, dense_features
    keypoints, scores = decode_heatmaps(out["heatmaps"], center, scale)

This package does no I/O other than reading and writing checkpoints and never imports Qt, cv2
or pandas.
"""

from __future__ import annotations

import os

from clamp_track.errors import CheckpointError
from clamp_track.models.checkpoint import (
    Checkpoint,
    check_fits,
    load_checkpoint,
    save_checkpoint,
)
from clamp_track.models.clamp import Clamp, PoseModel, SimpleBaseline, build_model
from clamp_track.models.config import BackboneConfig, ModelConfig, TextConfig
from clamp_track.models.heatmaps import decode_heatmaps, flip_back, generate_targets
from clamp_track.models.registry import CLIP_ARCH, get_config, list_models
from clamp_track.skeleton import KeypointSet, get_keypoint_set

__all__ = [
    "BackboneConfig", "Checkpoint", "Clamp", "ModelConfig", "PoseModel", "SimpleBaseline",
    "TextConfig", "build_model", "create_model", "decode_heatmaps", "flip_back",
    "generate_targets", "init_pretrained", "list_models", "load_checkpoint", "save_checkpoint",
]


def create_model(
    name: str | None = None,
    weights: str | os.PathLike | None = None,
    *,
    keypoints: KeypointSet | str | None = None,
    clip_weights: str | os.PathLike | None = None,
) -> PoseModel:
    """Build a pose model by variant name, optionally loading weights.

    Args:
        name: A variant from :func:`list_models`. May be omitted when ``weights`` is given (the
            variant is then taken from the checkpoint).
        weights: A clamp-track checkpoint or an official CLAMP (mmpose) checkpoint; detected
            from its contents. Its metadata gives the keypoint set.
        keypoints: Keypoint set (``"ap10k"``, ``"animalpose"``, a file, or a ``KeypointSet``).
            Default: the checkpoint's, else AP-10K. For official checkpoints it names the set
            the weights were trained for.
        clip_weights: Initialise the image (and text) tower from pretrained weights:
            ``"openai"`` (CLIP, fetched and cached by open_clip), ``"imagenet"`` (for the
            ImageNet SimpleBaseline) or a file; see :func:`init_pretrained`. Ignored when
            ``weights`` is given.

    Returns:
        The model in eval mode, on the CPU.

    Raises:
        CheckpointError: If the weights cannot be read or do not fit the named variant.
        ClampTrackError: For an unknown variant name.
    """
    kp = get_keypoint_set(keypoints) if keypoints is not None else None
    if weights is not None:
        ckpt = load_checkpoint(weights, keypoints=kp)
        config = get_config(name) if name else ckpt.config
        if name and ckpt.config.arch != config.arch:
            raise CheckpointError(
                f"{weights}: these are {ckpt.variant or ckpt.config.arch} weights, not {name}"
            )
        if kp is not None and kp != ckpt.keypoints:
            raise CheckpointError(
                f"{weights}: the weights were trained for keypoint set {ckpt.keypoints.name!r}, "
                f"not {kp.name!r}; fine-tune them for the new set instead"
            )
        kp = ckpt.keypoints
        check_fits(ckpt, config, kp, name or ckpt.variant or "the checkpoint's architecture")
        model = build_model(config, kp)
        model.load_state_dict(ckpt.state_dict, strict=True)
        return model.eval()
    if name is None:
        raise CheckpointError("create_model needs a model name or a weights file")
    config = get_config(name)
    model = build_model(config, kp or get_keypoint_set("ap10k"))
    if clip_weights is not None:
        init_pretrained(model, clip_weights)
    return model.eval()


def init_pretrained(model: PoseModel, spec: str | os.PathLike) -> None:
    """Initialise a fresh model's backbone (and CLAMP's text encoder) from pretrained weights.

    Args:
        model: A model from :func:`build_model`.
        spec: ``"openai"`` (CLIP, fetched and cached by open_clip), ``"imagenet"``
            (torchvision's ImageNet ResNet-50, for ``simplebaseline_rn50_imagenet``), or the
            path of such a file (a CLIP ``RN50.pt``/``ViT-B-16.pt``, or a torchvision
            state dict).
    """
    import torch

    from clamp_track.models.clip_weights import load_clip_weights

    kind = model.config.backbone.kind
    if kind == "imagenet_resnet":
        path = spec
        if str(spec) in ("imagenet", "openai"):
            from clamp_track.weights import imagenet_resnet_file

            path = imagenet_resnet_file()
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.backbone.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{path}: not torchvision ResNet-50 weights "
                                  f"(missing {missing[:2]}, unexpected {unexpected[:2]})")
        return
    path = spec
    if str(spec) == "openai":
        from clamp_track.weights import clip_weights_file

        path = clip_weights_file(CLIP_ARCH[kind], "openai")
    load_clip_weights(model, path)
