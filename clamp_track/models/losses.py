"""CLAMP's losses: L_pose, L_spatial and L_feature (``clamp-model-spec.md`` §2).

``total = pose_weight * L_pose + spatial_weight * L_spatial + feature_weight * L_feature``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clamp_track.models.config import ModelConfig


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
        valid = crop_valid(keypoints, target_weights, cfg.input_size)
        feature = feature_contrastive_loss(
            outputs["dense_features"], outputs["prompt_embeddings"], keypoints, valid,
            cfg.input_size, logit_scale,
        )
        losses["feature"] = cfg.feature_weight * feature
    losses["total"] = sum(losses.values())
    return losses
