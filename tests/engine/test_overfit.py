"""The whole training path on real images: reader -> crops -> targets -> model -> losses ->
optimizer -> decode -> metric. A tiny CLAMP must overfit the two AP-10K sample animals."""

from __future__ import annotations

import csv

import pytest

from clamp_track.data.coco import load_coco
from clamp_track.data.dataset import TopDownDataset
from clamp_track.engine.evaluate import EvalConfig, evaluate
from clamp_track.engine.optim import OptimConfig
from clamp_track.engine.trainer import LoopConfig, fit
from clamp_track.models import create_model
from clamp_track.skeleton import AP10K


@pytest.mark.slow
def test_tiny_clamp_overfits_the_ap10k_samples(shared_data, tmp_path):
    root = shared_data / "mmpose-tests" / "ap10k"
    data = load_coco(root / "test_ap10k.json", root)
    train = TopDownDataset(data.records * 4, AP10K)  # one step of 8 crops per epoch
    val = TopDownDataset(data.records, AP10K, ground_truth=data.ground_truth)
    config = LoopConfig(
        epochs=150, batch_size=8, workers=0, progress_bar=False, val_interval=150,
        checkpoint_interval=150, eval=EvalConfig(flip_test=False, best_metric="PCK@0.1"),
        optim=OptimConfig(lr=3e-3, warmup_iters=10, milestones=(120,)),
    )
    before = evaluate(create_model("clamp_tiny_rn50"), val, config.eval).metrics
    result = fit(create_model("clamp_tiny_rn50"), train, config, tmp_path, val_set=val)
    assert result.metrics["PCK@0.1"] >= 0.9 > before["PCK@0.1"]
    assert result.metrics["AP"] > 0.5
    with open(tmp_path / "log.csv", newline="") as fh:
        total = [float(r["total"]) for r in csv.DictReader(fh)]
    assert total[-1] < 0.1 * total[0]
    reloaded = create_model(weights=result.best)
    again = evaluate(reloaded, val, config.eval).metrics
    assert again["PCK@0.1"] == result.metrics["PCK@0.1"]
