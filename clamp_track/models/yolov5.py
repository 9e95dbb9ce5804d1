"""YOLOv5 (anchor-based, P5 and P6) in plain PyTorch, to run MegaDetector v5a without yolov5.

MegaDetector v5a (``md_v5a.0.0.pt``) is a YOLOv5x6 trained with ultralytics/yolov5, saved as a
*pickled model object* (``{"model": models.yolo.Model, ...}``): loading it the usual way needs
the (AGPL) yolov5 code importable as ``models.yolo`` / ``models.common``. Here the file is read
with torch's weights-only unpickler, every pickled class replaced by an inert stand-in (no code
from the file or from yolov5 runs), and the stand-in tree gives:

* the model's own configuration (``Model.yaml``: ``depth_multiple``, ``width_multiple``,
  ``anchors``, ``backbone``, ``head``), from which :class:`YoloV5` builds the same network;
* its tensors (``_parameters`` / ``_buffers`` of each module, by module path), loaded strictly;
* ``stride`` and ``names``, and each BatchNorm's ``eps``.

Facts used (from reading ultralytics/yolov5's ``models/yolo.py`` / ``models/common.py`` layout as
described in its public docs and from MegaDetector 10.0.28's ``pytorch_detector.py``, MIT):
channels are ``ceil(c * width_multiple / 8) * 8`` (the output layer excepted), repeats
``max(round(n * depth_multiple), 1)``; ``Conv`` = Conv2d (no bias, padding ``k // 2`` unless
given) + BatchNorm + SiLU; the head decodes ``xy = (2 sigmoid - 0.5 + cell) * stride``,
``wh = (2 sigmoid)^2 * anchor * stride``, score = objectness x class probability.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from clamp_track.errors import CheckpointError


class Conv(nn.Module):
    """Conv2d without bias, BatchNorm, SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None,
                 g: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """1x1 then 3x3 Conv, with a residual connection when asked and channels allow."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1)
        self.cv2 = Conv(hidden, c2, 3, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with three convolutions and ``n`` bottlenecks."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1,
                 e: float = 0.5):
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1)
        self.cv2 = Conv(c1, hidden, 1)
        self.cv3 = Conv(2 * hidden, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, g, e=1.0)
                                 for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained ``k x k`` max pools."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1)
        self.cv2 = Conv(hidden * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class SPP(nn.Module):
    """Spatial pyramid pooling with parallel max pools (older YOLOv5 releases)."""

    def __init__(self, c1: int, c2: int, k=(5, 9, 13)):
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1)
        self.cv2 = Conv(hidden * (len(k) + 1), c2, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(size, 1, size // 2) for size in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [pool(x) for pool in self.m], 1))


class Focus(nn.Module):
    """Space-to-depth then Conv (YOLOv5 before v6.0)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2],
                                    x[..., 1::2, 1::2]), 1))


class Concat(nn.Module):
    """Concatenation along channels."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """Apply the block."""
        return torch.cat(xs, 1)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by an integer factor."""

    def __init__(self, factor: int = 2):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return nn.functional.interpolate(x, scale_factor=float(self.factor), mode="nearest")


class Detect(nn.Module):
    """Anchor-based head: per level a 1x1 Conv to ``anchors x (5 + classes)`` outputs."""

    def __init__(self, nc: int, anchors: list, ch: list[int]):
        super().__init__()
        self.nc, self.nl = nc, len(anchors)
        self.na = len(anchors[0]) // 2
        self.no = nc + 5
        # in strides (YOLOv5 divides the yaml's pixel anchors by the level's stride)
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32)
                             .view(self.nl, -1, 2))
        self.register_buffer("stride", torch.ones(self.nl))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """Boxes (B, N, 4) ``x_centre, y_centre, w, h`` px + objectness + classes: (B, N, 5+C)."""
        out = []
        for i, x in enumerate(xs):
            x = self.m[i](x)
            b, _, h, w = x.shape
            y = x.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).sigmoid()
            yy, xx = torch.meshgrid(torch.arange(h, device=x.device),
                                    torch.arange(w, device=x.device), indexing="ij")
            cell = torch.stack((xx, yy), -1).view(1, 1, h, w, 2).to(y.dtype)  # (1, 1, H, W, 2)
            stride = self.stride[i]
            anchor = (self.anchors[i] * stride).view(1, self.na, 1, 1, 2)
            xy = (y[..., :2] * 2 - 0.5 + cell) * stride
            wh = (y[..., 2:4] * 2) ** 2 * anchor
            out.append(torch.cat((xy, wh, y[..., 4:]), -1).view(b, -1, self.no))
        return torch.cat(out, 1)


_BLOCKS = {"Conv": Conv, "C3": C3, "SPPF": SPPF, "SPP": SPP, "Focus": Focus,
           "Bottleneck": Bottleneck}


def _divisible(x: float, divisor: int = 8) -> int:
    return math.ceil(x / divisor) * divisor


def _layer(kind: str, args: list, c_in: list[int], frm, n: int, gw: float, nc: int,
           anchors) -> tuple[nn.Module, int]:
    """One layer of a YOLOv5 yaml and its output channels."""
    kind = kind.split(".")[-1]  # "nn.Upsample" -> "Upsample"
    if kind in _BLOCKS:
        c1, c2 = c_in[frm], _divisible(args[0] * gw)
        rest = list(args[1:])
        if kind == "C3":
            return _BLOCKS[kind](c1, c2, n, *rest), c2
        layer = _BLOCKS[kind](c1, c2, *rest)
        return (nn.Sequential(*[layer] + [_BLOCKS[kind](c2, c2, *rest) for _ in range(n - 1)])
                if n > 1 else layer), c2
    if kind == "Concat":
        return Concat(), sum(c_in[f] for f in frm)
    if kind == "Upsample":
        return Upsample(int(args[1])), c_in[frm]
    if kind == "Detect":
        return Detect(nc, anchors, [c_in[f] for f in frm]), 0
    raise CheckpointError(f"unsupported YOLOv5 layer {kind!r} in the model's configuration")


class YoloV5(nn.Module):
    """A YOLOv5 built from its yaml configuration (as stored in the model file).

    Args:
        yaml: ``nc``, ``depth_multiple``, ``width_multiple``, ``anchors``, ``backbone``,
            ``head`` (each layer ``[from, repeats, module, args]``).
    """

    def __init__(self, yaml: dict):
        super().__init__()
        nc, gd, gw = int(yaml["nc"]), yaml["depth_multiple"], yaml["width_multiple"]
        anchors = yaml["anchors"]
        self.model = nn.ModuleList()
        self._from: list = []
        channels: list[int] = []
        for i, (frm, n, kind, args) in enumerate(list(yaml["backbone"]) + list(yaml["head"])):
            n = max(round(n * gd), 1) if n > 1 else n
            resolved = ([f if f >= 0 else i + f for f in frm] if isinstance(frm, list)
                        else (frm if frm >= 0 else i + frm))
            inputs = channels if i else [3]
            src = resolved if i else 0
            layer, c_out = _layer(str(kind), list(args), inputs, src, n, gw, nc, anchors)
            self.model.append(layer)
            self._from.append(resolved if i else -1)
            channels.append(c_out)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] (H, W multiples of the largest stride) -> (B, N, 5 + C)."""
        outputs: list[torch.Tensor] = []
        x = images
        for layer, frm in zip(self.model, self._from):
            if isinstance(frm, list):
                x = [outputs[f] for f in frm]
            elif frm >= 0:
                x = outputs[frm]
            x = layer(x)
            outputs.append(x)
        return x


#: YOLOv5x6 (P6, 1280 px), MegaDetector v5a's architecture, as ultralytics/yolov5 v6+ publishes
#: it (``models/hub/yolov5x6.yaml``). Real model files carry their own copy; this one only
#: builds random-weight models (tests, benchmarks).
YOLOV5X6 = {
    "nc": 3, "depth_multiple": 1.33, "width_multiple": 1.25,
    "anchors": [[19, 27, 44, 40, 38, 94], [96, 68, 86, 152, 180, 137],
                [140, 301, 303, 264, 238, 542], [436, 615, 739, 380, 925, 792]],
    "backbone": [[-1, 1, "Conv", [64, 6, 2, 2]], [-1, 1, "Conv", [128, 3, 2]],
                 [-1, 3, "C3", [128]], [-1, 1, "Conv", [256, 3, 2]], [-1, 6, "C3", [256]],
                 [-1, 1, "Conv", [512, 3, 2]], [-1, 9, "C3", [512]],
                 [-1, 1, "Conv", [768, 3, 2]], [-1, 3, "C3", [768]],
                 [-1, 1, "Conv", [1024, 3, 2]], [-1, 3, "C3", [1024]],
                 [-1, 1, "SPPF", [1024, 5]]],
    "head": [[-1, 1, "Conv", [768, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
             [[-1, 8], 1, "Concat", [1]], [-1, 3, "C3", [768, False]],
             [-1, 1, "Conv", [512, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
             [[-1, 6], 1, "Concat", [1]], [-1, 3, "C3", [512, False]],
             [-1, 1, "Conv", [256, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
             [[-1, 4], 1, "Concat", [1]], [-1, 3, "C3", [256, False]],
             [-1, 1, "Conv", [256, 3, 2]], [[-1, 20], 1, "Concat", [1]],
             [-1, 3, "C3", [512, False]], [-1, 1, "Conv", [512, 3, 2]],
             [[-1, 16], 1, "Concat", [1]], [-1, 3, "C3", [768, False]],
             [-1, 1, "Conv", [768, 3, 2]], [[-1, 12], 1, "Concat", [1]],
             [-1, 3, "C3", [1024, False]], [[23, 26, 29, 32], 1, "Detect", ["nc", "anchors"]]],
}


def build_yolov5(yaml: dict | None = None) -> YoloV5:
    """A randomly initialised YOLOv5 of ``yaml`` (default :data:`YOLOV5X6`), in eval mode.

    Level ``i`` gets stride ``2 ** (3 + i)`` and the yaml's pixel anchors in strides, as
    YOLOv5 sets them up.
    """
    model = YoloV5(yaml or YOLOV5X6)
    head = model.model[-1]
    with torch.no_grad():
        head.stride.copy_(2.0 ** torch.arange(3, 3 + head.nl))
        head.anchors.div_(head.stride.view(-1, 1, 1))
    return model.eval()


# ------------------------------------------------------------------------------- model files


def _state(obj) -> dict:
    """The pickled ``__dict__`` of a stand-in object (empty for anything else)."""
    state = getattr(obj, "state", None)
    return state if isinstance(state, dict) else {}


def _tensors(module, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and buffers of a pickled module tree, by path (a ``state_dict``)."""
    state = _state(module)
    out = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value.detach().float()
    for name, child in (state.get("_modules") or {}).items():
        out.update(_tensors(child, f"{prefix}{name}."))
    return out


def _batchnorm_eps(module, found: list) -> list:
    state = _state(module)
    if "eps" in state and "running_var" in (state.get("_buffers") or {}):
        found.append(float(state["eps"]))
    for child in (state.get("_modules") or {}).values():
        _batchnorm_eps(child, found)
    return found


def load_yolov5_file(path: str | os.PathLike) -> tuple[YoloV5, dict[int, str]]:
    """A YOLOv5 (e.g. MegaDetector v5a) from its pickled-model ``.pt`` file, without yolov5.

    Returns:
        The network (eval mode, float32) and its class names by index.

    Raises:
        CheckpointError: Not such a file, or a network this module cannot rebuild (one line).
    """
    from clamp_track.models.yolov9 import read_lightning_checkpoint

    path = Path(path)
    data = read_lightning_checkpoint(path)
    root = None
    if isinstance(data, dict):
        root = data.get("model") if data.get("model") is not None else data.get("ema")
    config = _state(root).get("yaml")
    if not isinstance(config, dict) or "backbone" not in config:
        raise CheckpointError(f"{path}: not a YOLOv5 / MegaDetector v5 model file (no pickled "
                              "model with its yaml configuration); pass md_v5a.0.0.pt")
    try:
        model = YoloV5(config)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild its YOLOv5 from the stored configuration "
                              f"({exc.__class__.__name__}: {exc})") from None
    state = _tensors(root)
    head = model.model[-1]
    state.setdefault(f"model.{len(model.model) - 1}.stride", _stride(root, head))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        raise CheckpointError(f"{path}: its tensors do not fit the network of its own "
                              f"configuration (first: {(wrong or missing)[0]})")
    model.load_state_dict({k: state[k] for k in own})
    eps = _batchnorm_eps(root, [])
    if eps:
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = eps[0]
    names = _state(root).get("names") or {}
    if isinstance(names, list | tuple):
        names = dict(enumerate(names))
    return model.eval(), {int(k): str(v) for k, v in names.items()}


def _stride(root, head: Detect) -> torch.Tensor:
    stride = _state(root).get("stride")
    if isinstance(stride, torch.Tensor) and stride.numel() == head.nl:
        return stride.float()
    raise CheckpointError("the YOLOv5 model file stores no strides")
