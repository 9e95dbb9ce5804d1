"""The ONNX Runtime backend of the pose forward: same results as PyTorch, one export per model."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch

from clamp_track.errors import InputError
from clamp_track.models import create_model
from clamp_track.pipelines import backends
from clamp_track.pipelines.backends import OnnxForward, check_backend
from clamp_track.pipelines.pose import PoseConfig, PoseEstimator
from clamp_track.types import Detections

needs_onnx = pytest.mark.skipif(
    any(m not in sys.modules and __import__("importlib").util.find_spec(m) is None
        for m in ("onnxruntime", "onnx", "onnxscript")),
    reason="the onnx extra is not installed (pip install 'clamp-track[onnx]')")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """One cache folder for the module, so the tiny model is exported once."""
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture
def cache(graphs, monkeypatch):
    monkeypatch.setenv("CLAMP_TRACK_CACHE", str(graphs.parent / graphs.name))
    return graphs


@pytest.fixture(scope="module")
def frames(shared_data):
    import cv2

    folder = shared_data / "badja-davis" / "DAVIS" / "JPEGImages" / "480p" / "cows"
    return [cv2.cvtColor(cv2.imread(str(folder / f"{i:05d}.jpg")), cv2.COLOR_BGR2RGB)
            for i in range(0, 40, 10)]


def _boxes(n):
    return [Detections([[100, 80, 400, 300], [450, 60, 760, 440]], [0.9, 0.8],
                       track_ids=[1, 2]) for _ in range(n)]


@needs_onnx
def test_onnxruntime_gives_the_keypoints_of_torch_and_exports_once(frames, cache, monkeypatch):
    torch.manual_seed(3)
    model = create_model("clamp_tiny_rn50")
    dets = _boxes(len(frames))
    eager = PoseEstimator(model, PoseConfig(batch_size=3, device="cpu")).predict(
        frames, dets, list(range(len(frames))))
    exports = []
    real = backends.export_graph
    monkeypatch.setattr(backends, "export_graph", lambda m, p: exports.append(p) or real(m, p))
    onnx = PoseEstimator(model, PoseConfig(batch_size=3, device="cpu", backend="onnxruntime"))
    assert onnx._onnx.path.parent == cache / "onnx" and len(exports) == 1
    ours = onnx.predict(frames, dets, list(range(len(frames))))
    for a, b in zip(eager, ours):
        np.testing.assert_allclose(b.keypoints, a.keypoints, atol=1e-4)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-6)
    # the graph's heatmaps are the model's, for any batch size (the batch axis is dynamic)
    x = torch.randn(5, 3, *model.config.input_size)
    with torch.inference_mode():
        ref = model(x)["heatmaps"]
    assert ref.abs().max() > 0  # (a random model's heatmaps are small: compare relatively)
    torch.testing.assert_close(onnx._onnx(x)["heatmaps"], ref, rtol=1e-4,
                               atol=1e-5 * ref.abs().max().item())
    # a second run of the same model takes the cached graph; changed weights or prompts
    # (fine-tuning, another keypoint set) name another graph
    again = OnnxForward(model)
    assert again.path == onnx._onnx.path and len(exports) == 1
    key = backends.graph_key(model, backends._prompts(model))
    with torch.no_grad():
        model.keypoint_head.final_layer.bias.add_(0.5)
    assert backends.graph_key(model, backends._prompts(model)) != key
    with torch.no_grad():
        model.keypoint_head.final_layer.bias.sub_(0.5)
        model.contexts.add_(0.1)
    assert backends.graph_key(model, backends._prompts(model)) != key


@needs_onnx
@pytest.mark.slow
def test_a_damaged_cached_graph_is_exported_again(cache, caplog):
    model = create_model("clamp_tiny_rn50")
    first = OnnxForward(model)
    first.path.write_bytes(b"not a graph")
    second = OnnxForward(model)
    assert "exporting it again" in caplog.text and second.path == first.path
    x = torch.randn(2, 3, *model.config.input_size)
    with torch.inference_mode():
        ref = model(x)["heatmaps"]
    torch.testing.assert_close(second(x)["heatmaps"], ref, rtol=1e-4,
                               atol=1e-5 * ref.abs().max().item())


def test_a_backend_that_cannot_run_is_one_line_naming_the_fix(monkeypatch):
    with pytest.raises(InputError, match="unknown backend 'tensorrt'"):
        check_backend("tensorrt", torch.device("cpu"))
    with pytest.raises(InputError, match="--device cpu"):
        check_backend("onnxruntime", torch.device("cuda"))
    check_backend("torch", torch.device("cuda"))  # the default runs anywhere
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(InputError, match=r"pip install 'clamp-track\[onnx\]'") as err:
        check_backend("onnxruntime", torch.device("cpu"))
    assert "\n" not in str(err.value)


def test_run_refuses_a_missing_backend_before_loading_anything(shared_data, tmp_path,
                                                                 monkeypatch, capsys):
    from clamp_track.cli import main

    video = tmp_path / "cows.mp4"
    shutil.copy(shared_data / "badja-davis" / "derived" / "cows_480p_24fps.mp4", video)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code = main(["run", str(video), "--pose-model", "clamp_tiny_rn50", "--pose-weights", "none",
                 "--detector", "motion", "--backend", "onnxruntime", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "clamp-track[onnx]" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.sqlite"))


@needs_onnx
@pytest.mark.slow
@pytest.mark.parametrize("variant", ["clamp_tiny_vitb16", "simplebaseline_tiny_rn50"])
def test_every_architecture_exports_and_matches_torch(variant, cache):
    model = create_model(variant)
    forward = OnnxForward(model)
    x = torch.randn(3, 3, *model.config.input_size)
    with torch.inference_mode():
        ref = model(x)["heatmaps"]
    assert ref.abs().max() > 0
    torch.testing.assert_close(forward(x)["heatmaps"], ref, rtol=1e-4,
                               atol=1e-5 * ref.abs().max().item())
