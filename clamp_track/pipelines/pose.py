"""The pose stage: crops of tracked animals -> batched model forwards -> frame keypoints.

Every box is cut out of its frame on the host as a uint8 crop (affine warp to the model's input
size); everything after that runs on the model's device: the crops are normalised there (the
mean and std travel with the weights), the horizontally flipped copies are appended when flip
test is on, so that one forward covers both, and the heatmaps are decoded back to frame pixels
there too. Only uint8 crops go to the device (a quarter of the bytes of a float32 batch; from
pinned memory, without blocking, on CUDA) and only keypoints come back. The model's text side
is cached, so each batch costs one image forward. CUDA runs in fp16 autocast; the CPU in fp32,
where normalising goes through a 256-entry table per channel (``cv2.LUT``), bit for bit the
arithmetic ``(x / 255 - mean) / std`` at a fraction of its cost.

:class:`PoseEstimator` predicts a group of frames at once; :class:`PoseWorker` is the same
stage in a thread of its own, fed frame groups (``clamp-track run``'s chunks) while the caller
decodes, detects and tracks the next ones, with batches formed across groups.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from clamp_track.data.transforms import (
    affine_matrix,
    box_to_center_scale,
    warp_crop,
    xyxy_to_xywh,
)
from clamp_track.models import decode_heatmaps
from clamp_track.types import Detections, PosePredictions


@dataclass(frozen=True)
class PoseConfig:
    """Settings of the pose stage.

    Attributes:
        batch_size: Crops per forward pass (flip test doubles the images in it). In
            ``clamp-track run`` a batch takes crops from consecutive chunks, so it fills up
            whatever the chunk size and the number of animals.
        flip_test: Average with the flipped crop's heatmaps, as the paper's numbers do. On by
            default, a measured choice: it costs 2.2x the pose forward per crop on the CPU at
            batch 8 (1.4x at batch 1; ``benchmarks/cpu_backends.py``), but it is how CLAMP's
            published accuracy was measured and keeps results those of earlier runs; on a
            laptop CPU ``--no-flip-test`` about halves the pose time.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        fp16: Use fp16 autocast on CUDA.
        backend: Where the image forward runs: ``"torch"`` (the model itself) or, on the CPU,
            ``"onnxruntime"`` (1.3-1.4x faster there; see :mod:`clamp_track.pipelines.backends`).
            The results are the same (heatmaps within 1e-13), so a run may be resumed with
            the other backend.
    """

    batch_size: int = 16
    flip_test: bool = True
    device: str = "auto"
    fp16: bool = True
    backend: str = "torch"


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Crops:
    """uint8 crops of some boxes and where they came from.

    Attributes:
        images: (N, H, W, 3) uint8 RGB crops (on the model's device once
            :meth:`PoseEstimator.upload` has run).
        center: (N, 2) crop centres (x, y) in frame pixels.
        scale: (N, 2) crop scales in units of 200 px.
    """

    images: np.ndarray | torch.Tensor
    center: np.ndarray
    scale: np.ndarray

    def __len__(self) -> int:
        return len(self.center)


class PoseEstimator:
    """Batched top-down pose estimation for tracked boxes.

    Args:
        model: A pose model from :func:`clamp_track.models.create_model`.
        cfg: Batch size, flip test, device.
    """

    def __init__(self, model, cfg: PoseConfig = PoseConfig()):
        from clamp_track.pipelines.backends import OnnxForward, check_backend

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        check_backend(cfg.backend, self.device)
        self.model = model.to(self.device).eval()
        self._onnx = OnnxForward(self.model) if cfg.backend == "onnxruntime" else None
        # convolution backbones run ~20% faster in channels-last layout (measured on the CPU)
        self.channels_last = model.config.backbone.kind == "resnet"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        height, width = model.config.input_size
        self.input_wh = (width, height)
        self.flip_pairs = model.keypoints.flip_pairs
        mean = torch.tensor(model.config.mean, dtype=torch.float32)
        std = torch.tensor(model.config.std, dtype=torch.float32)
        self._mean, self._std = mean[None, :, None, None], std[None, :, None, None]
        # the normalised value of every byte, per channel: exactly normalize()'s arithmetic
        table = (torch.arange(256, dtype=torch.float32).div_(255)[:, None] - mean) / std
        self._table = np.ascontiguousarray(table.numpy().reshape(1, 256, 3))

    @property
    def num_keypoints(self) -> int:
        """Keypoints per animal."""
        return self.model.num_keypoints

    def predict(self, images: list[np.ndarray], detections: list[Detections],
                frame_indices: list[int]) -> list[PosePredictions]:
        """Keypoints for every box of every frame.

        Args:
            images: Frames, (H, W, 3) uint8 RGB.
            detections: Tracked boxes per frame (``track_ids`` set).
            frame_indices: The frames' indices.

        Returns:
            One :class:`PosePredictions` per frame (possibly empty).
        """
        crops = self.upload(self.crop(images, detections))
        keypoints = np.zeros((len(crops), self.num_keypoints, 2), np.float32)
        scores = np.zeros((len(crops), self.num_keypoints), np.float32)
        step = self.cfg.batch_size
        for start in range(0, len(crops), step):
            part = slice(start, start + step)
            keypoints[part], scores[part] = self.infer(
                Crops(crops.images[part], crops.center[part], crops.scale[part]))
        return split_by_frame(detections, frame_indices, keypoints, scores)

    def crop(self, images: list[np.ndarray], detections: list[Detections]) -> Crops:
        """Cut every box out of its frame: uint8 crops of the model's input size (host work).

        On CUDA the crops land in page-locked memory, so that :meth:`upload` can copy them
        without blocking.
        """
        n = sum(len(d) for d in detections)
        width, height = self.input_wh
        if self.device.type == "cuda" and n:
            out = torch.empty((n, height, width, 3), dtype=torch.uint8, pin_memory=True).numpy()
        else:
            out = np.empty((n, height, width, 3), np.uint8)
        if not n:
            return Crops(out, np.zeros((0, 2)), np.zeros((0, 2)))
        boxes = np.concatenate([d.boxes for d in detections])
        aspect = width / height
        center, scale = box_to_center_scale(xyxy_to_xywh(boxes), aspect)
        owners = [i for i, d in enumerate(detections) for _ in range(len(d))]
        for j, (owner, matrix) in enumerate(zip(owners, affine_matrix(center, scale,
                                                                      self.input_wh))):
            warp_crop(images[owner], matrix, self.input_wh, out=out[j])
        return Crops(out, center, scale)

    def upload(self, crops: Crops) -> Crops:
        """The crops as a uint8 tensor on the model's device (non-blocking from pinned memory)."""
        images = torch.from_numpy(crops.images) if isinstance(crops.images, np.ndarray) \
            else crops.images
        if images.device != self.device:
            images = images.to(self.device, non_blocking=images.is_pinned())
        return Crops(images, crops.center, crops.scale)

    def infer(self, crops: Crops) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (N, K, 2) in frame pixels and confidences (N, K) of uploaded crops."""
        n = len(crops)
        batch = self.input_batch(crops.images)
        use_fp16 = self.cfg.fp16 and self.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(self.device.type, torch.float16,
                                                    enabled=use_fp16):
            forward = self._onnx or self.model
            heatmaps = forward(batch)["heatmaps"].float()  # (N or 2N, K, h, w)
        flipped = heatmaps[n:] if self.cfg.flip_test else None
        kp, conf = decode_heatmaps(
            heatmaps[:n], torch.from_numpy(crops.center), torch.from_numpy(crops.scale),
            flip_heatmaps=flipped, flip_pairs=self.flip_pairs,
        )
        return kp.cpu().numpy(), conf.cpu().numpy()

    def input_batch(self, images: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 crops -> the model's normalised (N or 2N, 3, H, W) float32 input.

        With flip test the horizontally flipped crops follow the crops. Runs where ``images``
        are; on the CPU through the per-channel table (same values, bit for bit).
        """
        if images.device.type == "cpu":
            return self._input_batch_cpu(images.numpy())
        return self._input_batch_torch(images)

    def _input_batch_torch(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div_(255)
        x = x.sub_(self._mean.to(x.device)).div_(self._std.to(x.device))
        if self.cfg.flip_test:
            x = torch.cat([x, x.flip(3)])  # (2N, 3, H, W): one forward for both
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=memory)

    def _input_batch_cpu(self, images: np.ndarray) -> torch.Tensor:
        import cv2

        n, height, width, _ = images.shape
        out = np.empty((2 * n if self.cfg.flip_test else n, height, width, 3), np.float32)
        if n:
            cv2.LUT(np.ascontiguousarray(images).reshape(n * height, width, 3), self._table,
                    dst=out[:n].reshape(n * height, width, 3))
        if self.cfg.flip_test:
            for i in range(n):
                cv2.flip(out[i], 1, dst=out[n + i])
        x = torch.from_numpy(out).permute(0, 3, 1, 2)  # channels-last memory, NCHW shape
        return x if self.channels_last else x.contiguous()


def split_by_frame(detections: list[Detections], frame_indices: list[int],
                   keypoints: np.ndarray, scores: np.ndarray) -> list[PosePredictions]:
    """Per-frame :class:`PosePredictions` from the keypoints of all boxes, in order."""
    out, start = [], 0
    for index, d in zip(frame_indices, detections):
        part = slice(start, start + len(d))
        out.append(PosePredictions(index, d.track_ids, d.boxes, keypoints[part], scores[part],
                                   d.scores))
        start += len(d)
    return out


class _Group:
    """One submitted group of frames, its uploaded crops and its results so far."""

    def __init__(self, tag, crops: Crops, detections, frame_indices, k: int):
        self.tag, self.crops = tag, crops
        self.detections, self.frame_indices = detections, frame_indices
        self.keypoints = np.zeros((len(crops), k, 2), np.float32)
        self.scores = np.zeros((len(crops), k), np.float32)
        self.host = None  # the host crops while an upload of them may be in flight
        self.taken = 0  # crops handed to a batch
        self.done = 0  # crops with results

    def result(self) -> tuple[object, list[PosePredictions]]:
        return self.tag, split_by_frame(self.detections, self.frame_indices, self.keypoints,
                                        self.scores)


_FLUSH, _STOP = object(), object()


class PoseWorker:
    """The pose stage in a thread of its own, fed groups of frames; results come back in order.

    :meth:`submit` cuts the crops in the calling thread (uint8, host work) and queues them; the
    worker uploads them to the device and runs batches of ``batch_size`` crops taken across
    consecutive groups, so a batch fills up whatever the group size and the number of animals.
    Meanwhile the caller decodes, detects and tracks the next frames: on a GPU the device
    works while the host does, on the CPU the two share its cores. A group's predictions come
    back (:meth:`ready`, :meth:`wait`) once all its crops are done, in submission order.

    The worker waits for a full batch unless the caller waits for a result (then it runs what it
    has), so batches are as large as they can be. Per crop, the results do not depend on which
    crops share its batch (checked bit for bit on the CPU). Use as a context manager: leaving it
    stops the thread, and an error in the worker is raised again in the caller.

    Args:
        estimator: The pose estimator (model, device, batch size, flip test).
    """

    def __init__(self, estimator: PoseEstimator):
        self.estimator = estimator
        self.pending = 0  # groups submitted whose results the caller has not taken
        self._jobs: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="clamp-track pose", daemon=True)
        self._thread.start()

    def __enter__(self) -> PoseWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, tag, images: list[np.ndarray], detections: list[Detections],
               frame_indices: list[int]) -> None:
        """Queue a group of frames (``tag`` comes back with its predictions).

        The frames are only read here (their crops are cut now), so the caller may drop them.
        """
        crops = self.estimator.crop(images, detections)
        self._jobs.put(_Group(tag, crops, detections, frame_indices,
                              self.estimator.num_keypoints))
        self.pending += 1

    def ready(self) -> list[tuple[object, list[PosePredictions]]]:
        """The ``(tag, predictions)`` of the groups finished so far, without waiting."""
        out = []
        while True:
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                return out
            out.append(self._unpack(item))

    def wait(self) -> tuple[object, list[PosePredictions]]:
        """The ``(tag, predictions)`` of the oldest group not taken yet, waiting for it."""
        if not self.pending:
            raise RuntimeError("no group of frames is pending")
        try:
            return self._unpack(self._results.get_nowait())
        except queue.Empty:
            self._jobs.put(_FLUSH)  # run the crops it has, even if they do not fill a batch
        while True:
            try:
                return self._unpack(self._results.get(timeout=0.5))
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError("the pose worker ended unexpectedly") from None

    def drain(self) -> list[tuple[object, list[PosePredictions]]]:
        """Wait for every pending group; their ``(tag, predictions)`` in order."""
        return [self.wait() for _ in range(self.pending)]

    def close(self) -> None:
        """Stop the worker (pending groups are dropped)."""
        self._jobs.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(30)

    def _unpack(self, item):
        self.pending -= 1
        if isinstance(item, BaseException):
            self._jobs.put(_STOP)
            raise item
        return item

    def _run(self) -> None:
        groups: deque[_Group] = deque()  # submitted, not finished; oldest first
        waiting = 0  # crops taken by no batch yet
        try:
            while True:
                job = self._jobs.get()
                if job is _STOP:
                    return
                flush = job is _FLUSH
                if not flush:
                    # the host crops stay referenced until the group is done: a non-blocking
                    # copy from pinned memory may still be reading them
                    job.host, job.crops = job.crops, self.estimator.upload(job.crops)
                    groups.append(job)
                    waiting += len(job.crops)
                while waiting >= self.estimator.cfg.batch_size or (flush and waiting):
                    waiting -= self._run_batch(groups)
                while groups and groups[0].done == len(groups[0].crops):
                    self._results.put(groups.popleft().result())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self._results.put(exc)

    def _run_batch(self, groups) -> int:
        """One forward over the next ``batch_size`` waiting crops; returns how many it took."""
        parts, size = [], 0
        for group in groups:
            take = min(len(group.crops) - group.taken, self.estimator.cfg.batch_size - size)
            if take > 0:
                parts.append((group, group.taken, group.taken + take))
                group.taken += take
                size += take
        images = [g.crops.images[a:b] for g, a, b in parts]
        crops = Crops(images[0] if len(images) == 1 else torch.cat(images),
                      np.concatenate([g.crops.center[a:b] for g, a, b in parts]),
                      np.concatenate([g.crops.scale[a:b] for g, a, b in parts]))
        keypoints, scores = self.estimator.infer(crops)
        start = 0
        for group, a, b in parts:
            group.keypoints[a:b] = keypoints[start:start + b - a]
            group.scores[a:b] = scores[start:start + b - a]
            group.done += b - a
            start += b - a
        return size
