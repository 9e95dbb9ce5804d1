"""CLAMP-RN50's image forward on the CPU: eager fp32 vs ONNX Runtime, OpenVINO and bf16.

Side by side in one run, interleaved (each round times every backend once, so machine load
affects all alike), median of ``--repeats`` rounds, at batch 1 / 8 / 16, on real crops: the
DAVIS ``cows`` and ``camel`` frames of the shared BADJA set, cut around their animals as the
pipeline cuts them. For each backend: crops/s, speed-up over eager, the largest heatmap
difference and the heatmap argmax agreement with eager (fraction of (crop, keypoint) pairs
whose peak is in the same cell). Also the cost of flip test (eager, 2B images vs B).

``--backend`` is offered for a backend with >= 1.3x eager and argmax agreement >= 0.99 at the
batch ``clamp-track run`` works with (16 crops and their flipped copies: 32 images a forward):
ONNX Runtime met it (``--backend onnxruntime``, :mod:`clamp_track.pipelines.backends`).

The exports pin the model's cached text side first (the prompts are constants of the graph),
so only the image path is exported. The weights are random (no pretrained weights can be
fetched here); a random model's heatmaps are nearly flat, so argmax agreement is a harsh test.

    python benchmarks/cpu_backends.py                          # all backends that import
    python benchmarks/cpu_backends.py --batches 8 --repeats 5 --skip openvino
    python benchmarks/cpu_backends.py --batches 1 8 --threads 1 --clock cpu

On a machine shared with other work the wall clock mostly measures how each runtime's threads
cope with too few free cores (eager PyTorch's worst): ``--threads 1 --clock cpu`` gives every
backend one thread and times it by the process's CPU time (``time.process_time``), which
waiting for a core does not add to.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
#: Images a forward in ``clamp-track run`` by default: 16 crops and their flipped copies.
RUN_BATCH = 32
DAVIS = REPO.parent / "shared" / "data" / "badja-davis" / "DAVIS"


def real_crops(pose, n: int) -> np.ndarray:
    """(n, H, W, 3) uint8 crops of the cows and camel around their DAVIS masks."""
    import cv2

    from clamp_track.types import Detections

    crops = []
    for seq in ("cows", "camel"):
        masks = sorted((DAVIS / "Annotations" / "480p" / seq).glob("*.png"))
        for path in masks[:: max(1, 2 * len(masks) // n)][: (n + 1) // 2]:
            ys, xs = np.nonzero(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127)
            image = cv2.cvtColor(cv2.imread(str(DAVIS / "JPEGImages" / "480p" / seq /
                                                f"{path.stem}.jpg")), cv2.COLOR_BGR2RGB)
            box = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
            crops.append(pose.crop([image], [Detections(box, [1.0])]).images[0])
    return np.stack(crops[:n])


class ImageOnly(torch.nn.Module):
    """The model's forward with its text side pinned, returning only the heatmaps."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        if hasattr(model, "text_embeddings"):
            with torch.no_grad():  # not inference mode: export cannot trace inference tensors
                self.register_buffer("text", model.text_embeddings().clone())
            model.text_embeddings = lambda: self.text  # a constant: no text encoder in the graph

    def forward(self, images):
        return self.model(images)["heatmaps"]


def export_onnx(module, example, path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(module, (example,), str(path), dynamo=True, input_names=["images"],
                      output_names=["heatmaps"], dynamic_shapes=({0: batch},))
    return path


def make_backends(model, example, skip, tmp: Path) -> dict:
    """name -> function (float32 NCHW numpy batch) -> heatmaps numpy."""
    threads = torch.get_num_threads()
    module = ImageOnly(model).eval()

    def eager(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
                          ).numpy()

    backends = {"eager fp32": eager}
    onnx_path = None
    if not {"onnxruntime", "openvino"} <= set(skip):
        start = time.perf_counter()
        onnx_path = export_onnx(module, torch.from_numpy(example), tmp / "clamp.onnx")
        size = sum(f.stat().st_size for f in tmp.iterdir())  # the graph and its weights file
        print(f"ONNX export (dynamo) {time.perf_counter() - start:.0f} s, "
              f"{size / 2**20:.0f} MB", flush=True)
    if "onnxruntime" not in skip:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        backends[f"onnxruntime {ort.__version__} fp32"] = \
            lambda x: session.run(None, {"images": x})[0]
    if "openvino" not in skip:
        import openvino as ov

        compiled = ov.Core().compile_model(ov.convert_model(str(onnx_path)), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
        backends[f"openvino {ov.__version__} fp32"] = lambda x: compiled(x)[0]
    if "bf16" not in skip and not _has_bf16():
        print("bf16: this CPU has neither avx512_bf16 nor amx_bf16 (not measured)")
    elif "bf16" not in skip:
        def bf16(x):
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
                return module(torch.from_numpy(x).contiguous(
                    memory_format=torch.channels_last)).float().numpy()

        backends["eager bf16 autocast"] = bf16
    return backends


def _has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def agreement(ref: np.ndarray, out: np.ndarray) -> float:
    """Fraction of (crop, keypoint) heatmaps whose argmax cell is the same."""
    b, k = ref.shape[:2]
    return float((ref.reshape(b, k, -1).argmax(-1) == out.reshape(b, k, -1).argmax(-1)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="clamp_rn50")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 16, 32],
                        help="images a forward; clamp-track run's is 32 (16 crops, flip test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["onnxruntime", "openvino", "bf16"])
    parser.add_argument("--threads", type=int, help="threads for every backend (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="time by the wall clock or by the process's CPU time")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    from clamp_track.models import create_model
    from clamp_track.pipelines.pose import PoseConfig, PoseEstimator

    torch.manual_seed(0)
    pose = PoseEstimator(create_model(args.model), PoseConfig(device="cpu", flip_test=False))
    crops = real_crops(pose, max(args.batches))
    inputs = {b: np.ascontiguousarray(pose.input_batch(torch.from_numpy(crops[:b])).numpy())
              for b in args.batches}  # NCHW float32, normalised as the pipeline does
    flipped = {b: np.ascontiguousarray(np.concatenate([x, x[..., ::-1]]))
               for b, x in inputs.items()}
    print(f"model {args.model} (random weights), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {len(crops)} real crops (DAVIS cows, camel), "
          f"{'CPU time' if args.clock == 'cpu' else 'wall clock'}, "
          f"median of {args.repeats} interleaved rounds")
    with tempfile.TemporaryDirectory() as tmp:
        backends = make_backends(pose.model, inputs[max(args.batches)], args.skip, Path(tmp))
        eager = backends["eager fp32"]
        reference = {b: eager(x) for b, x in inputs.items()}  # also the warm-up
        for run in backends.values():
            run(inputs[args.batches[0]])
        times = {(name, b): [] for name in backends for b in args.batches}
        flip_times = {b: [] for b in args.batches}
        diffs = {}
        for _ in range(args.repeats):
            for b, x in inputs.items():
                for name, run in backends.items():
                    start = clock()
                    out = run(x)
                    times[name, b].append(clock() - start)
                    diffs[name, b] = (float(np.abs(out - reference[b]).max()),
                                      agreement(reference[b], out))
                start = clock()
                eager(flipped[b])
                flip_times[b].append(clock() - start)
    print("| backend | batch | crops/s | vs eager | max heatmap diff | argmax agreement |")
    print("|---|---|---|---|---|---|")
    best = {}
    for name in backends:
        for b in args.batches:
            t = statistics.median(times[name, b])
            base = statistics.median(times["eager fp32", b])
            diff, agree = diffs[name, b]
            best.setdefault(name, []).append((base / t, agree))
            print(f"| {name} | {b} | {b / t:.2f} | {base / t:.2f}x | {diff:.1e} | {agree:.3f} |")
    for b in args.batches:
        ratio = statistics.median(flip_times[b]) / statistics.median(times["eager fp32", b])
        print(f"flip test, batch {b}: {ratio:.2f}x the time of the forward without it")
    # the bar is judged where clamp-track run works: its default batch of 16 crops and their
    # flipped copies is 32 images a forward (or the largest batch measured)
    run_batch = RUN_BATCH if RUN_BATCH in args.batches else max(args.batches)
    for name, rows in best.items():
        if name == "eager fp32":
            continue
        worst_speed = min(r[0] for r in rows)
        speed, agree = rows[args.batches.index(run_batch)]
        verdict = "meets" if speed >= 1.3 and agree >= 0.99 else "misses"
        print(f"{name}: {speed:.2f}x eager at batch {run_batch} ({worst_speed:.2f}x at worst), "
              f"argmax agreement {agree:.3f}: {verdict} the bar for --backend (>= 1.3x, >= 0.99)")


if __name__ == "__main__":
    main()
