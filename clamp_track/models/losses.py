"""CLAMP's losses: L_pose, L_spatial and L_feature (``clamp-model-spec.md`` §2).

``total = pose_weight * L_pose + spatial_weight * L_spatial + feature_weight * L_feature``.

L_feature comes in two modes (``ModelConfig.feature_loss``):

* ``"official"`` (every preset; equal to the official code's ``feature_loss`` on the golden
  tensors): the visual vector of keypoint k is the one cell of F where the official
  ``downtarget`` heatmap equals 1, i.e. cell ``int(x / stride + 0.5)`` (about half a cell right
  and down of the cell that holds the keypoint), shifted one further at the top/left border
  (``mu`` 0 or 1 gives cell ``mu + 1``) and absent (a zero vector) past the bottom/right
  border. Every keypoint stays in the softmax, invisible ones as zero-vector negatives; each
  cross-entropy is weighted by the down-target weight (visibility, cleared far outside the
  grid) and averaged over **all** B*K entries, so the loss is weaker than a mean over the
  visible keypoints by the fraction of visible ones (1.1-1.4x on AP-10K).
* ``"bilinear"`` (clamp-track's earlier loss, the paper's description): F sampled bilinearly
  at the exact keypoint, invisible or out-of-crop keypoints dropped as anchors and as
  negatives, mean over the valid anchors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clamp_track.models.config import ModelConfig
from clamp_track.models.heatmaps import generate_targets

#: Sigma of the official ``downtarget`` on the F grid (the heatmap sigma 2, divided by 4).
DOWN_TARGET_SIGMA = 0.5


def joints_mse_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted heatmap MSE (mmpose ``JointsMSELoss`` with ``use_target_weight``).

    ``(1/K) sum_k MSE(pred_k * w_k, target_k * w_k)``, each MSE a mean over B*H*W.

    Args:
        pred: (B, K, H, W) predicted heatmaps.
        target: (B, K, H, W) target heatmaps.
        weight: (B, K) per-keypoint weights.

    Returns:
        Scalar loss.
    """
    w = weight.to(pred.dtype)[..., None, None]
    return ((pred * w - target * w) ** 2).mean()


def feature_contrastive_loss(
    dense: torch.Tensor,
    prompts: torch.Tensor,
    keypoints: torch.Tensor,
    valid: torch.Tensor,
    input_size: tuple[int, int],
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Symmetric InfoNCE between the prompts and the visual features at the keypoints.

    Visual features are sampled bilinearly at the exact keypoint locations. Keypoints that are
    not valid (unlabelled or outside the crop) are left out both as anchors and as negatives;
    the loss is the mean over the valid anchors of the batch (0 when there are none).

    Args:
        dense: (B, D, h, w) dense visual features F.
        prompts: (B, K, D) prompt embeddings P.
        keypoints: (B, K, 2) keypoint (x, y) in input-crop pixels.
        valid: (B, K) bool mask of keypoints to use.
        input_size: Crop (height, width) in pixels.
        logit_scale: Scalar log temperature; logits are scaled by ``exp(logit_scale)``.

    Returns:
        Scalar loss (mean of the image->text and text->image cross-entropies).
    """
    height, width = input_size
    size = keypoints.new_tensor([width, height])
    grid = (keypoints.float() + 0.5) / size * 2 - 1  # pixel centres -> [-1, 1], align_corners=False
    sampled = F.grid_sample(dense.float(), grid[:, :, None], align_corners=False)  # (B, D, K, 1)
    visual = F.normalize(sampled[..., 0].transpose(1, 2), dim=-1)  # (B, K, D)
    text = F.normalize(prompts.float(), dim=-1)  # (B, K, D)
    logits = logit_scale.exp() * visual @ text.transpose(1, 2)  # (B, K_visual, K_text)
    pair_ok = valid[:, :, None] & valid[:, None, :]
    logits = logits.masked_fill(~pair_ok, float("-inf"))
    if not valid.any():
        return logits.new_zeros(()) + 0.0 * dense.sum()
    target = torch.arange(logits.shape[1], device=logits.device).expand(logits.shape[0], -1)
    rows = valid  # anchors
    image_to_text = F.cross_entropy(logits[rows], target[rows])
    text_to_image = F.cross_entropy(logits.transpose(1, 2)[rows], target[rows])
    return (image_to_text + text_to_image) / 2


def official_feature_loss(
    dense: torch.Tensor,
    prompts: torch.Tensor,
    keypoints: torch.Tensor,
    visible: torch.Tensor,
    input_size: tuple[int, int],
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """L_feature as the official code computes it (see the module docstring).

    The visual vector of a keypoint is the sum of F over the cells where its official
    ``downtarget`` equals 1: :func:`~clamp_track.models.heatmaps.generate_targets` on F's grid
    with sigma 0.5 (the heatmap sigma 2 / 4), whose 4x4 patch (``int()``-truncated
    ``tmp_size`` 1.5) puts the 1 at ``int(mu - 1.5) + 2``: ``mu = int(x / stride + 0.5)`` for
    ``mu >= 2``, ``mu + 1`` for ``mu`` in {0, 1}, and nowhere past the bottom/right border
    (a zero vector that keeps its weight).

    Args:
        dense: (B, D, h, w) dense visual features F.
        prompts: (B, K, D) prompt embeddings P.
        keypoints: (B, K, 2) keypoint (x, y) in input-crop pixels.
        visible: (B, K) labelled (> 0) or not.
        input_size: Crop (height, width) in pixels.
        logit_scale: Scalar log temperature; logits are scaled by ``exp(logit_scale)``
            (unclamped).

    Returns:
        Scalar loss (mean of the image->text and text->image terms, before the loss weight).
    """
    b, k = prompts.shape[:2]
    down, weight = generate_targets(keypoints, visible, input_size, tuple(dense.shape[-2:]),
                                    DOWN_TARGET_SIGMA)
    mask = (down == 1).float()  # (B, K, h, w): at most one cell per keypoint
    visual = torch.einsum("bkhw,bdhw->bkd", mask, dense.float())
    visual = F.normalize(visual, dim=-1)  # a zero vector stays zero
    text = F.normalize(prompts.float(), dim=-1)
    logits = logit_scale.float().exp() * visual @ text.transpose(1, 2)  # [b, i, j] = <v_i, t_j>
    labels = torch.arange(k, device=dense.device).expand(b, -1)
    # dim 1 holds the classes, as nn.CrossEntropyLoss reads a (B, K, K) input
    ce_visual = F.cross_entropy(logits, labels, reduction="none")
    ce_text = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    return ((ce_visual * weight).mean() + (ce_text * weight).mean()) / 2


def crop_valid(keypoints: torch.Tensor, weights: torch.Tensor, input_size) -> torch.Tensor:
    """Keypoints labelled (weight > 0) and inside the crop, as a (B, K) bool mask."""
    height, width = input_size
    x, y = keypoints[..., 0], keypoints[..., 1]
    return (weights > 0) & (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


def pose_losses(
    cfg: ModelConfig,
    outputs: dict,
    targets: torch.Tensor,
    target_weights: torch.Tensor,
    keypoints: torch.Tensor | None = None,
    logit_scale: torch.Tensor | None = None,
    visible: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """All loss terms of a model's training forward, weighted, plus their sum.

    Args:
        cfg: The model's config (loss weights, input size).
        outputs: The model's forward dict (``heatmaps``; CLAMP also ``spatial_heatmaps``,
            ``dense_features``, ``prompt_embeddings``).
        targets: (B, K, H, W) heatmap targets.
        target_weights: (B, K) keypoint weights.
        keypoints: (B, K, 2) crop-pixel keypoints, needed for L_feature.
        logit_scale: The model's learnable log temperature, needed for L_feature.
        visible: (B, K) labelled keypoints, for the ``"official"`` L_feature (its weights are
            the visibility, not the heatmap weights); default: ``target_weights > 0``.

    Returns:
        ``{"pose": ..., "spatial": ..., "feature": ..., "total": ...}`` (weighted terms; a term
        whose weight is 0 or whose inputs are absent is left out).
    """
    pose = joints_mse_loss(outputs["heatmaps"], targets, target_weights)
    losses = {"pose": cfg.pose_weight * pose}
    if cfg.spatial_weight and "spatial_heatmaps" in outputs:
        spatial = joints_mse_loss(outputs["spatial_heatmaps"], targets, target_weights)
        losses["spatial"] = cfg.spatial_weight * spatial
    if cfg.feature_weight and "dense_features" in outputs and keypoints is not None:
        dense, prompts = outputs["dense_features"], outputs["prompt_embeddings"]
        if cfg.feature_loss == "official":
            labelled = visible if visible is not None else target_weights > 0
            feature = official_feature_loss(dense, prompts, keypoints, labelled,
                                            cfg.input_size, logit_scale)
        else:
            valid = crop_valid(keypoints, target_weights, cfg.input_size)
            feature = feature_contrastive_loss(dense, prompts, keypoints, valid,
                                               cfg.input_size, logit_scale)
        losses["feature"] = cfg.feature_weight * feature
    losses["total"] = sum(losses.values())
    return losses
