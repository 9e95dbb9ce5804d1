"""Training augmentation of top-down crops (``clamp-model-spec.md`` §2).

Every augmentation is geometric and is folded into the one affine matrix that cuts the crop, so
a sample costs one ``warpAffine`` whatever is drawn: no full-image flip or rotation. The draws
for a sample come from its own generator seeded by ``(seed, epoch, index)``, so a run gives the
same samples with any number of DataLoader workers and after a resume.

What is drawn, in this order (numbers are the official AP-10K recipe, mmpose 0.x semantics):

1. Box-centre jitter: with probability ``shift_prob`` (0.3) the centre moves by up to
   ``shift`` (±0.2) of the box width/height, uniformly. As in mmpose 0.x (the official code),
   where it happens once per record when the dataset is built, it is drawn once per instance
   (from ``(seed, index)`` only), so 30 % of the instances keep one fixed offset in every
   epoch; ``shift_redraw=True`` draws it anew every epoch instead.
2. Horizontal flip with probability ``flip_prob`` (0.5); left/right keypoint channels swap.
3. Half-body with probability ``half_body_prob`` (0.3) when more than
   ``half_body_min_keypoints`` (8) keypoints are labelled and the keypoint set defines an upper
   body (user-defined sets without one skip it): the crop becomes the box of the upper
   or the lower body's labelled keypoints (upper with probability P(N(0,1) < 0.5) ≈ 0.69, as
   the official code's ``randn() < 0.5``), widened to the aspect ratio and scaled by 1.5.
   The official pipeline flips before it picks the halves, so the upper-body list applies to
   the *flipped* channels; for a list that is not left/right symmetric (AP-10K's marks the
   right front paw as lower) a flipped sample uses the mirrored list, as there.
4. Scale ×clip(N(1, ``scale``), 1 - scale, 1 + scale) with ``scale`` 0.5, i.e. ×[0.5, 1.5].
5. Rotation clip(N(0, ``rotation``), ±2·rotation) degrees (±40, clipped ±80) with probability
   ``rotation_prob`` (0.6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clamp_track.config import check_fractions
from clamp_track.skeleton import KeypointSet

#: Probability of choosing the upper body in half-body augmentation: P(N(0, 1) < 0.5), which is
#: what the official ``np.random.randn() < 0.5`` amounts to.
HALF_BODY_UPPER_PROB = 0.6915
#: Half-body crops are the keypoints' box scaled by this factor (instead of the box padding).
HALF_BODY_PADDING = 1.5


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation settings (defaults: the official AP-10K recipe).

    Attributes:
        flip_prob: Probability of a horizontal flip.
        half_body_prob: Probability of a half-body crop.
        half_body_min_keypoints: Half-body needs more than this many labelled keypoints.
        scale: Scale factor spread; the crop scale is multiplied by a value in [1-s, 1+s].
        rotation: Rotation standard deviation in degrees (clipped at twice this value).
        rotation_prob: Probability of rotating at all.
        shift_prob: Probability of jittering the box centre.
        shift: Largest centre shift as a fraction of the box width/height.
        shift_redraw: Draw the centre jitter anew every epoch; False (official): once per
            instance, the same in every epoch.
    """

    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_keypoints: int = 8
    scale: float = 0.5
    rotation: float = 40.0
    rotation_prob: float = 0.6
    shift_prob: float = 0.3
    shift: float = 0.2
    shift_redraw: bool = False

    def __post_init__(self):
        check_fractions(self, "flip_prob", "half_body_prob", "rotation_prob", "shift_prob")
        if not 0.0 <= self.scale < 1.0:
            raise ValueError(f"scale must be in [0, 1), got {self.scale}")


@dataclass(frozen=True)
class CropGeometry:
    """Where one crop is cut: centre, scale (200-px units), rotation (degrees) and flip."""

    center: np.ndarray
    scale: np.ndarray
    rotation: float = 0.0
    flip: bool = False


def random_geometry(
    rng: np.random.Generator,
    center: np.ndarray,
    scale: np.ndarray,
    bbox: np.ndarray,
    keypoints: np.ndarray,
    keypoint_set: KeypointSet,
    cfg: AugmentConfig,
    aspect_ratio: float,
    shift_rng: np.random.Generator | None = None,
) -> CropGeometry:
    """Draw the augmentation of one sample.

    Args:
        rng: The sample's generator.
        center: (2,) crop centre from the box, image pixels.
        scale: (2,) crop scale from the box, 200-px units (padding included).
        bbox: (4,) box ``x, y, w, h`` (for the centre jitter).
        keypoints: (K, 3) image keypoints ``x, y, v``.
        keypoint_set: Gives the upper-body indices for half-body crops.
        cfg: What to draw.
        aspect_ratio: Model input width / height.
        shift_rng: Generator of the centre jitter (the instance's own, so that the jitter is
            the same in every epoch); default: ``rng``.

    Returns:
        The drawn :class:`CropGeometry`.
    """
    center = np.asarray(center, np.float64).copy()
    scale = np.asarray(scale, np.float64).copy()
    shift_rng = rng if shift_rng is None else shift_rng
    if shift_rng.random() < cfg.shift_prob:
        center += (shift_rng.random(2) - 0.5) * 2 * cfg.shift * bbox[2:4]
    flip = bool(rng.random() < cfg.flip_prob)
    labelled = keypoints[:, 2] > 0
    if (keypoint_set.upper_body and labelled.sum() > cfg.half_body_min_keypoints
            and rng.random() < cfg.half_body_prob):
        half = half_body(rng, keypoints[:, :2], labelled, keypoint_set, aspect_ratio, flip)
        if half is not None:
            center, scale = half
    scale = scale * np.clip(rng.normal() * cfg.scale + 1, 1 - cfg.scale, 1 + cfg.scale)
    rotation = 0.0
    if rng.random() < cfg.rotation_prob:
        rotation = float(np.clip(rng.normal() * cfg.rotation, -2 * cfg.rotation,
                                 2 * cfg.rotation))
    return CropGeometry(center, scale, rotation, flip)


def half_body(
    rng: np.random.Generator,
    points: np.ndarray,
    labelled: np.ndarray,
    keypoint_set: KeypointSet,
    aspect_ratio: float,
    flipped: bool = False,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Centre and scale of a crop around the upper or the lower body's labelled keypoints.

    Args:
        rng: Generator (picks the half).
        points: (K, 2) image keypoints.
        labelled: (K,) bool mask of labelled keypoints.
        keypoint_set: Defines the upper body; the rest is the lower body.
        aspect_ratio: Model input width / height.
        flipped: The sample is mirrored: the upper-body list names the flipped channels, so
            keypoint ``j`` counts as upper when its flip twin is listed (official order: flip,
            then half-body).

    Returns:
        ``(center, scale)`` or None when the chosen half has fewer than 2 labelled keypoints.
    """
    upper = np.zeros(len(points), bool)
    upper[list(keypoint_set.upper_body)] = True
    if flipped:
        upper = upper[keypoint_set.flip_permutation()]
    upper_idx = np.flatnonzero(labelled & upper)
    lower_idx = np.flatnonzero(labelled & ~upper)
    if rng.random() < HALF_BODY_UPPER_PROB and len(upper_idx) > 2:
        chosen = upper_idx
    else:
        chosen = lower_idx if len(lower_idx) > 2 else upper_idx
    if len(chosen) < 2:
        return None
    selected = points[chosen].astype(np.float64)
    center = selected.mean(axis=0)
    w, h = selected.max(axis=0) - selected.min(axis=0)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w, h]) / 200.0 * HALF_BODY_PADDING


def mirror_matrix(matrix: np.ndarray, width: int) -> np.ndarray:
    """Compose a (2, 3) image -> crop matrix with a horizontal mirror of the crop.

    Pixel column ``x`` of the crop becomes ``width - 1 - x`` (the exact pixel-centre mirror of
    ``warpAffine``), so pixels and keypoints stay aligned.
    """
    out = matrix.astype(np.float64).copy()
    out[0] = -out[0]
    out[0, 2] += width - 1
    return out
