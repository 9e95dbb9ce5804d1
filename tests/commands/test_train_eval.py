from __future__ import annotations

import csv
import json

import pytest
import yaml

from clamp_track.cli import main
from clamp_track.models import create_model, save_checkpoint


@pytest.fixture()
def ap10k(shared_data):
    return shared_data / "mmpose-tests" / "ap10k"


def _tiny_config(tmp_path, ap10k):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "model": "clamp_tiny_rn50", "clip_weights": None,
        "data": {"root": str(ap10k), "train": {"annotations": "test_ap10k.json"},
                 "val": {"annotations": "test_ap10k.json"}},
        "train": {"epochs": 1, "batch_size": 2, "workers": 0, "progress_bar": False,
                  "eval": {"flip_test": False}},
    }))
    return path


def test_train_overrides_and_resume(tmp_path, ap10k, capsys):
    config = _tiny_config(tmp_path, ap10k)
    out = tmp_path / "run"
    assert main(["train", str(config), "train.optim.lr=2e-3", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{out}: 1 epochs, 1 steps" in printed and "AP50" in printed
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["train"]["optim"]["lr"] == 2e-3
    assert main(["train", str(config), "-o", str(out)]) == 2
    assert "holds a run already (last.pt); pass --resume" in capsys.readouterr().err
    assert main(["train", str(config), "train.epochs=2", "-o", str(out), "--resume"]) == 0
    with open(out / "log.csv", newline="") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["0", "1"]
    assert main(["train", str(config), "train.epoch=2"]) == 2
    assert "unknown key(s) ['epoch']" in capsys.readouterr().err


def test_eval_weights_and_its_predictions_agree(tmp_path, ap10k, capsys):
    weights = save_checkpoint(create_model("clamp_tiny_rn50"), tmp_path / "tiny.pt")
    ann = ap10k / "test_ap10k.json"
    assert main(["eval", "--weights", str(weights), "--data", str(ann), "--images", str(ap10k),
                 "--json", str(tmp_path / "m.json"), "--save-predictions",
                 str(tmp_path / "res.json"), "--workers", "0", "--device", "cpu"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["AP", "AP50", "AP75", "APM", "APL", "AR", "PCK@0.05", "PCK@0.1"]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {"AP", "AP50", "AP75", "APM", "APL", "AR"} <= set(metrics)
    assert main(["eval", "--predictions", str(tmp_path / "res.json"), "--data", str(ann),
                 "--json", str(tmp_path / "p.json")]) == 0
    again = json.loads((tmp_path / "p.json").read_text())
    assert again == {k: metrics[k] for k in ("AP", "AP50", "AP75", "APM", "APL", "AR")}


def test_eval_ground_truth_predictions_score_one(tmp_path, ap10k, capsys):
    ann = ap10k / "test_ap10k.json"
    gt = json.loads(ann.read_text())
    results = [{"image_id": a["image_id"], "category_id": a["category_id"],
                "keypoints": a["keypoints"], "score": 1.0} for a in gt["annotations"]]
    (tmp_path / "gt_res.json").write_text(json.dumps(results))
    assert main(["eval", "--predictions", str(tmp_path / "gt_res.json"), "--data", str(ann),
                 "--keypoints", "ap10k", "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["AP"] == pytest.approx(1.0) and metrics["APM"] == -1.0
    assert "100.0" in capsys.readouterr().out


def test_eval_user_errors_are_one_line(tmp_path, ap10k, capsys):
    ann = ap10k / "test_ap10k.json"
    assert main(["eval", "--weights", "x.pt", "--data", str(ann)]) == 2
    assert "--weights needs --images" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps([{"image_id": 4, "keypoints": [1, 2, 3],
                                                    "score": 1}]))
    assert main(["eval", "--predictions", str(tmp_path / "bad.json"), "--data", str(ann)]) == 2
    err = capsys.readouterr().err
    assert "bad.json: result 0 has 3 keypoint values" in err and err.count("\n") == 1
    assert main(["eval", "--predictions", str(tmp_path / "none.json"), "--data", str(ann)]) == 2
    assert "none.json: results file not found" in capsys.readouterr().err


def test_a_preset_trains_and_validates_in_fp32(tmp_path, ap10k, monkeypatch):
    """A short CPU run of the tiny model through a real preset (only model, data and length
    overridden): no autocast in any forward, fp32 outputs, validation in fp32."""
    import torch

    import clamp_track.engine.experiment as experiment
    import clamp_track.engine.trainer as trainer
    from clamp_track.config import from_dict, load_yaml
    from clamp_track.engine.experiment import TrainConfig

    preset = "configs/ap10k_clamp_rn50.yaml"
    cfg = from_dict(TrainConfig, load_yaml(preset))
    assert cfg.train.amp is False and cfg.model_overrides.feature_loss == "official"
    seen, evals = [], []
    build = experiment.build_training_model

    def build_and_watch(cfg, keypoints):
        model = build(cfg, keypoints)
        model.register_forward_hook(lambda m, i, out: seen.append(
            (torch.is_autocast_enabled("cpu"), out["heatmaps"].dtype, model.training)))
        return model

    def evaluate(*args, **kwargs):
        evals.append(kwargs["amp"])
        return real_evaluate(*args, **kwargs)

    real_evaluate = trainer.evaluate
    monkeypatch.setattr(experiment, "build_training_model", build_and_watch)
    monkeypatch.setattr(trainer, "evaluate", evaluate)
    out = tmp_path / "run"
    assert main(["train", preset, "model=clamp_tiny_rn50", "clip_weights=null",
                 f"data.root={ap10k}", "data.train.annotations=test_ap10k.json",
                 "data.train.images=.", "data.val.annotations=test_ap10k.json",
                 "data.val.images=.", "train.epochs=1", "train.batch_size=2", "train.workers=0",
                 "train.progress_bar=false", "train.eval.flip_test=false", "-o", str(out)]) == 0
    assert any(training for *_, training in seen) and any(not t for *_, t in seen)
    assert {(autocast, dtype) for autocast, dtype, _ in seen} == {(False, torch.float32)}
    assert evals == [False]
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["train"]["amp"] is False
    with open(out / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(float(r["feature"]) > 0 for r in rows)


def test_eval_runs_fp32_unless_fp16_is_asked_for(tmp_path, ap10k, monkeypatch):
    import clamp_track.engine.evaluate as evaluate_module

    weights = save_checkpoint(create_model("clamp_tiny_rn50"), tmp_path / "tiny.pt")
    calls = []
    real = evaluate_module.evaluate

    def evaluate(*args, **kwargs):
        calls.append(kwargs.get("amp"))
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "evaluate", evaluate)
    base = ["eval", "--weights", str(weights), "--data", str(ap10k / "test_ap10k.json"),
            "--images", str(ap10k), "--workers", "0", "--device", "cpu", "--no-flip"]
    assert main(base) == 0 and main([*base, "--fp16"]) == 0
    assert calls == [False, True]


def test_train_repeats_a_fewshot_row_over_seeds(tmp_path, ap10k, capsys):
    import statistics

    config = tmp_path / "fewshot.yaml"
    data = yaml.safe_load(_tiny_config(tmp_path, ap10k).read_text())
    data["regime"] = {"kind": "fewshot", "shots": 1, "seed": 99}
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "runs"
    assert main(["train", str(config), "--seeds", "0-1,5", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 seeds (0, 1, 5), best validation of each run, mean ± sd:" in printed
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["seeds"] == [0, 1, 5] and summary["checkpoint"] == "best"
    for seed in (0, 1, 5):
        run = out / f"seed{seed}"
        assert json.loads((run / "samples.json").read_text())["seed"] == seed
        resolved = yaml.safe_load((run / "config.resolved.yaml").read_text())
        assert resolved["regime"]["seed"] == seed and resolved["train"]["seed"] == seed
        with open(run / "val.csv", newline="") as fh:
            (row,) = list(csv.DictReader(fh))
        assert summary["per_seed"][str(seed)]["AP"] == pytest.approx(float(row["AP"]))
    aps = [summary["per_seed"][str(s)]["AP"] for s in (0, 1, 5)]
    assert summary["mean"]["AP"] == pytest.approx(statistics.fmean(aps))
    assert summary["sd"]["AP"] == pytest.approx(statistics.stdev(aps))
    ap_line = next(line for line in printed.splitlines() if line.split()[:1] == ["AP"])
    assert f"{100 * summary['mean']['AP']:.1f} ± {100 * summary['sd']['AP']:.1f}" in ap_line
    lines = (out / "seeds.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in lines] == ["seed", "0", "1", "5", "mean", "sd"]
    # a finished repeat is not overwritten; --resume only reads the finished runs
    assert main(["train", str(config), "--seeds", "0,1,5", "-o", str(out)]) == 2
    assert "holds a run already" in capsys.readouterr().err
    assert main(["train", str(config), "--seeds", "0,1,5", "-o", str(out), "--resume"]) == 0
    assert json.loads((out / "seeds.json").read_text()) == summary
    assert main(["train", str(config), "--seeds", "0,x"]) == 2
    assert "--seeds '0,x': expected seeds such as 0,1,2 or 0-4" in capsys.readouterr().err
    assert main(["train", str(config), "--seeds", "1,1"]) == 2
    assert "distinct seeds" in capsys.readouterr().err
