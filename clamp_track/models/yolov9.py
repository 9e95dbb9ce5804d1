"""YOLOv9 (GELAN) detectors in plain PyTorch, in the layout of MIT YOLO (MultimediaTechLab).

MegaDetector v6's MIT weights (``MDV6-mit-yolov9-c`` / ``-e``) load as they are.

Facts this module is built on (read, not copied, from ``MultimediaTechLab/YOLO`` @ ``c4cb5f6``,
MIT, ``yolo/config/model/v9-{s,c}.yaml`` and ``yolo/model/module.py``, and from PytorchWildlife
1.3.0, MIT, ``models/detection/yolo_mit``):

* The network is a flat list of layers (``model.model.<i>.*`` in a checkpoint): backbone, neck,
  head, then the detection layer; the training-only auxiliary branch comes after it and is not
  built here (its weights are skipped on load).
* ``MDV6-mit-yolov9-c`` is the ``v9-s`` layout and ``MDV6-mit-yolov9-e`` the ``v9-c`` layout
  (PytorchWildlife pairs them with ``config_v9s.yaml`` / ``config_v9c.yaml``); 3 classes.
* Convolutions are ``Conv2d(bias=False) + BatchNorm2d(eps=1e-3) + SiLU`` with "same" padding.
* The head predicts per cell 4 x 16 distance bins (a softmax expectation gives the left, top,
  right, bottom distances in strides) and one logit per class; anchor points sit at
  ``i * stride + stride // 2``.

The checkpoint is a PyTorch Lightning ``.ckpt``: ``{"state_dict": {"model.model.0.conv.weight":
..., "ema.model.model...": ...}, "epoch", ...}``; PytorchWildlife uses the non-EMA tensors, and so
does :func:`load_yolov9_state`.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from clamp_track.errors import CheckpointError

#: Bins per box side of the distribution head (``reg_max``).
REG_MAX = 16
#: Output strides of the three detection levels.
STRIDES = (8, 16, 32)


class Conv(nn.Module):
    """Conv2d without bias, BatchNorm, SiLU (or no activation)."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return self.act(self.bn(self.conv(x)))


class RepConv(nn.Module):
    """3x3 and 1x1 convolutions (no activation) summed, then SiLU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = Conv(c_in, c_out, 3, act=False)
        self.conv2 = Conv(c_in, c_out, 1, act=False)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return self.act(self.conv1(x) + self.conv2(x))


class Bottleneck(nn.Module):
    """RepConv then 3x3 Conv, with a residual connection (channels in = out)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = RepConv(channels, channels)
        self.conv2 = Conv(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return x + self.conv2(self.conv1(x))


class RepNCSP(nn.Module):
    """CSP block: one half through ``repeat`` bottlenecks, the other straight, then fused."""

    def __init__(self, c_in: int, c_out: int, repeat: int = 1):
        super().__init__()
        neck = c_out // 2
        self.conv1 = Conv(c_in, neck)
        self.conv2 = Conv(c_in, neck)
        self.conv3 = Conv(2 * neck, c_out)
        self.bottleneck = nn.Sequential(*(Bottleneck(neck) for _ in range(repeat)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return self.conv3(torch.cat((self.bottleneck(self.conv1(x)), self.conv2(x)), 1))


class ELAN(nn.Module):
    """ELAN block: split, two chained convolutions on one half, all four parts fused.

    With ``repeat`` set, each chained step is a :class:`RepNCSP` followed by a 3x3 Conv
    (RepNCSPELAN, GELAN's main block); without it, a plain 3x3 Conv (ELAN).
    """

    def __init__(self, c_in: int, c_out: int, part: int, repeat: int | None = None):
        super().__init__()
        half, proc = part // 2, part // 2
        self.conv1 = Conv(c_in, part)
        if repeat is None:
            self.conv2 = Conv(half, proc, 3)
            self.conv3 = Conv(proc, proc, 3)
        else:
            self.conv2 = nn.Sequential(RepNCSP(half, proc, repeat), Conv(proc, proc, 3))
            self.conv3 = nn.Sequential(RepNCSP(proc, proc, repeat), Conv(proc, proc, 3))
        self.conv4 = Conv(part + 2 * proc, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        x1, x2 = self.conv1(x).chunk(2, 1)
        x3 = self.conv2(x2)
        x4 = self.conv3(x3)
        return self.conv4(torch.cat((x1, x2, x3, x4), 1))


class AConv(nn.Module):
    """Downsampling: 2x2 average pool (stride 1, no padding), then a stride-2 3x3 Conv."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.avg_pool = nn.AvgPool2d(2, 1)
        self.conv = Conv(c_in, c_out, 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return self.conv(self.avg_pool(x))


class ADown(nn.Module):
    """Downsampling: average pool, then half by a stride-2 Conv, half by max pool + 1x1 Conv."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.avg_pool = nn.AvgPool2d(2, 1)
        self.conv1 = Conv(c_in // 2, c_out // 2, 3, 2)
        self.max_pool = nn.MaxPool2d(3, 2, 1)
        self.conv2 = Conv(c_in // 2, c_out // 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        x1, x2 = self.avg_pool(x).chunk(2, 1)
        return torch.cat((self.conv1(x1), self.conv2(self.max_pool(x2))), 1)


class SPPELAN(nn.Module):
    """Spatial pyramid pooling: a 1x1 Conv, three chained 5x5 max pools, all fused."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        neck = c_out // 2
        self.conv1 = Conv(c_in, neck)
        self.pools = nn.ModuleList(nn.MaxPool2d(5, 1, 2) for _ in range(3))
        self.conv5 = Conv(4 * neck, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        features = [self.conv1(x)]
        for pool in self.pools:
            features.append(pool(features[-1]))
        return self.conv5(torch.cat(features, 1))


class UpSample(nn.Module):
    """Nearest-neighbour 2x upsampling (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")


class Concat(nn.Module):
    """Concatenation of several earlier layers' outputs along channels (no parameters)."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """Apply the block."""
        return torch.cat(xs, 1)


class Anchor2Vec(nn.Module):
    """Expected distance from a softmax over ``reg_max`` bins (a fixed 1x1x1 Conv3d)."""

    def __init__(self, reg_max: int = REG_MAX):
        super().__init__()
        self.anc2vec = nn.Conv3d(reg_max, 1, 1, bias=False)
        self.anc2vec.weight = nn.Parameter(
            torch.arange(reg_max, dtype=torch.float32).view(1, reg_max, 1, 1, 1),
            requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        b, _, h, w = x.shape  # (B, 4 * R, H, W)
        bins = x.reshape(b, 4, -1, h, w).permute(0, 2, 1, 3, 4)  # (B, R, 4, H, W)
        return self.anc2vec(bins.softmax(1))[:, 0]  # (B, 4, H, W) distances in strides


class DetectionHead(nn.Module):
    """One level of the decoupled head: box-distribution and class branches."""

    def __init__(self, first_channels: int, c_in: int, num_classes: int):
        super().__init__()
        box_out = 4 * REG_MAX
        box_neck = max(-(-(first_channels // 4) // 4) * 4, box_out, REG_MAX)
        class_neck = max(first_channels, min(num_classes * 2, 128))
        self.anchor_conv = nn.Sequential(Conv(c_in, box_neck, 3),
                                         Conv(box_neck, box_neck, 3, groups=4),
                                         nn.Conv2d(box_neck, box_out, 1, groups=4))
        self.class_conv = nn.Sequential(Conv(c_in, class_neck, 3),
                                        Conv(class_neck, class_neck, 3),
                                        nn.Conv2d(class_neck, num_classes, 1))
        self.anc2vec = Anchor2Vec()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B, C, H, W) and side distances in strides (B, 4, H, W)."""
        return self.class_conv(x), self.anc2vec(self.anchor_conv(x))


class MultiheadDetection(nn.Module):
    """One :class:`DetectionHead` per level (P3, P4, P5)."""

    def __init__(self, channels: list[int], num_classes: int):
        super().__init__()
        self.heads = nn.ModuleList(DetectionHead(channels[0], c, num_classes) for c in channels)

    def forward(self, xs: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Apply the block."""
        return [head(x) for x, head in zip(xs, self.heads)]


# A layer: (kind, source, args, tag). Sources are 1-based layer numbers (0 = the image, -1 =
# the previous layer) or tags; derived channel counts are computed when building.
_LayerSpec = tuple[str, object, dict, str | None]


def _gelan(stem: tuple[int, int], first: tuple, down: str, stages: list[tuple[int, int, int]],
           neck: dict, repeat: int) -> list[_LayerSpec]:
    """The main (non-auxiliary) layer list of a v9 model."""
    out_p3, out_p4, out_p5 = neck["P3"], neck["P4"], neck["P5"]
    layers: list[_LayerSpec] = [
        ("Conv", 0, {"c_out": stem[0], "k": 3, "stride": 2}, None),
        ("Conv", -1, {"c_out": stem[1], "k": 3, "stride": 2}, None),
        first,
    ]
    for (c_down, c_out, part), tag in zip(stages, ("B3", "B4", "B5")):
        layers += [(down, -1, {"c_out": c_down}, None),
                   ("RepNCSPELAN", -1, {"c_out": c_out, "part": part, "repeat": repeat}, tag)]
    layers += [
        ("SPPELAN", -1, {"c_out": neck["N3"]}, "N3"),
        ("UpSample", -1, {}, None), ("Concat", [-1, "B4"], {}, None),
        ("RepNCSPELAN", -1, {"c_out": neck["N4"], "part": neck["N4"], "repeat": repeat}, "N4"),
        ("UpSample", -1, {}, None), ("Concat", [-1, "B3"], {}, None),
        ("RepNCSPELAN", -1, {"c_out": out_p3, "part": out_p3, "repeat": repeat}, "P3"),
        (down, -1, {"c_out": neck["D4"]}, None), ("Concat", [-1, "N4"], {}, None),
        ("RepNCSPELAN", -1, {"c_out": out_p4, "part": out_p4, "repeat": repeat}, "P4"),
        (down, -1, {"c_out": neck["D5"]}, None), ("Concat", [-1, "N3"], {}, None),
        ("RepNCSPELAN", -1, {"c_out": out_p5, "part": out_p5, "repeat": repeat}, "P5"),
        ("MultiheadDetection", ["P3", "P4", "P5"], {}, "Main"),
    ]
    return layers


# MIT YOLO's v9-s.yaml: AConv downsampling, an ELAN stem block, repeat 3.
_V9_S = _gelan((32, 64), ("ELAN", -1, {"c_out": 64, "part": 64}, None), "AConv",
               [(128, 128, 128), (192, 192, 192), (256, 256, 256)],
               {"N3": 256, "N4": 192, "P3": 128, "D4": 96, "P4": 192, "D5": 128, "P5": 256}, 3)
# MIT YOLO's v9-c.yaml: ADown downsampling, a RepNCSPELAN stem block, repeat 1.
_V9_C = _gelan((64, 128), ("RepNCSPELAN", -1, {"c_out": 256, "part": 128, "repeat": 1}, None),
               "ADown", [(256, 512, 256), (512, 512, 512), (512, 512, 512)],
               {"N3": 512, "N4": 512, "P3": 256, "D4": 256, "P4": 512, "D5": 512, "P5": 512}, 1)


@dataclass(frozen=True)
class YoloV9Config:
    """A YOLOv9 variant.

    Attributes:
        name: MIT YOLO layout name (``v9-s``, ``v9-c``).
        layers: The layer list (see ``_gelan``).
        num_classes: Classes of the head.
    """

    name: str
    layers: tuple
    num_classes: int = 3


YOLOV9_LAYOUTS = {"v9-s": tuple(_V9_S), "v9-c": tuple(_V9_C)}


def _build_layer(kind: str, c_in, args: dict, num_classes: int) -> tuple[nn.Module, int]:
    """A layer and its output channels, from the input channels."""
    if kind == "Conv":
        return Conv(c_in, args["c_out"], args["k"], args["stride"]), args["c_out"]
    if kind in ("ELAN", "RepNCSPELAN"):
        return ELAN(c_in, args["c_out"], args["part"], args.get("repeat")), args["c_out"]
    if kind in ("AConv", "ADown", "SPPELAN"):
        cls = {"AConv": AConv, "ADown": ADown, "SPPELAN": SPPELAN}[kind]
        return cls(c_in, args["c_out"]), args["c_out"]
    if kind == "UpSample":
        return UpSample(), c_in
    if kind == "Concat":
        return Concat(), sum(c_in)
    if kind == "MultiheadDetection":
        return MultiheadDetection(list(c_in), num_classes), 0
    raise ValueError(f"unknown YOLOv9 layer {kind!r}")


class YoloV9(nn.Module):
    """A YOLOv9 detector: image batch -> class logits and boxes at every anchor point.

    Args:
        config: The variant.
    """

    def __init__(self, config: YoloV9Config):
        super().__init__()
        self.config = config
        self.model = nn.ModuleList()
        self._sources: list = []
        tags: dict[str, int] = {}
        channels = [3]  # channels[i]: output of layer i (1-based; 0 = image)
        for number, (kind, source, args, tag) in enumerate(config.layers, start=1):
            src = self._resolve(source, number, tags)
            c_in = [channels[s] for s in src] if isinstance(src, list) else channels[src]
            layer, c_out = _build_layer(kind, c_in, args, config.num_classes)
            self.model.append(layer)
            self._sources.append(src)
            channels.append(c_out)
            if tag:
                tags[tag] = number

    @staticmethod
    def _resolve(source, number: int, tags: dict[str, int]):
        if isinstance(source, list):
            return [YoloV9._resolve(s, number, tags) for s in source]
        if isinstance(source, str):
            return tags[source]
        return number - 1 if source == -1 else source

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the network and decode the boxes.

        Args:
            images: (B, 3, H, W) RGB in [0, 1]; H and W multiples of 32.

        Returns:
            Class logits (B, N, C) and boxes (B, N, 4) ``x1, y1, x2, y2`` in input pixels, for
            the N anchor points of the three levels.
        """
        outputs = {0: images}
        x = images
        for number, (layer, src) in enumerate(zip(self.model, self._sources), start=1):
            inp = [outputs[s] for s in src] if isinstance(src, list) else outputs[src]
            x = layer(inp)
            outputs[number] = x
        return decode_levels(x)


def anchor_points(sizes: list[tuple[int, int]], strides=STRIDES, device=None):
    """Anchor centres (N, 2) ``x, y`` in input pixels and each one's stride (N,).

    Args:
        sizes: (H, W) of each level's feature map.
        strides: Pixels per cell of each level.
        device: Where to put them.
    """
    points, scale = [], []
    for (h, w), stride in zip(sizes, strides):
        ys = torch.arange(h, device=device) * stride + stride // 2
        xs = torch.arange(w, device=device) * stride + stride // 2
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((xx.flatten(), yy.flatten()), -1))
        scale.append(torch.full((h * w,), stride, device=device))
    return torch.cat(points).float(), torch.cat(scale).float()


def decode_levels(levels: list[tuple[torch.Tensor, torch.Tensor]]):
    """Class logits (B, N, C) and ``x1, y1, x2, y2`` boxes (B, N, 4) from the head's levels."""
    logits = torch.cat([c.flatten(2) for c, _ in levels], 2).transpose(1, 2)  # (B, N, C)
    dist = torch.cat([d.flatten(2) for _, d in levels], 2).transpose(1, 2)  # (B, N, 4)
    points, stride = anchor_points([tuple(c.shape[2:]) for c, _ in levels], device=dist.device)
    dist = dist * stride[None, :, None]
    boxes = torch.cat((points - dist[..., :2], points + dist[..., 2:]), -1)  # (B, N, 4)
    return logits, boxes


def fuse_batchnorm(model: nn.Module, norm: str = "bn") -> nn.Module:
    """Fold every ``conv`` + ``bn`` pair of eval-mode blocks into one biased convolution.

    Inference only (the BatchNorm statistics become constants); used by the YOLOv9 and YOLOv5
    blocks, which both name the pair ``conv`` / ``bn``, and by the RT-DETR (``conv`` /
    ``norm``: pass ``norm="norm"``). Returns ``model``, changed in place.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in model.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, norm, None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(conv.eval(), bn.eval())
            setattr(module, norm, nn.Identity())
    return model


def build_yolov9(layout: str, num_classes: int = 3) -> YoloV9:
    """A randomly initialised YOLOv9 of ``layout`` (``v9-s`` or ``v9-c``), in eval mode."""
    if layout not in YOLOV9_LAYOUTS:
        raise ValueError(f"unknown YOLOv9 layout {layout!r}; known: {sorted(YOLOV9_LAYOUTS)}")
    return YoloV9(YoloV9Config(layout, YOLOV9_LAYOUTS[layout], num_classes)).eval()


# ------------------------------------------------------------------------------- checkpoints

_PREFIX = "model.model."


class _Opaque:
    """Stand-in for a non-tensor class pickled in a Lightning checkpoint.

    Hyper-parameter containers, callbacks' state...: it only stores what it is given; no code of
    the original class runs.
    """

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


#: Globals no weights file needs: a pickle naming one is an attack (or not a weights file) and
#: is refused outright, although its stand-in would be inert too. Whole modules, and single
#: builtins (``builtins.dict`` / ``list`` do occur: OmegaConf pickles them as type markers).
_CODE_RUNNING_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib", "runpy", "code",
    "codeop", "ctypes", "pickle", "_pickle", "marshal", "pty", "webbrowser", "multiprocessing",
    "pdb", "urllib", "http", "requests", "torch.hub", "torch.ops", "torch._ops", "torch.jit",
    "torch.package",
})
_CODE_RUNNING_BUILTINS = frozenset({
    "eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr",
    "globals", "locals", "vars", "input", "breakpoint", "exit", "quit",
})


def _runs_code(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    if module == "builtins":
        return attr in _CODE_RUNNING_BUILTINS
    return any(module == m or module.startswith(m + ".") for m in _CODE_RUNNING_MODULES)


def _stand_ins(path: Path) -> list:
    """``(stand-in class, "module.Name")`` for every global the file's pickle names.

    The weights-only unpickler then resolves each of those names to an inert
    :class:`_Opaque` subclass: whatever the pickle asks to build or call, only ``_Opaque``'s own
    ``__init__`` / ``__setstate__`` run, which store their arguments.

    Raises:
        CheckpointError: The pickle names a callable of a code-running module (``os.system``,
            ``builtins.exec``, ``subprocess.Popen``...): no genuine weights file does.
    """
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    for name in names:
        if _runs_code(name):
            raise CheckpointError(f"{path}: refused, its pickle calls {name}, which no weights "
                                  "file needs (a pickle can run code when loaded); nothing of "
                                  "it was run or loaded")
    return [(type(name.rsplit(".", 1)[-1], (_Opaque,), {}), name) for name in names]


def read_lightning_checkpoint(path: str | os.PathLike) -> dict:
    """``torch.load`` a (Lightning) checkpoint with the weights-only unpickler.

    Objects other than tensors and plain data (OmegaConf configs in ``hyper_parameters``, ...)
    become inert stand-ins, so no code from the file runs; a pickle that names a code-running
    callable (``os.system``, ``builtins.exec``...) is refused outright.

    Raises:
        CheckpointError: Not a PyTorch checkpoint, truncated or empty, or a pickle calling a
            code-running callable (one line).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty; delete it and fetch it again")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            with torch.serialization.safe_globals(_stand_ins(path)):
                return torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError, pickle.UnpicklingError, ValueError,
            TypeError, AttributeError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                              f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:100]}); "
                              "delete it and fetch it again") from None


def yolov9_state(data, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The main network's tensors (keys ``model.<i>...``) of a MIT YOLO checkpoint.

    Accepts the Lightning ``.ckpt`` (``state_dict`` with ``model.model.`` keys; ``ema.*`` and
    the auxiliary branch are left out by :func:`load_yolov9_state`) or a bare MIT YOLO state
    dict (``<i>.conv.weight``, as in MIT YOLO's own ``v9-c.pt``).

    Raises:
        CheckpointError: The file holds something else (one line naming it).
    """
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state:
        kind = type(data).__name__
        raise CheckpointError(f"{path}: not a MegaDetector v6 MIT (YOLOv9) checkpoint: holds a "
                              f"{kind}, not a state dict with 'model.model.<i>...' tensors")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith(_PREFIX) for k in tensors):
        return {"model." + k[len(_PREFIX):]: v for k, v in tensors.items()
                if k.startswith(_PREFIX)}
    if tensors and all(k.split(".", 1)[0].isdigit() for k in tensors):
        return {"model." + k: v for k, v in tensors.items()}
    example = next(iter(state), "")
    raise CheckpointError(f"{path}: not a MegaDetector v6 MIT (YOLOv9) checkpoint: its keys look "
                          f"like {example!r}, not 'model.model.<i>...'; pass a MDV6-mit-*.ckpt")


def layout_of(state: dict[str, torch.Tensor]) -> str | None:
    """Which layout (``v9-s`` / ``v9-c``) a state dict is, from its first convolution."""
    first = state.get("model.0.conv.weight")
    if first is None:
        return None
    return {32: "v9-s", 64: "v9-c"}.get(int(first.shape[0]))


def load_yolov9_state(model: YoloV9, state: dict[str, torch.Tensor], path) -> None:
    """Load the main network's tensors; every one must be there with its shape.

    Raises:
        CheckpointError: Missing tensors or other shapes (one line naming the file, the layout
            and the first mismatch).
    """
    own = model.state_dict()
    ours = {k: v for k, v in state.items() if k in own}
    missing = [k for k in own if k not in ours]
    wrong = [k for k in ours if ours[k].shape != own[k].shape]
    if missing or wrong:
        found = layout_of(state)
        hint = (f"the file is the {found} layout, the model {model.config.name}"
                if found and found != model.config.name else
                f"{len(missing)} tensors missing, {len(wrong)} of another shape")
        first = (wrong or missing)[0]
        raise CheckpointError(f"{path}: does not fit YOLOv9 {model.config.name} ({hint}; first: "
                              f"{first}); pass the weights of the chosen --detector-model")
    model.load_state_dict(ours, strict=True)
