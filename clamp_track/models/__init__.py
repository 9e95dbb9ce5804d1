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
    Adaptation,
    Checkpoint,
    adapt_state_dict,
    check_fits,
    load_checkpoint,
    match_keypoints,
    save_checkpoint,
)
from clamp_track.models.clamp import Clamp, PoseModel, SimpleBaseline, build_model
from clamp_track.models.config import BackboneConfig, ModelConfig, TextConfig
from clamp_track.models.heatmaps import decode_heatmaps, flip_back, generate_targets
from clamp_track.models.registry import CLIP_ARCH, get_config, list_models
from clamp_track.skeleton import KeypointSet, get_keypoint_set

__all__ = [
    "Adaptation", "BackboneConfig", "Checkpoint", "Clamp", "ModelConfig", "PoseModel",
    "SimpleBaseline", "TextConfig", "adapt_to_keypoints", "build_model", "create_model",
    "decode_heatmaps", "flip_back", "generate_targets", "init_pretrained", "list_models",
    "load_checkpoint", "match_keypoints", "save_checkpoint",
]

#: How to ask for new keypoint heads, quoted by every refusal.
ADAPT_HINT = ("pass adapt_keypoints=True (clamp-track finetune --adapt-keypoints) to keep the "
              "backbone and language parts and re-initialise the keypoint heads for the new names")


def create_model(
    name: str | None = None,
    weights: str | os.PathLike | None = None,
    *,
    keypoints: KeypointSet | str | None = None,
    clip_weights: str | os.PathLike | None = None,
    adapt_keypoints: bool = False,
) -> PoseModel:
    """Build a pose model by variant name, optionally loading weights.

    Args:
        name: A variant from :func:`list_models`. May be omitted when ``weights`` is given (the
            variant is then taken from the checkpoint).
        weights: A clamp-track checkpoint or an official CLAMP (mmpose) checkpoint; detected
            from its contents. Its metadata gives the keypoint set.
        keypoints: Keypoint set (``"ap10k"``, ``"animalpose"``, a file, or a ``KeypointSet``).
            Default: the checkpoint's, else AP-10K. For official checkpoints it names the set
            the weights were trained for (with ``adapt_keypoints``: the new set).
        clip_weights: Initialise the image (and text) tower from pretrained weights:
            ``"openai"`` (CLIP, fetched and cached by open_clip), ``"imagenet"`` (for the
            ImageNet SimpleBaseline) or a file; see :func:`init_pretrained`. Ignored when
            ``weights`` is given.
        adapt_keypoints: Allow ``weights`` trained for another keypoint set: the model is
            built for ``keypoints`` and gets everything from the weights except what depends
            on the number of keypoints (see :func:`adapt_to_keypoints`). Without it a
            different set is refused, so a vocabulary never changes silently.

    Returns:
        The model in eval mode, on the CPU.

    Raises:
        CheckpointError: If the weights cannot be read or do not fit the named variant.
        ClampTrackError: For an unknown variant name.
    """
    kp = get_keypoint_set(keypoints) if keypoints is not None else None
    if weights is not None:
        # an official file's set is found from its size when `keypoints` is the *new* set
        ckpt = load_checkpoint(weights, keypoints=None if adapt_keypoints else kp)
        config = get_config(name) if name else ckpt.config
        if name and ckpt.config.arch != config.arch:
            raise CheckpointError(
                f"{weights}: these are {ckpt.variant or ckpt.config.arch} weights, not {name}"
            )
        target = kp
        if target is not None and target != ckpt.keypoints and not adapt_keypoints:
            raise CheckpointError(
                f"{weights}: the weights were trained for keypoint set {ckpt.keypoints.name!r}, "
                f"not {target.name!r}; {ADAPT_HINT}"
            )
        check_fits(ckpt, config, ckpt.keypoints,
                   name or ckpt.variant or "the checkpoint's architecture")
        model = build_model(config, ckpt.keypoints)
        model.load_state_dict(ckpt.state_dict, strict=True)
        if target is not None and target != ckpt.keypoints:
            model = adapt_to_keypoints(model, target)
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


def adapt_to_keypoints(model: PoseModel, keypoints: KeypointSet | str) -> PoseModel:
    """A model for a new keypoint vocabulary that keeps everything else of ``model``.

    The new model builds its prompts from the new names and copies from ``model`` the image
    backbone, the text encoder, the learnable contexts, the prompt encoder, the context decoder,
    gamma, the logit scale and every head layer whose size does not depend on the number of
    keypoints K. What depends on K (the input channels C + K of the keypoint head's first
    deconvolution, its final layer, the ``upconv_head``) is re-initialised, except the channels
    of keypoints whose name (or dataset spelling) the old set also has, which are copied. So a
    set that only reorders or renames the spelling of the old keypoints gives the same
    predictions, and e.g. "nose" keeps what it learnt when moved into a new set.

    Args:
        model: A (trained) pose model.
        keypoints: The new keypoint set (``KeypointSet``, a built-in name or a YAML file).

    Returns:
        A new model (on the CPU, in eval mode, parameters in float32); ``model`` is unchanged.
        ``model.adaptation`` holds the :class:`Adaptation` (matched keypoints).
    """
    new = get_keypoint_set(keypoints)
    fresh_model = build_model(model.config, new)
    adaptation = adapt_state_dict(
        {k: v.detach().cpu() for k, v in model.state_dict().items()}, model.keypoints,
        model.config, new, fresh_model.state_dict(),
    )
    fresh_model.load_state_dict(adaptation.state_dict, strict=True)
    fresh_model.adaptation = adaptation
    return fresh_model.eval()
