from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from clamp_track.config import from_dict, load_yaml
from clamp_track.engine.experiment import TrainConfig, build_training_model, run_training
from clamp_track.errors import InputError
from clamp_track.models import get_config
from clamp_track.skeleton import AP10K

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "configs").glob("*.yaml"))
DOCS = (REPO / "docs" / "reproducing.md").read_text()


def test_there_is_a_preset_for_every_row_of_tables_1_to_4_and_6():
    rows = {}
    for path in PRESETS:
        cfg = from_dict(TrainConfig, load_yaml(path), source=str(path))
        if cfg.paper is not None:
            for table in cfg.paper.table.split(", "):
                rows.setdefault(table, []).append(path.stem)
    assert {t: len(v) for t, v in sorted(rows.items())} == {
        "1": 5, "2": 5, "3": 4, "4": 5, "6": 4}


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_loads_strictly_and_is_documented(path, shared_data):
    cfg = from_dict(TrainConfig, load_yaml(path), source=str(path))
    config = cfg.model_overrides.apply(get_config(cfg.model))
    assert config.arch in cfg.model
    imagenet = config.backbone.kind == "imagenet_resnet"
    assert cfg.clip_weights == ("imagenet" if imagenet else "openai")
    assert cfg.output == f"runs/{path.stem}"
    assert cfg.train.optim.backbone_lr_mult == (0.1 if "vitb16" in cfg.model else 1.0)
    # the official code's settings (issue 13): L_feature, fp32, jitter per instance, bias decay
    assert config.feature_loss == "official" and cfg.model_overrides.feature_loss == (
        "official" if config.arch == "clamp" else None)
    assert cfg.train.amp is False and cfg.augment.shift_redraw is False
    assert cfg.train.optim.no_decay == "official"
    assert cfg.train.optim.bias_decay == ("vitb16" in cfg.model)
    families = {c["supercategory"] for c in json.loads(
        (shared_data / "mmpose-tests/ap10k/test_ap10k.json").read_text())["categories"]}
    assert set(cfg.regime.train_families) <= families
    assert set(cfg.regime.test_families) <= families
    # the docs give the command and, for paper rows, the paper's AP on the same line
    lines = [line for line in DOCS.splitlines() if f"configs/{path.stem}.yaml`" in line]
    assert lines, f"{path.name} is not in docs/reproducing.md"
    if cfg.paper is not None:
        assert any(re.search(rf"\| {cfg.paper.AP} \|", line) for line in lines)


def test_ablation_overrides_change_the_model():
    path = REPO / "configs" / "ap10k_clamp_rn50_spatial_only.yaml"
    cfg = from_dict(TrainConfig, load_yaml(path))
    tiny = cfg.model_overrides.apply(get_config("clamp_tiny_rn50"))
    assert tiny.feature_weight == 0.0 and tiny.use_prompt_encoder is False
    model = build_training_model(
        from_dict(TrainConfig, {"model": "clamp_tiny_rn50", "clip_weights": None,
                                "model_overrides": {"use_prompt_encoder": False,
                                                    "spatial_weight": 0.0}}), AP10K)
    assert model.prompt_encoder is None and model.config.spatial_weight == 0.0


def test_strict_config_errors_name_the_key():
    with pytest.raises(InputError, match=r"train: unknown key\(s\) \['epoch'\]"):
        from_dict(TrainConfig, {"train": {"epoch": 3}}, source="x.yaml")
    with pytest.raises(InputError, match="must not overlap"):
        from_dict(TrainConfig, {"regime": {"kind": "zeroshot", "train_families": ["A"],
                                           "test_families": ["A"]}})


def _tiny(shared_data, **regime) -> TrainConfig:
    return from_dict(TrainConfig, {
        "model": "clamp_tiny_rn50", "clip_weights": None,
        "data": {"root": str(shared_data / "mmpose-tests" / "ap10k"),
                 "train": {"annotations": "test_ap10k.json"},
                 "val": {"annotations": "test_ap10k.json"}},
        "regime": regime or {"kind": "supervised"},
        "train": {"epochs": 1, "batch_size": 2, "workers": 0, "progress_bar": False,
                  "eval": {"flip_test": False}},
    })


def test_run_training_writes_the_run_folder(shared_data, tmp_path):
    cfg = _tiny(shared_data, kind="zeroshot", train_families=["Bovidae"],
                test_families=["Felidae"])
    result = run_training(cfg, output=tmp_path)
    assert result.epochs_done == 1 and result.best is not None
    samples = json.loads((tmp_path / "samples.json").read_text())
    assert samples["train"]["per_species"] == {"antelope": 1}
    assert samples["val"]["per_species"] == {"jaguar": 1}
    resolved = from_dict(TrainConfig, load_yaml(tmp_path / "config.resolved.yaml"))
    assert resolved == cfg
    with pytest.raises(InputError, match="holds a run already"):
        run_training(cfg, output=tmp_path)
    swapped = replace(cfg, regime=replace(cfg.regime, train_families=("Felidae",),
                                          test_families=("Bovidae",)))
    with pytest.raises(InputError, match="samples.json: the run was trained on other samples"):
        run_training(swapped, output=tmp_path, resume=True)


def test_seed_summary_is_mean_and_sample_sd_of_each_runs_best_or_final_validation(tmp_path):
    import statistics

    from clamp_track.engine.experiment import summarise_seeds
    from clamp_track.engine.trainer import VAL_COLUMNS

    # (AP at epoch 10, AP at epoch 20) per seed; APM -1 in one seed (nothing to score)
    runs = {0: (0.50, 0.48), 1: (0.40, 0.46), 2: (0.55, 0.52)}
    for seed, (first, last) in runs.items():
        (tmp_path / f"seed{seed}").mkdir()
        rows = [",".join(VAL_COLUMNS)]
        for epoch, ap in ((10, first), (20, last)):
            apm = -1 if seed == 1 else 0.3
            values = {"epoch": epoch, "step": epoch * 5, "AP": ap, "AP50": ap + 0.3,
                      "AP75": ap - 0.1, "APM": apm, "APL": ap, "AR": ap + 0.05,
                      "PCK@0.05": 0.2, "PCK@0.1": 0.4}
            rows.append(",".join(str(values[c]) for c in VAL_COLUMNS))
        (tmp_path / f"seed{seed}" / "val.csv").write_text("\n".join(rows) + "\n")
    best = summarise_seeds(tmp_path, [0, 1, 2])
    aps = [0.50, 0.46, 0.55]
    assert [best.per_seed[s]["AP"] for s in (0, 1, 2)] == aps
    assert best.mean["AP"] == pytest.approx(statistics.fmean(aps))
    assert best.sd["AP"] == pytest.approx(statistics.stdev(aps))
    assert best.mean["APM"] == -1.0 and "APM   n/a" in best.format()
    assert f"AP  {100 * statistics.fmean(aps):.1f} ± {100 * statistics.stdev(aps):.1f}" in \
        best.format()
    final = summarise_seeds(tmp_path, [0, 1, 2], checkpoint="final")
    assert final.mean["AP"] == pytest.approx(statistics.fmean([0.48, 0.46, 0.52]))
    assert json.loads((tmp_path / "seeds.json").read_text())["checkpoint"] == "final"
    one = summarise_seeds(tmp_path, [2])
    assert one.sd["AP"] == 0.0 and one.mean["AP"] == 0.55
    with pytest.raises(InputError, match="no validation to summarise"):
        summarise_seeds(tmp_path, [7])
