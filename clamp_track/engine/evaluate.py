"""Evaluation: OKS-based COCO AP with pycocotools, and PCK (``clamp-model-spec.md`` §2).

The official protocol, step by step:

1. :func:`predict` — one crop per ground-truth box (padding 1.25), heatmaps decoded with the
   quarter-pixel shift; with flip test (default) the flipped crop's heatmaps are flipped back,
   shifted one pixel and averaged in.
2. :func:`keypoint_results` — each instance's score is its box score (1 for ground-truth boxes)
   times the mean confidence of its keypoints above ``vis_thr`` (0.2); per image, OKS NMS at
   ``oks_nms_thr`` (0.9) with the crop area (``prod(scale * 200)``) as the OKS scale. Each
   result carries its ground-truth ``category_id``, as the official AP-10K evaluation writes it.
3. :func:`coco_metrics` — pycocotools' ``COCOeval`` (``iouType="keypoints"``) with
   ``params.kpt_oks_sigmas`` from the keypoint set, on the annotation file's ground truth.
   (xtcocotools, which mmpose uses, computes the same numbers with ``use_area=True``; its PyPI
   wheel does not import with numpy 2.) Per-category AP is averaged over the categories with
   ground truth, as COCOeval does by default.

PCK@t counts a labelled keypoint as correct when its error, divided per axis by the ground-truth
box width and height, has a norm below t (mmpose's box-normalised PCK for top-down sets).
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: The COCO keypoint metrics reported everywhere (the order of ``COCOeval.stats[:6]``).
METRIC_KEYS = ("AP", "AP50", "AP75", "APM", "APL", "AR")
PCK_THRESHOLDS = (0.05, 0.1)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings (defaults: the official protocol).

    Attributes:
        flip_test: Average with the horizontally flipped crop's heatmaps.
        vis_thr: Keypoint confidences above this enter the instance score.
        oks_nms_thr: OKS NMS threshold per image (1.0 keeps every instance).
        batch_size: Crops per forward pass.
        best_metric: Metric that selects the best checkpoint during training
            (``"AP"``, or e.g. ``"PCK@0.1"`` for sets too small for AP).
    """

    flip_test: bool = True
    vis_thr: float = 0.2
    oks_nms_thr: float = 0.9
    batch_size: int = 32
    best_metric: str = "AP"

    def __post_init__(self):
        allowed = (*METRIC_KEYS, *(f"PCK@{t}" for t in PCK_THRESHOLDS))
        if self.best_metric not in allowed:
            raise ValueError(f"best_metric must be one of {list(allowed)}")


@dataclass
class Predictions:
    """Keypoints predicted for a dataset's records, in record order.

    Attributes:
        keypoints: (N, K, 2) image pixels.
        scores: (N, K) heatmap maxima.
        centers: (N, 2) crop centres.
        scales: (N, 2) crop scales (200-px units).
    """

    keypoints: np.ndarray
    scores: np.ndarray
    centers: np.ndarray
    scales: np.ndarray


@dataclass
class EvalResult:
    """What :func:`evaluate` returns.

    Attributes:
        metrics: ``AP``, ``AP50``, ``AP75``, ``APM``, ``APL``, ``AR``, ``PCK@0.05``,
            ``PCK@0.1`` (fractions in [0, 1]; -1 where COCOeval has no ground truth).
        results: COCO keypoint results (after rescoring and OKS NMS), keypoints in the set's
            order.
        predictions: The raw per-record predictions.
    """

    metrics: dict[str, float]
    results: list[dict] = field(repr=False)
    predictions: Predictions = field(repr=False)


def predict(model, dataset, *, batch_size: int = 32, flip_test: bool = True, device=None,
            workers: int = 0, amp: bool = False) -> Predictions:
    """Run ``model`` on every record's un-augmented crop.

    Args:
        model: A pose model (its keypoint set must be the dataset's).
        dataset: A :class:`~clamp_track.data.dataset.TopDownDataset` without augmentation.
        batch_size: Crops per forward pass (twice as many with flip test).
        flip_test: Average with the flipped crops' heatmaps.
        device: Where to run (default: the model's device).
        workers: DataLoader workers.
        amp: fp16 autocast on CUDA (default fp32, as the official test configs).

    Returns:
        The :class:`Predictions`.
    """
    import torch

    from clamp_track.data.dataset import make_loader, normalize_images
    from clamp_track.models import decode_heatmaps

    if dataset.augment is not None:
        raise ValueError("predict() needs a dataset without augmentation")
    if model.num_keypoints != dataset.keypoints.num_keypoints:
        raise ValueError(f"the model predicts {model.num_keypoints} keypoints, the dataset has "
                         f"{dataset.keypoints.num_keypoints}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    loader = make_loader(dataset, batch_size, workers=workers, pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    out = defaultdict(list)
    try:
        with torch.inference_mode(), torch.autocast(
            device.type, torch.float16, enabled=amp and device.type == "cuda"
        ):
            for batch in loader:
                images = normalize_images(batch["image"].to(device, non_blocking=True),
                                          model.config)
                heatmaps = model(images)["heatmaps"]
                flipped = model(images.flip(3))["heatmaps"] if flip_test else None
                keypoints, scores = decode_heatmaps(
                    heatmaps, batch["center"].to(device), batch["scale"].to(device),
                    flip_heatmaps=flipped, flip_pairs=model.keypoints.flip_pairs,
                )
                for key, value in (("keypoints", keypoints), ("scores", scores),
                                   ("centers", batch["center"]), ("scales", batch["scale"])):
                    out[key].append(value.float().cpu().numpy())
    finally:
        model.train(was_training)
    k = dataset.keypoints.num_keypoints
    empty = {"keypoints": (0, k, 2), "scores": (0, k), "centers": (0, 2), "scales": (0, 2)}
    return Predictions(**{
        key: np.concatenate(out[key]) if out[key] else np.zeros(shape, np.float32)
        for key, shape in empty.items()
    })


def keypoint_results(predictions: Predictions, records, sigmas, *, vis_thr: float = 0.2,
                     oks_nms_thr: float = 0.9) -> list[dict]:
    """Rescore the predictions and apply OKS NMS per image: COCO keypoint results.

    Args:
        predictions: Per-record predictions.
        records: The :class:`~clamp_track.data.records.Instance` records they belong to.
        sigmas: (K,) OKS sigmas.
        vis_thr: Keypoint confidences above this enter the instance score.
        oks_nms_thr: OKS NMS threshold.

    Returns:
        ``[{"image_id", "category_id", "keypoints": [x, y, score] * K, "score"}]``.
    """
    kps = np.concatenate([predictions.keypoints, predictions.scores[..., None]], axis=2)
    confident = predictions.scores > vis_thr  # (N, K)
    n_conf = confident.sum(axis=1)
    kpt_score = np.where(
        n_conf > 0, (predictions.scores * confident).sum(axis=1) / np.maximum(n_conf, 1), 0.0
    )
    box_scores = np.array([r.score for r in records], np.float64)
    scores = kpt_score * box_scores
    areas = np.prod(predictions.scales.astype(np.float64) * 200.0, axis=1)
    by_image = defaultdict(list)
    for i, rec in enumerate(records):
        by_image[rec.image_id].append(i)
    results = []
    for idx in by_image.values():
        idx = np.asarray(idx)
        keep = oks_nms(kps[idx], scores[idx], areas[idx], sigmas, oks_nms_thr)
        for i in idx[keep]:
            results.append({
                "image_id": records[i].image_id,
                "category_id": records[i].category_id,
                "keypoints": [float(v) for v in kps[i].reshape(-1)],
                "score": float(scores[i]),
            })
    return results


def oks_iou(a: np.ndarray, b: np.ndarray, area_a: float, areas_b: np.ndarray,
            sigmas) -> np.ndarray:
    """OKS between one pose and several (all keypoints count, as mmpose's NMS).

    Args:
        a: (K, 2+) pose.
        b: (M, K, 2+) poses.
        area_a: Scale area of ``a`` (px²).
        areas_b: (M,) scale areas of ``b``.
        sigmas: (K,) OKS sigmas.

    Returns:
        (M,) OKS values in [0, 1].
    """
    variances = (np.asarray(sigmas, np.float64) * 2) ** 2
    d2 = ((b[..., :2] - a[None, :, :2]) ** 2).sum(axis=-1)  # (M, K)
    e = d2 / variances / ((area_a + areas_b)[:, None] / 2 + np.spacing(1)) / 2
    return np.exp(-e).mean(axis=1)


def oks_nms(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, sigmas,
            threshold: float) -> np.ndarray:
    """Greedy OKS non-maximum suppression.

    Args:
        keypoints: (N, K, 2+) poses of one image.
        scores: (N,) instance scores.
        areas: (N,) scale areas (px²).
        sigmas: (K,) OKS sigmas.
        threshold: Poses with OKS above this against a better one are dropped.

    Returns:
        Indices of the kept poses, best first. Equal scores are visited in the official
        code's order, ``scores.argsort()[::-1]``: numpy's default (not stable) sort reversed,
        so with the same numpy the same one of two tied duplicates survives.
    """
    order = np.asarray(scores).argsort()[::-1]  # the official expression, ties included
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        overlap = oks_iou(keypoints[i], keypoints[rest], areas[i], areas[rest], sigmas)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def coco_metrics(ground_truth: dict, results: Sequence[dict], sigmas) -> dict[str, float]:
    """COCO keypoint AP/AR of ``results`` against ``ground_truth`` with pycocotools.

    Args:
        ground_truth: COCO keypoint dict (``images``, ``annotations``, ``categories``).
        results: COCO keypoint results (``image_id``, ``category_id``, ``keypoints``,
            ``score``) with keypoints in the ground truth's order.
        sigmas: (K,) OKS sigmas in that order.

    Returns:
        ``{"AP", "AP50", "AP75", "APM", "APL", "AR"}``; all 0 without results.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return dict.fromkeys(METRIC_KEYS, 0.0)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        gt = COCO()
        gt.dataset = _complete_ground_truth(ground_truth)
        gt.createIndex()
        dt = gt.loadRes([dict(r) for r in results])
        evaluator = COCOeval(gt, dt, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {key: float(v) for key, v in zip(METRIC_KEYS, evaluator.stats[:6])}


def _complete_ground_truth(gt: dict) -> dict:
    """A copy with the fields COCOeval needs (``num_keypoints``, ``area``, ``iscrowd``).

    Annotation ids are renumbered 1..N if any is 0 or repeated: COCOeval keys matches by id
    and takes id 0 for "unmatched" (records built without ids all have id 0).
    """
    ids = [a.get("id") for a in gt["annotations"]]
    renumber = 0 in ids or None in ids or len(set(ids)) != len(ids)
    annotations = []
    for i, a in enumerate(gt["annotations"]):
        a = dict(a)
        if renumber:
            a["id"] = i + 1
        if "num_keypoints" not in a:
            a["num_keypoints"] = int(sum(v > 0 for v in (a.get("keypoints") or [])[2::3]))
        if "area" not in a and "bbox" in a:
            a["area"] = float(a["bbox"][2] * a["bbox"][3])
        a.setdefault("iscrowd", 0)
        annotations.append(a)
    return {**gt, "annotations": annotations}


def pck(predicted: np.ndarray, keypoints: np.ndarray, boxes: np.ndarray,
        threshold: float) -> float:
    """Fraction of labelled keypoints within ``threshold`` of the box size.

    Args:
        predicted: (N, K, 2) predicted image keypoints.
        keypoints: (N, K, 3) ground truth ``x, y, v`` (v > 0 counts).
        boxes: (N, 4) ground-truth boxes ``x, y, w, h``; errors are divided by (w, h).
        threshold: E.g. 0.05 or 0.1.

    Returns:
        PCK in [0, 1] (0 when nothing is labelled).
    """
    labelled = keypoints[..., 2] > 0
    if not labelled.any():
        return 0.0
    size = np.maximum(boxes[:, None, 2:4], 1e-6)
    dist = np.linalg.norm((predicted - keypoints[..., :2]) / size, axis=-1)  # (N, K)
    return float((dist[labelled] < threshold).mean())


def evaluate(model, dataset, config: EvalConfig = EvalConfig(), *, device=None,
             workers: int = 0, amp: bool = False) -> EvalResult:
    """Predict, rescore, OKS-NMS and score a dataset: COCO AP/AR and PCK.

    Args:
        model: The pose model.
        dataset: A :class:`~clamp_track.data.dataset.TopDownDataset` without augmentation;
            its :meth:`ground_truth` is the reference.
        config: Protocol settings.
        device: Where to run (default: the model's device).
        workers: DataLoader workers.
        amp: fp16 autocast on CUDA (default fp32, as the official test configs).

    Returns:
        The :class:`EvalResult`.
    """
    preds = predict(model, dataset, batch_size=config.batch_size, flip_test=config.flip_test,
                    device=device, workers=workers, amp=amp)
    sigmas = dataset.keypoints.sigmas
    results = keypoint_results(preds, dataset.records, sigmas, vis_thr=config.vis_thr,
                               oks_nms_thr=config.oks_nms_thr)
    metrics = coco_metrics(dataset.ground_truth(), results, sigmas)
    gt_kps = np.stack([r.keypoints for r in dataset.records]) if dataset.records else None
    boxes = np.stack([r.bbox for r in dataset.records]) if dataset.records else None
    for t in PCK_THRESHOLDS:
        metrics[f"PCK@{t}"] = pck(preds.keypoints, gt_kps, boxes, t) if gt_kps is not None else 0.0
    return EvalResult(metrics, results, preds)


def format_metrics(metrics: dict[str, float]) -> str:
    """The metrics as a two-line text table (values in percent, as the paper reports)."""
    keys = [k for k in (*METRIC_KEYS, *(f"PCK@{t}" for t in PCK_THRESHOLDS)) if k in metrics]
    width = max(len(k) for k in keys) + 2
    head = "".join(k.rjust(width) for k in keys)
    row = "".join((f"{100 * metrics[k]:.1f}" if metrics[k] >= 0 else "n/a").rjust(width)
                  for k in keys)
    return f"{head}\n{row}"
