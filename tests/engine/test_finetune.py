"""Fine-tuning on corrections: a real pipeline store end to end, the GUI's progress/cancel
protocol, bad input, new keypoint vocabularies, and that a tiny model really learns."""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from clamp_track.data.augment import AugmentConfig
from clamp_track.engine.finetune import (
    METRIC,
    FinetuneConfig,
    ReplayConfig,
    finetune,
    load_sources,
)
from clamp_track.errors import CheckpointError, InputError
from clamp_track.io.dlc_labels import read_dlc_labels
from clamp_track.io.store import ResultStore
from clamp_track.models import build_model, create_model, get_config, load_checkpoint
from clamp_track.models import save_checkpoint as save
from clamp_track.skeleton import AP10K

SIZE = (128, 128)  # 4x cheaper than the variants' 256 px
OPENFIELD = "deeplabcut-examples/openfield-Pranav-2018-10-30/labeled-data/m4s1"
CORRECTED = (0, 3, 6, 9, 12, 15)
QUICK = dict(steps=4, val_every=2, min_val_images=3, batch_size=4, device="cpu", workers=0,
             backbone_bn="train")


def _tiny(keypoints=AP10K):
    return build_model(replace(get_config("clamp_tiny_rn50"), input_size=SIZE), keypoints)


@pytest.fixture(scope="module")
def pipeline_store(shared_data, tmp_path_factory):
    """A real store: the pipeline on 16 frames of the BADJA cows video with tiny weights, then
    corrections on 6 frames (5 keypoints each, one marked absent)."""
    import cv2

    from clamp_track.pipelines.run import DetectConfig, RunConfig, run_video
    from clamp_track.pipelines.smoother import SmootherConfig
    from clamp_track.pipelines.tracker import TrackerConfig

    folder = tmp_path_factory.mktemp("ft_store")
    video = folder / "cows.mp4"
    shutil.copy(shared_data / "badja-davis" / "derived" / "cows_480p_24fps.mp4", video)
    masks = sorted((shared_data / "badja-davis/DAVIS/Annotations/480p/cows").glob("*.png"))
    lines = []
    for i, mask_path in enumerate(masks[:16]):
        ys, xs = np.nonzero(cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127)
        lines.append(f"{i + 1},-1,{xs.min()},{ys.min()},{xs.max() + 1 - xs.min()},"
                     f"{ys.max() + 1 - ys.min()},0.95,-1,-1,-1")
    (folder / "det.txt").write_text("\n".join(lines) + "\n")
    weights = save(_tiny(), folder / "tiny128.pt")
    cfg = RunConfig(pose_model="clamp_tiny_rn50", pose_weights=str(weights), end=16,
                    detect=DetectConfig(name="file", boxes=str(folder / "det.txt")),
                    tracker=TrackerConfig(min_track_length=5),
                    smoother=SmootherConfig(min_confidence=1e-12), exports=())
    summary = run_video(video, cfg, folder)
    with ResultStore.open(summary.store) as store:
        for f in CORRECTED:
            inst = store.frame_instances(f)
            x1, y1, x2, y2 = inst["boxes"][0]
            track = int(inst["tracks"][0])
            for k in range(5):
                store.set_correction(f, track, k, float(x1 + (x2 - x1) * (0.2 + 0.1 * k)),
                                     float(y1 + (y2 - y1) * 0.3), True)
            store.set_correction(f, track, 7, None, None, visible=False)
    return summary.store, weights


def _copy_store(store, folder, *, keep_corrections: bool):
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / store.name
    shutil.copy(store, copy)
    with ResultStore.open(copy) as s:
        if not keep_corrections:
            s._db.execute("DELETE FROM corrections")
    return copy


def test_finetune_a_pipeline_store_end_to_end(pipeline_store, tmp_path):
    store, weights = pipeline_store
    events = []
    result = finetune([store], FinetuneConfig(output=str(tmp_path / "new.pt"), **QUICK),
                      progress=events.append)
    assert result.weights == tmp_path / "new.pt" and not result.cancelled
    with ResultStore.open(store, readonly=True) as s:
        keypoints = s.keypoints
    model = create_model(weights=result.weights)
    assert model.keypoints == keypoints and model.config.input_size == SIZE
    meta = load_checkpoint(result.weights).extra["finetune"]
    assert meta["start"]["weights"] == str(weights)  # the weights the store was made with
    assert meta["sources"] == [str(store)]
    frames = sorted(i["frame"] for i in meta["train"] + meta["val"])
    assert frames == list(CORRECTED) and len(meta["val"]) == 1 == result.val_images
    assert all(i["labelled"] == 5 for i in meta["train"])  # untouched keypoints: not labels
    assert meta["recipe"]["lr"] == 1e-4 and meta["steps"] == result.steps >= 4
    assert result.metrics_before is not None and "PCK@0.1" in result.metrics_after
    run = tmp_path / "new.run"
    assert {p.name for p in run.iterdir()} == {"log.csv", "val.csv", "split.json",
                                              "finetune.resolved.yaml"}
    stages = [e.stage for e in events]
    assert stages[0] == "frames" and stages[-1] == "done" and "training" in stages
    steps = [e.done for e in events if e.stage == "training"]
    assert steps == sorted(steps) and events[-1].total == result.steps
    assert {e.total for e in events if e.stage == "frames"} == {len(CORRECTED)}
    assert "new.pt" in str(result) and "held-out PCK@0.1" in str(result)
    assert result.warnings[0].startswith("no labels for left shoulder, left elbow")


def test_cancel_stops_without_writing_weights(pipeline_store, tmp_path):
    store, _ = pipeline_store
    seen = []

    def progress(p):
        seen.append(p)

    result = finetune([store], FinetuneConfig(output=str(tmp_path / "x.pt"), **QUICK),
                      progress=progress, cancel=lambda: len(seen) >= 8)
    assert result.cancelled and result.weights is None
    assert not (tmp_path / "x.pt").exists()
    assert "cancelled" in str(result)


def test_cancel_after_a_validation_keeps_the_best_weights_so_far(pipeline_store, tmp_path):
    """Issue 11.3: a cancelled fine-tune used to keep nothing (135 steps lost)."""
    store, _ = pipeline_store
    validated = []

    def progress(p):
        if p.stage == "training" and p.metric is not None:
            validated.append(p)

    cfg = FinetuneConfig(output=str(tmp_path / "x.pt"), **{**QUICK, "steps": 40})
    result = finetune([store], cfg, progress=progress, cancel=lambda: bool(validated))
    assert result.cancelled and result.weights == tmp_path / "x.pt"
    assert result.steps < 40 and "kept the best weights so far" in str(result)
    saved = load_checkpoint(result.weights)
    assert saved.extra["finetune"]["metrics_after"][METRIC] == pytest.approx(
        validated[-1].best_metric)


def test_no_corrected_frames_is_a_clear_error(pipeline_store, tmp_path):
    store, _ = pipeline_store
    empty = _copy_store(store, tmp_path / "empty", keep_corrections=False)
    with pytest.raises(InputError, match=r"cows.mp4.clamp.sqlite: no corrected frames; "
                       r"correct some keypoints first"):
        finetune([empty], FinetuneConfig(**QUICK))


def test_missing_video_is_named_and_can_be_pointed_at(pipeline_store, tmp_path):
    store, _ = pipeline_store
    copy = _copy_store(store, tmp_path / "moved", keep_corrections=True)
    with ResultStore.open(copy) as s:  # the video moved (the store records where it was)
        s.set_meta(video_ref=dict(s.meta("video_ref"), absolute=str(tmp_path / "gone" /
                                                                    "cows.mp4"), relative=None))
    with pytest.raises(InputError, match=r"its video .*gone/cows.mp4 is missing.*--video PATH"):
        load_sources([copy], FinetuneConfig())
    with ResultStore.open(store, readonly=True) as s:
        real = s.video_info.path
    labels, _ = load_sources([copy], FinetuneConfig(videos=(str(real),)))
    assert len(labels.labelled_items()) == len(CORRECTED)
    by_folder, _ = load_sources([copy], FinetuneConfig(videos=(str(Path(real).parent),)))
    assert by_folder.items[0].image.path == real


def test_new_vocabulary_needs_the_explicit_flag(shared_data, tmp_path):
    labels = read_dlc_labels(shared_data / OPENFIELD)
    labels = labels.with_items(labels.items[:6])
    ap10k = save(_tiny(), tmp_path / "ap10k.pt")
    cfg = FinetuneConfig(weights=str(ap10k), output=str(tmp_path / "mouse.pt"), **QUICK)
    with pytest.raises(CheckpointError, match=r"ap10k.pt: the weights predict keypoint set "
                       r"'ap10k' .* labels use 'openfield-Pranav-2018-10-30' \(snout, left ear, "
                       r"right ear, tail base\); pass --adapt-keypoints"):
        finetune([labels], cfg)
    result = finetune([labels], replace(cfg, adapt_keypoints=True))
    model = create_model(weights=result.weights)
    assert model.keypoints == labels.keypoints and result.adapted == ()
    start = load_checkpoint(ap10k).state_dict
    # the (frozen) text encoder came from the start weights; the prompts are the new names
    for key in ("text_encoder.text_projection", "text_encoder.token_embedding.weight"):
        np.testing.assert_array_equal(model.state_dict()[key].numpy(), start[key].numpy())
    meta = load_checkpoint(result.weights).extra["finetune"]
    assert meta["start"]["keypoints"] == "ap10k" and meta["start"]["adapted_keeping"] == []


def test_same_names_need_no_flag(shared_data, tmp_path):
    labels = read_dlc_labels(shared_data / OPENFIELD)
    labels = labels.with_items(labels.items[:6])
    earlier = save(_tiny(labels.keypoints), tmp_path / "mouse.pt")
    result = finetune([labels], FinetuneConfig(weights=str(earlier), val_fraction=0,
                                               output=str(tmp_path / "again.pt"), **QUICK))
    assert result.adapted is None and result.metrics_before is None
    assert create_model(weights=result.weights).keypoints == labels.keypoints


def test_tiny_model_learns_the_openfield_mouse(shared_data, tmp_path):
    """Loss falls and PCK@0.1 on the training frames rises far above the random model's.

    ~12 s on one busy core (8 frames, 128 px, 60 steps); the held-out version of this is
    ``benchmarks/finetune_openfield.py``.
    """
    from clamp_track.data.corrections import to_instances
    from clamp_track.data.dataset import TopDownDataset
    from clamp_track.engine.evaluate import EvalConfig, evaluate

    labels = read_dlc_labels(shared_data / OPENFIELD)
    labels = labels.with_items(labels.items[:8])
    start = save(_tiny(labels.keypoints), tmp_path / "random.pt")
    frames = TopDownDataset(to_instances(labels.items, labels.keypoints), labels.keypoints,
                            SIZE)
    protocol = EvalConfig(flip_test=False)
    before = evaluate(create_model(weights=start), frames, protocol).metrics["PCK@0.1"]
    still = AugmentConfig(flip_prob=0, half_body_prob=0, scale=0, rotation=0, rotation_prob=0,
                          shift_prob=0)
    cfg = FinetuneConfig(weights=str(start), output=str(tmp_path / "mouse.pt"), steps=60,
                         val_every=20, val_fraction=0, lr=2e-3, warmup_steps=10,
                         backbone_bn="train", augment=still, photometric=None, device="cpu")
    result = finetune([labels], cfg)
    after = evaluate(create_model(weights=result.weights), frames, protocol).metrics["PCK@0.1"]
    with open(tmp_path / "mouse.run" / "log.csv", newline="") as fh:
        pose = [float(r["pose"]) for r in csv.DictReader(fh)]
    assert np.mean(pose[-10:]) < 0.2 * np.mean(pose[:10])
    assert before < 0.2 and after >= 0.8


def test_replay_mixes_a_base_dataset_by_keypoint_name(pipeline_store, shared_data, tmp_path):
    store, _ = pipeline_store
    root = shared_data / "mmpose-tests" / "ap10k"
    replay = ReplayConfig(str(root / "test_ap10k.json"), str(root), ratio=0.5)
    result = finetune([store], FinetuneConfig(output=str(tmp_path / "r.pt"), replay=replay,
                                              **QUICK))
    split = load_checkpoint(result.weights).extra["finetune"]["split"]
    assert split["replay_per_epoch"] == round(0.5 * split["repeats"] * result.train_instances)
    assert len(split["replay_keypoints"]) == 17
    labels = read_dlc_labels(shared_data / OPENFIELD)
    with pytest.raises(InputError, match="share no name with keypoint set"):
        finetune([labels.with_items(labels.items[:6])],
                 FinetuneConfig(weights="clamp_tiny_rn50", replay=replay,
                                output=str(tmp_path / "m.pt"), **QUICK))
    assert not (tmp_path / "m.run").exists()  # refused before anything was written
