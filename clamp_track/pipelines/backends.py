"""Where the pose model's image forward runs on the CPU: eager PyTorch, or ONNX Runtime.

``--backend torch`` (the default) calls the PyTorch model. ``--backend onnxruntime`` runs the
same image forward through ONNX Runtime (an optional extra: ``pip install
'clamp-track[onnx]'``), CPU only. Measured side by side on this project's 2-core CPU
(``benchmarks/cpu_backends.py``, CLAMP-RN50 on real BADJA crops, 2 threads, median of 5):
1.34x eager at 16 images a forward and 1.44x at 32 (``clamp-track run``'s default, 16 crops
and their flipped copies), 1.27x at 8; heatmaps within 1.3e-14 of eager's and every argmax
the same.

The graph is exported once per model and cached: the model's text side (the keypoint
prompts, constant at inference) is computed first and pinned into the graph as a constant,
so only the image path is exported (the text encoder would otherwise be traced into it); the
exporter is PyTorch's ``dynamo`` one (it needs ``onnx`` and ``onnxscript``). The cache key
hashes every weight, the prompts, the input size and the versions of torch and the exporter,
so a fine-tuned model or another keypoint set gets its own graph. The export takes about 20 s
for CLAMP-RN50 and the file about 200 MB, under ``~/.cache/clamp-track/onnx`` (or
``$CLAMP_TRACK_CACHE/onnx``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch

from clamp_track.errors import InputError

log = logging.getLogger(__name__)

#: Values of ``pose.backend`` (``--backend``).
BACKENDS = ("torch", "onnxruntime")
#: Largest batch the exported graph takes (images a forward; flip test doubles the crops).
MAX_BATCH = 1024
_INSTALL = "install it with: pip install 'clamp-track[onnx]'"


def check_backend(name: str, device: torch.device) -> None:
    """Refuse, in one line, a backend that is unknown, not installed or not for ``device``."""
    if name not in BACKENDS:
        raise InputError(f"pose.backend: unknown backend {name!r}; choose one of "
                         f"{', '.join(BACKENDS)}")
    if name == "torch":
        return
    if device.type != "cpu":
        raise InputError(f"--backend {name} runs on the CPU, and the device is {device}; use "
                         "--device cpu, or the default --backend torch on the GPU")
    for module in ("onnxruntime", "onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            raise InputError(f"--backend onnxruntime needs the {module} package; {_INSTALL}"
                             ) from None


def cache_dir() -> Path:
    """Where exported graphs are kept: ``onnx`` in clamp-track's cache (beside the weights)."""
    from clamp_track import weights

    return weights.cache_dir() / "onnx"


class _ImageForward(torch.nn.Module):
    """The model's image forward with its prompts as a constant, returning the heatmaps."""

    def __init__(self, model, prompts: torch.Tensor | None):
        super().__init__()
        self.model = model
        self.register_buffer("prompts", prompts)  # a weight of the graph

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.prompts is None:
            return self.model(images)["heatmaps"]
        pinned, self.model.text_embeddings = self.prompts, lambda: pinned
        try:
            return self.model(images)["heatmaps"]
        finally:
            del self.model.text_embeddings  # the class's method again


def _prompts(model) -> torch.Tensor | None:
    if not hasattr(model, "text_embeddings"):
        return None  # SimpleBaseline: no text side
    with torch.no_grad():  # not inference mode: the exporter cannot trace inference tensors
        return model.text_embeddings().detach().clone()


def graph_key(model, prompts: torch.Tensor | None) -> str:
    """A hash of everything the exported graph depends on."""
    import onnxscript

    digest = hashlib.sha256()
    digest.update(f"{torch.__version__} {onnxscript.__version__} {MAX_BATCH} "
                  f"{tuple(model.config.input_size)}".encode())
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name} {tensor.dtype} {tuple(state[name].shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    if prompts is not None:
        digest.update(prompts.numpy().tobytes())
    return digest.hexdigest()[:20]


def export_graph(model, path: Path) -> Path:
    """Export ``model``'s image forward (prompts pinned) to the ONNX file ``path``."""
    from clamp_track.config import temp_beside

    prompts = _prompts(model)
    module = _ImageForward(model, prompts).eval()
    height, width = model.config.input_size
    example = torch.zeros(2, 3, height, width)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path, ".onnx")
    try:
        torch.onnx.export(module, (example,), str(tmp), dynamo=True, input_names=["images"],
                          output_names=["heatmaps"], dynamic_shapes=({0: batch},),
                          external_data=False, verbose=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class OnnxForward:
    """A pose model's image forward through ONNX Runtime on the CPU.

    Called like the model on a normalised (B, 3, H, W) float32 batch; returns
    ``{"heatmaps": (B, K, h, w)}``. The graph comes from the cache, or is exported into it.

    Args:
        model: The PyTorch pose model (its weights and prompts go into the graph).
        threads: ONNX Runtime's threads (default: torch's).
        folder: The cache folder (default :func:`cache_dir`).
    """

    def __init__(self, model, threads: int | None = None, folder: Path | None = None):
        check_backend("onnxruntime", torch.device("cpu"))
        import onnxruntime as ort

        model = model.eval()
        key = graph_key(model, _prompts(model))
        self.path = (folder or cache_dir()) / f"{type(model).__name__.lower()}-{key}.onnx"
        if not self.path.is_file():
            log.info("exporting the pose model to ONNX (once per model): %s", self.path)
            export_graph(model, self.path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - a damaged cache file: export it again
            log.warning("%s: cannot be loaded (%s); exporting it again", self.path,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            export_graph(model, self.path)
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) normalised crops -> ``{"heatmaps": (B, K, h, w)}``."""
        batch = np.ascontiguousarray(images.detach().cpu().numpy(), np.float32)
        heatmaps = self.session.run(None, {"images": batch})[0]
        return {"heatmaps": torch.from_numpy(heatmaps)}
