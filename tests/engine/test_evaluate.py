from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from clamp_track.data.coco import load_coco
from clamp_track.data.dataset import TopDownDataset
from clamp_track.data.records import Instance, records_to_coco
from clamp_track.engine.evaluate import (
    METRIC_KEYS,
    EvalConfig,
    Predictions,
    coco_metrics,
    evaluate,
    format_metrics,
    keypoint_results,
    oks_iou,
    oks_nms,
    pck,
)
from clamp_track.models import create_model, generate_targets, get_config
from clamp_track.skeleton import AP10K

SIGMAS = np.array(AP10K.sigmas)


def _synthetic_records(n_images=12, seed=0):
    """Several animals per image, two species, boxes from 40 to 400 px (medium and large)."""
    rng = np.random.default_rng(seed)
    records, uid = [], 1
    for image_id in range(1, n_images + 1):
        for _ in range(rng.integers(1, 4)):
            w, h = rng.uniform(40, 400, 2)
            x, y = rng.uniform(0, 600, 2)
            kps = np.stack([x + rng.uniform(0, w, 17), y + rng.uniform(0, h, 17),
                            rng.choice([0, 1, 2], 17, p=[0.2, 0.2, 0.6])], axis=1)
            kps[kps[:, 2] == 0, :2] = 0
            records.append(Instance("img.jpg", [x, y, w, h], kps, image_id=image_id,
                                    instance_id=uid, category_id=int(rng.integers(1, 3)),
                                    area=float(w * h * 0.7)))
            uid += 1
    return records


def _direct_pycocotools(tmp_path, gt: dict, results: list[dict]) -> list[float]:
    """The reference: pycocotools on files, exactly as its documentation shows."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        dets = coco.loadRes(str(tmp_path / "dt.json"))
        ev = COCOeval(coco, dets, "keypoints")
        ev.params.kpt_oks_sigmas = SIGMAS
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats[:6])


def _predictions_from(records, noise, rng):
    kps = np.stack([r.keypoints[:, :2] for r in records]).astype(np.float64)
    scale = np.sqrt([r.oks_area for r in records])[:, None, None]
    kps = kps + rng.normal(size=kps.shape) * noise * scale
    scores = rng.uniform(0.05, 1.0, kps.shape[:2])
    sizes = np.stack([r.bbox[2:] for r in records]) * 1.25 / 200
    return Predictions(kps, scores, np.zeros((len(records), 2)), np.max(sizes, 1)[:, None]
                       .repeat(2, 1))


def test_ground_truth_as_predictions_gives_ap_one(shared_data):
    root = shared_data / "mmpose-tests" / "ap10k"
    data = load_coco(root / "test_ap10k.json", root)
    results = [{"image_id": a["image_id"], "category_id": a["category_id"],
                "keypoints": a["keypoints"], "score": 1.0}
               for a in data.ground_truth["annotations"]]
    metrics = coco_metrics(data.ground_truth, results, AP10K.sigmas)
    for key in ("AP", "AP50", "AP75", "APL", "AR"):
        assert metrics[key] == pytest.approx(1.0)
    assert metrics["APM"] == -1.0  # no medium-sized animal in the sample
    records = _synthetic_records()
    gt = records_to_coco(records, AP10K)
    preds = _predictions_from(records, 0.0, np.random.default_rng(0))
    results = keypoint_results(preds, records, SIGMAS)
    assert len(results) == len(records)
    metrics = coco_metrics(gt, results, SIGMAS)
    assert all(metrics[k] == pytest.approx(1.0) for k in METRIC_KEYS)


def test_records_without_ids_still_evaluate():
    records = [Instance(r.image, r.bbox, r.keypoints, image_id=r.image_id)  # instance_id 0
               for r in _synthetic_records(4, seed=2)]
    preds = _predictions_from(records, 0.0, np.random.default_rng(0))
    metrics = coco_metrics(records_to_coco(records, AP10K), keypoint_results(preds, records,
                                                                             SIGMAS), SIGMAS)
    assert metrics["AP"] == pytest.approx(1.0)


def test_perturbed_predictions_match_a_direct_pycocotools_run(tmp_path):
    rng = np.random.default_rng(1)
    records = _synthetic_records(20, seed=1)
    gt = records_to_coco(records, AP10K)
    preds = _predictions_from(records, 0.04, rng)
    results = keypoint_results(preds, records, SIGMAS, vis_thr=0.2, oks_nms_thr=0.9)
    ours = coco_metrics(gt, results, SIGMAS)
    reference = _direct_pycocotools(tmp_path, gt, results)
    assert [ours[k] for k in METRIC_KEYS] == reference
    assert 0.2 < ours["AP"] < 0.95 and ours["APM"] > 0 and ours["APL"] > 0


def test_rescoring_uses_confident_keypoints_and_the_box_score():
    rec = _synthetic_records(1)[0]
    rec = Instance(rec.image, rec.bbox, rec.keypoints, image_id=1, score=0.5)
    scores = np.full((1, 17), 0.1)
    scores[0, :4] = [0.3, 0.5, 0.7, 0.9]
    preds = Predictions(rec.keypoints[None, :, :2], scores, np.zeros((1, 2)), np.ones((1, 2)))
    (result,) = keypoint_results(preds, [rec], SIGMAS, vis_thr=0.2)
    assert result["score"] == pytest.approx(0.5 * 0.6)
    assert result["keypoints"][2::3] == pytest.approx(scores[0].tolist())
    scores[:] = 0.1
    (result,) = keypoint_results(preds, [rec], SIGMAS, vis_thr=0.2)
    assert result["score"] == 0.0


def test_oks_nms_drops_near_duplicates_only():
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 100, (17, 2))
    poses = np.stack([base, base + 0.5, base + 60.0])
    areas = np.full(3, 100.0 * 100.0)
    keep = oks_nms(poses, np.array([0.8, 0.9, 0.7]), areas, SIGMAS, 0.9)
    assert keep.tolist() == [1, 2]  # the better duplicate and the distinct pose
    assert oks_nms(poses, np.array([0.8, 0.9, 0.7]), areas, SIGMAS, 1.0).tolist() == [1, 0, 2]
    # the OKS formula, by hand for one keypoint offset by d
    d, s, area = 3.0, SIGMAS[0], 2500.0
    b = base.copy()
    b[0, 0] += d
    expected = (16 + np.exp(-(d**2) / (2 * s) ** 2 / area / 2)) / 17
    assert oks_iou(base, b[None], area, np.array([area]), SIGMAS)[0] == pytest.approx(expected)


def test_pck_normalises_per_axis_by_the_box():
    gt = np.array([[[10.0, 10.0, 2], [50.0, 50.0, 2], [0.0, 0.0, 0]]])
    boxes = np.array([[0.0, 0.0, 100.0, 50.0]])
    pred = np.array([[[17.0, 10.0], [50.0, 57.0], [99.0, 99.0]]])  # 0.07 and 0.14 of the box
    assert pck(pred, gt, boxes, 0.1) == 0.5
    assert pck(pred, gt, boxes, 0.05) == 0.0
    assert pck(pred, gt, boxes, 0.15) == 1.0


class _OracleModel(torch.nn.Module):
    """Returns the ground-truth heatmaps of the dataset's crops, in loader order."""

    def __init__(self, dataset):
        super().__init__()
        self.config, self.keypoints = get_config("clamp_tiny_rn50"), dataset.keypoints
        self.num_keypoints = dataset.keypoints.num_keypoints
        self.dataset, self.seen = dataset, 0
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images):
        idx = range(self.seen, self.seen + len(images))
        self.seen += len(images)
        samples = [self.dataset[i] for i in idx]
        kps = torch.from_numpy(np.stack([s["keypoints"] for s in samples]))
        vis = torch.from_numpy(np.stack([s["visible"] for s in samples]))
        heatmaps, _ = generate_targets(kps, vis, (256, 256), (64, 64))
        return {"heatmaps": heatmaps}


def test_the_prediction_path_scores_a_perfect_model_at_ap_one(shared_data):
    root = shared_data / "mmpose-tests" / "ap10k"
    data = load_coco(root / "test_ap10k.json", root)
    dataset = TopDownDataset(data.records, AP10K, ground_truth=data.ground_truth)
    result = evaluate(_OracleModel(dataset), dataset, EvalConfig(flip_test=False, batch_size=1))
    assert result.metrics["AP"] == pytest.approx(1.0)
    assert result.metrics["PCK@0.05"] == 1.0
    err = np.abs(result.predictions.keypoints - np.stack([r.keypoints[:, :2]
                                                          for r in data.records]))
    labelled = np.stack([r.keypoints[:, 2] > 0 for r in data.records])
    # the targets' peaks are whole heatmap cells: within half a cell (2 crop px) of the truth
    assert err[labelled].max() <= 2 * 1.25 * 1091 / 256


def test_evaluate_a_tiny_model_with_flip_test(shared_data):
    root = shared_data / "mmpose-tests" / "ap10k"
    data = load_coco(root / "test_ap10k.json", root)
    dataset = TopDownDataset(data.records, AP10K, ground_truth=data.ground_truth)
    result = evaluate(create_model("clamp_tiny_rn50"), dataset)
    assert set(result.metrics) == {*METRIC_KEYS, "PCK@0.05", "PCK@0.1"}
    assert result.predictions.keypoints.shape == (2, 17, 2)
    assert len(result.results) <= 2
    table = format_metrics(result.metrics)
    assert table.splitlines()[0].split()[:6] == list(METRIC_KEYS) and "n/a" in table


def test_oks_nms_tie_order_is_the_official_one():
    """Equal scores are visited in mmpose's ``scores.argsort()[::-1]`` order (numpy's default
    sort, reversed), so the same one of two tied duplicates survives as in the official code."""
    rng = np.random.default_rng(4)
    for n in (2, 3, 5, 17, 40):
        poses = rng.uniform(0, 300, (n, 17, 2))
        areas = np.full(n, 100.0 * 100.0)
        scores = rng.choice([0.5, 0.7, 0.9], n)  # many ties
        official = scores.argsort()[::-1]
        assert oks_nms(poses, scores, areas, SIGMAS, 1.0).tolist() == official.tolist()
        # every pose duplicated with the same score: exactly the official pick survives
        twins = np.concatenate([poses, poses + 0.1])
        doubled = np.concatenate([scores, scores])
        keep = oks_nms(twins, doubled, np.full(2 * n, 1e4), SIGMAS, 0.9).tolist()
        order = doubled.argsort()[::-1].tolist()
        expected = []
        for i in order:
            if i % n not in {k % n for k in expected}:
                expected.append(i)
        assert keep == expected
