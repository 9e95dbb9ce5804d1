"""Top-down crop geometry (mmpose 0.x conventions), shared by training and the video pipeline.

A box becomes a crop ``center`` (x, y) and ``scale`` (sx, sy) in units of 200 px, widened to
the model's aspect ratio and padded by 1.25. The affine transform maps the crop region (rotated
by ``rot`` degrees) onto the model input; :func:`warp_crop` samples it with bilinear
interpolation. Keypoints go through the same matrix, and
:func:`clamp_track.models.heatmaps.heatmap_to_image` maps predictions back.
"""

from __future__ import annotations

import numpy as np

PIXEL_STD = 200.0
PADDING = 1.25


def box_to_center_scale(
    boxes: np.ndarray, aspect_ratio: float = 1.0, padding: float = PADDING
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes to crop centres and scales (mmpose ``_xywh2cs``).

    Args:
        boxes: (N, 4) ``x, y, w, h`` boxes in pixels.
        aspect_ratio: Model input width / height.
        padding: Scale factor around the box.

    Returns:
        ``(center, scale)``: (N, 2) float32 centres and (N, 2) float32 scales (200-px units).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    x, y, w, h = boxes.T
    center = np.stack([x + w * 0.5, y + h * 0.5], axis=1)
    w, h = w.copy(), h.copy()
    wider = w > aspect_ratio * h
    h[wider] = w[wider] / aspect_ratio
    w[~wider] = h[~wider] * aspect_ratio
    scale = np.stack([w, h], axis=1) / PIXEL_STD * padding
    return center.astype(np.float32), scale.astype(np.float32)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) ``x1, y1, x2, y2`` -> ``x, y, w, h``."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def box_iou(a, b) -> np.ndarray:
    """Intersection over union of ``x1, y1, x2, y2`` boxes, broadcast like NumPy.

    ``box_iou(a, b)`` of (N, 4) and (N, 4) boxes pairs them (N,); ``box_iou(a[:, None], b)``
    gives every pair (N, M); two (4,) boxes give a 0-d array. Pairs whose union has no area
    give 0. This is the one IoU of the project (tracks, review checks, rules, unconfirmed runs).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
             + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter)
    return np.divide(inter, union, out=np.zeros(np.shape(inter)), where=union > 0)


def affine_matrix(
    center: np.ndarray,
    scale: np.ndarray,
    output_size: tuple[int, int],
    rotation: np.ndarray | float = 0.0,
    inverse: bool = False,
) -> np.ndarray:
    """Affine matrices mapping crop regions to the model input (mmpose ``get_affine_transform``).

    The crop of width ``scale_x * 200`` centred at ``center`` and rotated by ``rotation``
    degrees (counter-clockwise in the image) maps onto ``output_size``; the crop's height
    follows from the output aspect ratio, as in mmpose.

    Args:
        center: (N, 2) centres.
        scale: (N, 2) scales in 200-px units.
        output_size: Model input (width, height).
        rotation: (N,) or scalar degrees.
        inverse: Return the input -> image mapping instead.

    Returns:
        (N, 2, 3) float64 matrices acting on homogeneous (x, y, 1).
    """
    center = np.asarray(center, dtype=np.float64).reshape(-1, 2)
    src_w = np.asarray(scale, dtype=np.float64).reshape(-1, 2)[:, 0] * PIXEL_STD
    dst_w, dst_h = output_size
    theta = np.deg2rad(np.broadcast_to(np.asarray(rotation, dtype=np.float64), src_w.shape))
    zoom = dst_w / src_w  # (N,)
    cos, sin = np.cos(theta) * zoom, np.sin(theta) * zoom
    # image -> input: rotate about the centre by -theta (mmpose's sign), scale, move to middle
    linear = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], axis=1)  # (N, 2, 2)
    offset = np.array([dst_w * 0.5, dst_h * 0.5]) - np.einsum("nij,nj->ni", linear, center)
    matrix = np.concatenate([linear, offset[:, :, None]], axis=2)
    return invert_affine(matrix) if inverse else matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Invert (N, 2, 3) affine matrices."""
    linear = np.linalg.inv(matrix[:, :, :2])
    offset = -np.einsum("nij,nj->ni", linear, matrix[:, :, 2])
    return np.concatenate([linear, offset[:, :, None]], axis=2)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply (N, 2, 3) affine matrices to (N, K, 2) points."""
    points = np.asarray(points, dtype=np.float64)
    return np.einsum("nij,nkj->nki", matrix[:, :, :2], points) + matrix[:, None, :, 2]


def warp_crop(image: np.ndarray, matrix: np.ndarray, output_size: tuple[int, int],
              out: np.ndarray | None = None) -> np.ndarray:
    """Sample one crop with bilinear interpolation (``cv2.warpAffine``, zeros outside).

    Args:
        image: (H, W, 3) uint8 RGB.
        matrix: (2, 3) image -> input affine matrix.
        output_size: (width, height).
        out: Optional contiguous (height, width, 3) uint8 array to write the crop into.

    Returns:
        (height, width, 3) uint8 crop (``out`` when given).
    """
    import cv2

    return cv2.warpAffine(image, matrix.astype(np.float64), tuple(int(s) for s in output_size),
                          dst=out, flags=cv2.INTER_LINEAR)


def normalize(crops: np.ndarray, mean, std):
    """(N, H, W, 3) uint8 RGB crops -> (N, 3, H, W) float32 tensor, ``(x/255 - mean) / std``."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    return (x - mean) / std
