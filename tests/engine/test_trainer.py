from __future__ import annotations

import csv
from dataclasses import replace

import pytest
import torch

from clamp_track.data.augment import AugmentConfig
from clamp_track.data.coco import load_coco
from clamp_track.data.dataset import TopDownDataset
from clamp_track.engine.evaluate import EvalConfig
from clamp_track.engine.optim import OptimConfig
from clamp_track.engine.trainer import LOG_COLUMNS, LoopConfig, fit
from clamp_track.errors import CheckpointError
from clamp_track.models import build_model, create_model, get_config, load_checkpoint
from clamp_track.skeleton import AP10K

SIZE = (128, 128)  # 4x cheaper than 256; the loop does not depend on the crop size


def _model(name="clamp_tiny_rn50"):
    return build_model(replace(get_config(name), input_size=SIZE), AP10K)


@pytest.fixture()
def sets(shared_data):
    root = shared_data / "mmpose-tests" / "ap10k"
    data = load_coco(root / "test_ap10k.json", root)
    train = TopDownDataset(data.records, AP10K, SIZE, augment=AugmentConfig(), seed=3)
    val = TopDownDataset(data.records, AP10K, SIZE, ground_truth=data.ground_truth)
    return train, val


def _config(**kw):
    base = dict(epochs=2, batch_size=2, workers=0, progress_bar=False, val_interval=1,
                checkpoint_interval=1, eval=EvalConfig(flip_test=False, best_metric="PCK@0.1"),
                optim=OptimConfig(lr=1e-3, warmup_iters=1, milestones=(1,), clip_grad=1.0))
    base.update(kw)
    return LoopConfig(**base)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_fit_logs_every_loss_term_and_writes_loadable_checkpoints(sets, tmp_path):
    train, val = sets
    events = []
    result = fit(_model(), train, _config(), tmp_path, val_set=val,
                 callback=events.append, extra={"note": "test"})
    assert (result.epochs_done, result.steps, result.cancelled) == (2, 2, False)
    rows = _rows(tmp_path / "log.csv")
    assert list(rows[0]) == list(LOG_COLUMNS) and [r["step"] for r in rows] == ["1", "2"]
    assert all(float(r[k]) > 0 for r in rows for k in ("pose", "spatial", "feature", "total"))
    assert float(rows[0]["lr"]) == pytest.approx(1e-3 * 0.001)  # the first warm-up step
    assert float(rows[1]["lr"]) == pytest.approx(1e-4)  # after the milestone
    val_rows = _rows(tmp_path / "val.csv")
    assert [r["epoch"] for r in val_rows] == ["1", "2"] and "AP" in val_rows[0]
    assert [e.event for e in events] == ["step", "epoch", "step", "epoch"]
    assert events[-1].metrics is not None
    assert events[-1].total_steps == 2 and set(events[-1].losses) >= {"pose", "total"}
    last = load_checkpoint(result.last)
    assert last.extra["note"] == "test" and last.extra["train_state"]["step"] == 2
    reloaded = create_model(weights=result.best)
    assert reloaded.keypoints == AP10K
    assert load_checkpoint(result.best).extra["epoch"] == result.best_metric[2]
    final = create_model(weights=result.last).state_dict()
    for key, value in result.model.state_dict().items():
        torch.testing.assert_close(final[key], value.cpu())


class _Crash(RuntimeError):
    pass


def test_resume_after_a_crash_continues_like_the_uninterrupted_run(sets, tmp_path):
    train, val = sets
    config = _config(batch_size=1, val_interval=2)  # 2 epochs of 2 steps
    torch.manual_seed(0)
    straight = fit(_model(), train, config, tmp_path / "a", val_set=val)

    def crash_in_epoch_2(progress):
        if progress.event == "step" and progress.step == 3:
            raise _Crash("killed")

    torch.manual_seed(0)
    with pytest.raises(_Crash):
        fit(_model(), train, config, tmp_path / "b", val_set=val,
            callback=crash_in_epoch_2)
    assert load_checkpoint(tmp_path / "b" / "last.pt").extra["train_state"]["epoch"] == 1
    assert len(_rows(tmp_path / "b" / "log.csv")) == 3  # one step past the checkpoint
    torch.manual_seed(123)  # a fresh process: different init and RNG, restored from last.pt
    resumed = fit(_model(), train, config, tmp_path / "b",
                  val_set=val, resume=True)
    assert (resumed.epochs_done, resumed.steps) == (straight.epochs_done, straight.steps) == (2, 4)
    a, b = _rows(tmp_path / "a" / "log.csv"), _rows(tmp_path / "b" / "log.csv")
    assert [r["step"] for r in b] == ["1", "2", "3", "4"]
    for ra, rb in zip(a, b):
        for key in ("epoch", "step", "lr", "pose", "spatial", "feature", "total"):
            assert ra[key] == rb[key], key
    state_a = load_checkpoint(straight.last).extra["train_state"]
    state_b = load_checkpoint(resumed.last).extra["train_state"]
    assert state_a["schedule"] == state_b["schedule"] == {"epoch": 1, "step": 3}
    lr_a = [g["lr"] for g in state_a["optimizer"]["param_groups"]]
    assert lr_a == [g["lr"] for g in state_b["optimizer"]["param_groups"]]
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value)
    assert [r["epoch"] for r in _rows(tmp_path / "b" / "val.csv")] == ["2"]
    assert resumed.best_metric[0] == "PCK@0.1"


def test_cancel_and_resume_errors(sets, tmp_path):
    train, _ = sets
    result = fit(_model("simplebaseline_tiny_rn50"), train, _config(), tmp_path,
                 callback=lambda p: p.step == 1)
    assert result.cancelled and result.steps == 1 and result.last is None and result.best is None
    with pytest.raises(CheckpointError, match="last.pt: nothing to resume"):
        fit(_model("simplebaseline_tiny_rn50"), train, _config(), tmp_path / "new",
            resume=True)
    fit(_model("simplebaseline_tiny_rn50"), train, _config(epochs=1), tmp_path / "c")
    with pytest.raises(CheckpointError, match="another model or keypoint set"):
        fit(_model(), train, _config(), tmp_path / "c", resume=True)
    # a run started with biases decayed, resumed with the RN50 rule: other parameter groups
    other = _config(optim=replace(_config().optim, bias_decay=True))
    with pytest.raises(CheckpointError, match="other optimizer parameter groups"):
        fit(_model("simplebaseline_tiny_rn50"), train, other, tmp_path / "c", resume=True)


def test_package_exports_resolve_lazily():
    import clamp_track.engine as engine

    assert all(getattr(engine, name) is not None for name in engine.__all__)
