"""RT-DETRv2 detectors in plain PyTorch, in the layout of lyuwenyu's ``rtdetrv2_pytorch``.

MegaDetector v6's Apache-2.0 weights (``MDV6-apa-rtdetr-c`` / ``-e``) load as they are.

Facts this module is built on (read, not copied, from PytorchWildlife in ``microsoft/CameraTraps``
@ ``4077ae2``, MIT, ``models/detection/rtdetr_apache/``, which vendors RT-DETRv2 by lyuwenyu,
Apache-2.0: ``configs/rtdetrv2/*megadetector.yml``, ``src/backbone/presnet.py``,
``src/rtdetr/{hybrid_encoder,rtdetrv2_decoder,utils}.py``):

* ``MDV6-apa-rtdetr-c`` is ``rtdetrv2_r18vd_120e_megadetector.yml``: PResNet-18 "vd", hybrid
  encoder 256 wide (feed-forward 1024, CSP expansion 0.5), 3 decoder layers.
  ``MDV6-apa-rtdetr-e`` is ``rtdetrv2_r101vd_6x_megadetector.yml``: PResNet-101 "vd", encoder
  384 wide (feed-forward 2048, expansion 1.0), 6 decoder layers. Both: 3 classes, 300 queries,
  decoder 256 wide with 8 heads, feed-forward 1024, 4 sampling points per level and head on
  3 levels (strides 8, 16, 32), one AIFI encoder layer on the stride-32 level, input 640 x 640.
* The "vd" ResNet stem is three 3 x 3 convolutions (32, 32, 64 channels, the first with stride
  2) and a 3 x 3 max pool; a downsampling shortcut is a 2 x 2 average pool then a 1 x 1
  convolution; every convolution is ``Conv2d(bias=False) + BatchNorm2d`` (frozen, that is
  without ``num_batches_tracked``, in the -e backbone).
* The encoder's sine-cosine position embedding is not stored in the checkpoint; the decoder's
  anchors (logit of centre and size, ``inf`` where invalid) and validity mask are, as is each
  deformable attention's ``num_points_scale``.
* Inference runs the selected (top 300 by best class logit) encoder outputs through the decoder
  layers, refining ``sigmoid(delta + logit(reference))``; the last layer's class logits and
  normalised ``cx, cy, w, h`` boxes are the output.

The checkpoint (``.pth``) is RT-DETR's training state: ``{"ema": {"module": state_dict,
"updates": n}, "model": ..., ...}`` or ``{"model": state_dict}``; PytorchWildlife uses the EMA
tensors when present, and so does :func:`rtdetr_state`. Keys are ``backbone.*``, ``encoder.*``,
``decoder.*``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clamp_track.errors import CheckpointError

#: Side of the square network input the configs are trained (and their anchors made) for.
INPUT_SIZE = 640
STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class RTDETRConfig:
    """The shape of an RT-DETRv2.

    Attributes:
        name: Layout name (``r18vd``, ``r101vd``, or a test layout).
        depth: ResNet depth (18, 34: basic blocks; 50, 101: bottlenecks).
        encoder_dim: Hybrid encoder width.
        encoder_ffn: Feed-forward width of the encoder's transformer layer.
        expansion: CSP block expansion in the encoder.
        decoder_layers: Decoder layers.
        num_classes: Classes.
        num_queries: Decoder queries.
        decoder_dim: Decoder width.
        decoder_ffn: Feed-forward width of the decoder layers.
        heads: Attention heads (encoder and decoder).
        points: Sampling points per level and head.
        input_size: Side of the square input (anchors are made for it).
    """

    name: str
    depth: int
    encoder_dim: int
    encoder_ffn: int
    expansion: float
    decoder_layers: int
    num_classes: int = 3
    num_queries: int = 300
    decoder_dim: int = 256
    decoder_ffn: int = 1024
    heads: int = 8
    points: int = 4
    input_size: int = INPUT_SIZE


#: The two MegaDetector layouts (from PytorchWildlife's megadetector configs, see above).
RTDETR_LAYOUTS = {
    "r18vd": RTDETRConfig("r18vd", 18, 256, 1024, 0.5, 3),
    "r101vd": RTDETRConfig("r101vd", 101, 384, 2048, 1.0, 6),
}
_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


# ------------------------------------------------------------------------------------ backbone

class ConvNorm(nn.Module):
    """``Conv2d(bias=False)`` + ``BatchNorm2d`` + optional activation, "same" padding."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1,
                 act: nn.Module | None = None):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, bias=False)
        self.norm = nn.BatchNorm2d(c_out)
        self.act = act or nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return self.act(self.norm(self.conv(x)))


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    """The projection shortcut of a first block ("d" variant: average pool when strided)."""
    if stride == 1:
        return ConvNorm(c_in, c_out, 1)
    short = nn.Sequential()
    short.add_module("pool", nn.AvgPool2d(2, 2, 0, ceil_mode=True))
    short.add_module("conv", ConvNorm(c_in, c_out, 1))
    return short


class BasicBlock(nn.Module):
    """Two 3 x 3 convolutions and a residual (ResNet-18/34)."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int, project: bool):
        super().__init__()
        self.branch2a = ConvNorm(c_in, width, 3, stride, nn.ReLU())
        self.branch2b = ConvNorm(width, width, 3)
        if project:
            self.short = _shortcut(c_in, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        short = self.short(x) if hasattr(self, "short") else x
        return F.relu(self.branch2b(self.branch2a(x)) + short)


class BottleNeck(nn.Module):
    """1 x 1, 3 x 3 (strided, "b"/"d" variants), 1 x 1 to 4 x width, and a residual."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int, project: bool):
        super().__init__()
        self.branch2a = ConvNorm(c_in, width, 1, 1, nn.ReLU())
        self.branch2b = ConvNorm(width, width, 3, stride, nn.ReLU())
        self.branch2c = ConvNorm(width, width * 4, 1)
        if project:
            self.short = _shortcut(c_in, width * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        short = self.short(x) if hasattr(self, "short") else x
        return F.relu(self.branch2c(self.branch2b(self.branch2a(x))) + short)


class Stage(nn.Module):
    """A ResNet stage: ``count`` blocks, the first one strided (except in the first stage)."""

    def __init__(self, block: type, c_in: int, width: int, count: int, stride: int):
        super().__init__()
        self.blocks = nn.ModuleList()
        for i in range(count):
            self.blocks.append(block(c_in, width, stride if i == 0 else 1, i == 0))
            c_in = width * block.expansion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        for block in self.blocks:
            x = block(x)
        return x


class PResNet(nn.Module):
    """ResNet-vd; returns the stride 8, 16 and 32 feature maps."""

    def __init__(self, depth: int):
        super().__init__()
        self.conv1 = nn.Sequential()
        for name, c_in, c_out, stride in (("conv1_1", 3, 32, 2), ("conv1_2", 32, 32, 1),
                                          ("conv1_3", 32, 64, 1)):
            self.conv1.add_module(name, ConvNorm(c_in, c_out, 3, stride, nn.ReLU()))
        block = BottleNeck if depth >= 50 else BasicBlock
        self.res_layers = nn.ModuleList()
        c_in = 64
        for i, (width, count) in enumerate(zip((64, 128, 256, 512), _BLOCKS[depth])):
            self.res_layers.append(Stage(block, c_in, width, count, 1 if i == 0 else 2))
            c_in = width * block.expansion
        self.out_channels = [w * block.expansion for w in (128, 256, 512)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stride 8, 16 and 32 feature maps of images (B, 3, H, W)."""
        x = F.max_pool2d(self.conv1(x), 3, 2, 1)
        outs = []
        for i, stage in enumerate(self.res_layers):
            x = stage(x)
            if i > 0:
                outs.append(x)
        return outs


# ------------------------------------------------------------------------------------- encoder

def _projection(c_in: int, c_out: int) -> nn.Sequential:
    """1 x 1 convolution (no bias) + batch norm, as a ``conv`` / ``norm`` sequence."""
    proj = nn.Sequential()
    proj.add_module("conv", nn.Conv2d(c_in, c_out, 1, bias=False))
    proj.add_module("norm", nn.BatchNorm2d(c_out))
    return proj


class RepVggBlock(nn.Module):
    """3 x 3 and 1 x 1 branches summed, then SiLU; :meth:`merge` makes them one convolution."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = ConvNorm(dim, dim, 3)
        self.conv2 = ConvNorm(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        if hasattr(self, "conv"):
            return F.silu(self.conv(x))
        return F.silu(self.conv1(x) + self.conv2(x))

    def merge(self) -> None:
        """Fold both branches (batch norms already folded into biased convolutions) into one."""
        a, b = self.conv1.conv, self.conv2.conv
        folded = all(isinstance(c.norm, nn.Identity) and c.conv.bias is not None
                     for c in (self.conv1, self.conv2))
        if not folded:
            raise RuntimeError("fold the batch norms before merging RepVGG branches")
        conv = nn.Conv2d(a.in_channels, a.out_channels, 3, 1, 1).to(a.weight)
        with torch.no_grad():
            conv.weight.copy_(a.weight + F.pad(b.weight, [1, 1, 1, 1]))
            conv.bias.copy_(a.bias + b.bias)
        self.conv = conv
        del self.conv1, self.conv2


class CSPRepLayer(nn.Module):
    """Two 1 x 1 paths, one through 3 RepVGG blocks, summed (and projected if narrower)."""

    def __init__(self, c_in: int, c_out: int, expansion: float, blocks: int = 3):
        super().__init__()
        hidden = int(c_out * expansion)
        self.conv1 = ConvNorm(c_in, hidden, 1, 1, nn.SiLU())
        self.conv2 = ConvNorm(c_in, hidden, 1, 1, nn.SiLU())
        self.bottlenecks = nn.Sequential(*[RepVggBlock(hidden) for _ in range(blocks)])
        self.conv3 = ConvNorm(hidden, c_out, 1, 1, nn.SiLU()) if hidden != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


class EncoderLayer(nn.Module):
    """Post-norm transformer layer (self-attention with position added to queries and keys)."""

    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        q = x + pos
        x = self.norm1(x + self.self_attn(q, q, x, need_weights=False)[0])
        return self.norm2(x + self.linear2(F.gelu(self.linear1(x))))


class EncoderStack(nn.Module):
    """A list of encoder layers (the checkpoint's ``encoder.encoder.<i>.layers.<j>``)."""

    def __init__(self, dim: int, heads: int, ffn: int, count: int = 1):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ffn) for _ in range(count))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        for layer in self.layers:
            x = layer(x, pos)
        return x


def sincos_position(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """RT-DETR's 2-D sine-cosine embedding (1, h * w, dim) for an ``h`` x ``w`` map.

    As in the reference, token ``k`` gets the "x" code of ``k // h`` and the "y" code of
    ``k % h`` (a transpose of the raster order, the same on the square maps used here); the
    channels are ``sin x, cos x, sin y, cos y``, each ``dim / 4`` frequencies
    ``temperature ** -(i / (dim / 4))``.
    """
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    k = torch.arange(h * w)
    x = torch.div(k, h, rounding_mode="floor").float()[:, None] * omega
    y = (k % h).float()[:, None] * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], 1)[None]


class HybridEncoder(nn.Module):
    """Input projections, AIFI (attention on the stride-32 map) and the CCFM FPN + PAN."""

    def __init__(self, in_channels: list[int], cfg: RTDETRConfig):
        super().__init__()
        dim = self.dim = cfg.encoder_dim
        self.input_proj = nn.ModuleList(_projection(c, dim) for c in in_channels)
        self.encoder = nn.ModuleList([EncoderStack(dim, cfg.heads, cfg.encoder_ffn)])
        levels = len(in_channels)
        self.lateral_convs = nn.ModuleList(ConvNorm(dim, dim, 1, 1, nn.SiLU())
                                           for _ in range(levels - 1))
        self.fpn_blocks = nn.ModuleList(CSPRepLayer(2 * dim, dim, cfg.expansion)
                                        for _ in range(levels - 1))
        self.downsample_convs = nn.ModuleList(ConvNorm(dim, dim, 3, 2, nn.SiLU())
                                              for _ in range(levels - 1))
        self.pan_blocks = nn.ModuleList(CSPRepLayer(2 * dim, dim, cfg.expansion)
                                        for _ in range(levels - 1))
        self._pos: dict[tuple[int, int], torch.Tensor] = {}

    def _position(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        if (h, w) not in self._pos:
            self._pos[h, w] = sincos_position(h, w, self.dim)
        return self._pos[h, w].to(like)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Backbone maps -> fused maps at the same strides, all ``encoder_dim`` wide."""
        proj = [p(f) for p, f in zip(self.input_proj, feats)]
        b, _, h, w = proj[-1].shape
        tokens = proj[-1].flatten(2).transpose(1, 2)
        tokens = self.encoder[0](tokens, self._position(h, w, tokens))
        proj[-1] = tokens.transpose(1, 2).reshape(b, self.dim, h, w)
        # top-down: inner[0] is the finest so far; each lateral output replaces its input
        inner = [proj[-1]]
        for i, low in enumerate(reversed(proj[:-1])):
            high = self.lateral_convs[i](inner[0])
            inner[0] = high
            up = F.interpolate(high, scale_factor=2.0, mode="nearest")
            inner.insert(0, self.fpn_blocks[i](torch.cat([up, low], 1)))
        outs = [inner[0]]
        for i in range(len(proj) - 1):
            down = self.downsample_convs[i](outs[-1])
            outs.append(self.pan_blocks[i](torch.cat([down, inner[i + 1]], 1)))
        return outs


# ------------------------------------------------------------------------------------- decoder

class MLP(nn.Module):
    """Linear layers with ReLU between them."""

    def __init__(self, c_in: int, hidden: int, c_out: int, count: int):
        super().__init__()
        dims = [c_in] + [hidden] * (count - 1) + [c_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MSDeformableAttention(nn.Module):
    """Multi-scale deformable attention (RT-DETRv2, box reference points), via ``grid_sample``.

    Each head samples ``points`` locations per level around the reference box centre, offset by
    ``offset * box_size * 0.5 / points``, bilinearly (zeros outside, ``align_corners=False``),
    and sums them with softmax weights over all levels and points.
    """

    def __init__(self, dim: int, heads: int, levels: int, points: int):
        super().__init__()
        self.heads, self.levels, self.points = heads, levels, points
        total = heads * levels * points
        self.register_buffer("num_points_scale",
                             torch.full((levels * points,), 1.0 / points, dtype=torch.float32))
        self.sampling_offsets = nn.Linear(dim, total * 2)
        self.attention_weights = nn.Linear(dim, total)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, boxes: torch.Tensor, value: torch.Tensor,
                shapes: list[tuple[int, int]]) -> torch.Tensor:
        """Attend: query (B, Q, C), boxes (B, Q, 4) normalised ``cx, cy, w, h``, value (B, L, C)."""
        b, q, _ = query.shape
        heads, n = self.heads, self.levels * self.points
        head_dim = value.shape[-1] // heads
        value = self.value_proj(value).reshape(b, -1, heads, head_dim)
        offsets = self.sampling_offsets(query).reshape(b, q, heads, n, 2)
        weights = self.attention_weights(query).reshape(b, q, heads, n).softmax(-1)
        scale = self.num_points_scale.to(query.dtype)[:, None]  # (n, 1)
        where = boxes[:, :, None, None, :2] + offsets * scale * boxes[:, :, None, None, 2:] * 0.5
        grids = (2 * where - 1).permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B*heads, Q, n, 2)
        values = value.permute(0, 2, 3, 1).flatten(0, 1)  # (B*heads, head_dim, L)
        sampled, start = [], 0
        for level, (h, w) in enumerate(shapes):
            v = values[..., start:start + h * w].reshape(b * heads, head_dim, h, w)
            grid = grids[:, :, level * self.points:(level + 1) * self.points]
            sampled.append(F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros",
                                         align_corners=False))  # (B*heads, head_dim, Q, points)
            start += h * w
        weights = weights.permute(0, 2, 1, 3).reshape(b * heads, 1, q, n)
        out = (torch.cat(sampled, -1) * weights).sum(-1)  # (B*heads, head_dim, Q)
        return self.output_proj(out.reshape(b, heads * head_dim, q).transpose(1, 2))


class DecoderLayer(nn.Module):
    """Self-attention, deformable cross-attention, feed-forward; each post-norm."""

    def __init__(self, cfg: RTDETRConfig, levels: int):
        super().__init__()
        dim = cfg.decoder_dim
        self.self_attn = nn.MultiheadAttention(dim, cfg.heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = MSDeformableAttention(dim, cfg.heads, levels, cfg.points)
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, cfg.decoder_ffn)
        self.linear2 = nn.Linear(cfg.decoder_ffn, dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x, boxes, memory, shapes, pos):
        """Queries (B, Q, C) refined by their reference boxes (B, Q, 4) and the memory."""
        q = x + pos
        x = self.norm1(x + self.self_attn(q, q, x, need_weights=False)[0])
        x = self.norm2(x + self.cross_attn(x + pos, boxes, memory, shapes))
        return self.norm3(x + self.linear2(F.relu(self.linear1(x))))


class DecoderStack(nn.Module):
    """The decoder layers (the checkpoint's ``decoder.decoder.layers.<i>``)."""

    def __init__(self, cfg: RTDETRConfig, levels: int):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg, levels) for _ in range(cfg.decoder_layers))


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``logit(x)`` with ``x`` clipped to [0, 1] and both ratio terms to at least ``eps``."""
    x = x.clip(0, 1)
    return torch.log(x.clip(min=eps) / (1 - x).clip(min=eps))


def make_anchors(shapes: list[tuple[int, int]], eps: float = 1e-2):
    """Encoder anchors: (1, L, 4) logits of cell centre and size ``0.05 * 2 ** level``.

    Returns the anchors (``inf`` where a coordinate is not within ``(eps, 1 - eps)``) and the
    (1, L, 1) validity mask.
    """
    anchors = []
    for level, (h, w) in enumerate(shapes):
        y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        centre = (torch.stack([x, y], -1).float() + 0.5) / torch.tensor([w, h], dtype=torch.float32)
        size = torch.full_like(centre, 0.05 * 2.0 ** level)
        anchors.append(torch.cat([centre, size], -1).reshape(1, h * w, 4))
    anchors = torch.cat(anchors, 1)
    valid = ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdim=True)
    logits = torch.log(anchors / (1 - anchors))
    return torch.where(valid, logits, torch.inf), valid


class RTDETRDecoder(nn.Module):
    """Query selection from the encoder memory and the refining decoder (RTDETRTransformerv2)."""

    def __init__(self, in_channels: list[int], cfg: RTDETRConfig):
        super().__init__()
        self.cfg = cfg
        dim, classes = cfg.decoder_dim, cfg.num_classes
        self.input_proj = nn.ModuleList(_projection(c, dim) for c in in_channels)
        self.decoder = DecoderStack(cfg, len(in_channels))
        # training-only (denoising queries); kept so the checkpoint loads as it is
        self.denoising_class_embed = nn.Embedding(classes + 1, dim, padding_idx=classes)
        self.query_pos_head = MLP(4, 2 * dim, dim, 2)
        self.enc_output = nn.Sequential()
        self.enc_output.add_module("proj", nn.Linear(dim, dim))
        self.enc_output.add_module("norm", nn.LayerNorm(dim))
        self.enc_score_head = nn.Linear(dim, classes)
        self.enc_bbox_head = MLP(dim, dim, 4, 3)
        self.dec_score_head = nn.ModuleList(nn.Linear(dim, classes)
                                            for _ in range(cfg.decoder_layers))
        self.dec_bbox_head = nn.ModuleList(MLP(dim, dim, 4, 3) for _ in range(cfg.decoder_layers))
        anchors, valid = make_anchors([(cfg.input_size // s, cfg.input_size // s)
                                       for s in STRIDES[:len(in_channels)]])
        self.register_buffer("anchors", anchors)
        self.register_buffer("valid_mask", valid)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder maps -> the last layer's class logits (B, Q, C) and boxes (B, Q, 4)."""
        proj = [p(f) for p, f in zip(self.input_proj, feats)]
        shapes = [tuple(p.shape[2:]) for p in proj]
        memory = torch.cat([p.flatten(2).transpose(1, 2) for p in proj], 1)  # (B, L, C)
        if memory.shape[1] == self.anchors.shape[1]:
            anchors, valid = self.anchors, self.valid_mask
        else:  # another input size than the one the buffers are made for
            anchors, valid = (t.to(memory.device) for t in make_anchors(shapes))
        # the query selection sees the memory with invalid cells zeroed; the decoder's
        # cross-attention samples the memory as it is (as in the reference)
        selected = self.enc_output(valid.to(memory.dtype) * memory)
        logits = self.enc_score_head(selected)
        coords = self.enc_bbox_head(selected) + anchors
        top = logits.max(-1).values.topk(self.cfg.num_queries, dim=1).indices[..., None]
        x = selected.gather(1, top.expand(-1, -1, selected.shape[-1]))
        boxes = coords.gather(1, top.expand(-1, -1, 4)).sigmoid()
        layers = self.decoder.layers
        for i, layer in enumerate(layers):
            x = layer(x, boxes, memory, shapes, self.query_pos_head(boxes))
            boxes = (self.dec_bbox_head[i](x) + inverse_sigmoid(boxes)).sigmoid()
        return self.dec_score_head[len(layers) - 1](x), boxes


class RTDETR(nn.Module):
    """RT-DETRv2.

    Images (B, 3, 640, 640) RGB in [0, 1] -> class logits (B, Q, C) and normalised
    ``cx, cy, w, h`` boxes (B, Q, 4).
    """

    def __init__(self, cfg: RTDETRConfig):
        super().__init__()
        self.config = cfg
        self.backbone = PResNet(cfg.depth)
        self.encoder = HybridEncoder(self.backbone.out_channels, cfg)
        self.decoder = RTDETRDecoder([cfg.encoder_dim] * 3, cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the block."""
        return self.decoder(self.encoder(self.backbone(x)))


def build_rtdetr(layout: str | RTDETRConfig) -> RTDETR:
    """A randomly initialised RT-DETRv2 of ``layout`` (``r18vd``, ``r101vd``, a config)."""
    if isinstance(layout, str):
        if layout not in RTDETR_LAYOUTS:
            raise ValueError(f"unknown RT-DETR layout {layout!r}; known: {sorted(RTDETR_LAYOUTS)}")
        layout = RTDETR_LAYOUTS[layout]
    return RTDETR(layout).eval()


def fuse_for_inference(model: RTDETR) -> RTDETR:
    """Fold batch norms into convolutions and merge RepVGG branches (inference only; in place)."""
    from clamp_track.models.yolov9 import fuse_batchnorm

    fuse_batchnorm(model, norm="norm")
    for module in model.modules():
        if isinstance(module, RepVggBlock):
            module.merge()
    return model


# --------------------------------------------------------------------------------- checkpoints

_SKIPPED = "num_batches_tracked"  # batch-norm counters: absent in frozen norms, unused here


def rtdetr_state(data, path) -> dict[str, torch.Tensor]:
    """The network's tensors of an RT-DETR checkpoint.

    ``ema.module`` if present, else ``model`` (as PytorchWildlife), or the file itself if it is
    a bare state dict; batch-norm counters are left out.

    Raises:
        CheckpointError: The file holds something else (one line naming it).
    """
    state = data
    if isinstance(data, dict) and isinstance(data.get("ema"), dict) and "module" in data["ema"]:
        state = data["ema"]["module"]
    elif isinstance(data, dict) and isinstance(data.get("model"), dict):
        state = data["model"]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: not an RT-DETR checkpoint: holds a {type(data).__name__}, "
                              "not {'ema': {'module': state_dict}} or {'model': state_dict}; "
                              "pass a MDV6-apa-rtdetr-*.pth")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):  # saved from a DDP wrapper
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    if not any(k.startswith("backbone.") for k in tensors):
        example = next(iter(state), "")
        raise CheckpointError(f"{path}: not an RT-DETR checkpoint: its keys look like "
                              f"{example!r}, not 'backbone.*' / 'encoder.*' / 'decoder.*'; "
                              "pass a MDV6-apa-rtdetr-*.pth")
    return {k: v for k, v in tensors.items() if not k.endswith(_SKIPPED)}


def layout_of(state: dict[str, torch.Tensor]) -> str | None:
    """Which layout a state dict is, from its backbone depth (``r18vd`` / ``r101vd``)."""
    stage3 = {k.split(".")[4] for k in state if k.startswith("backbone.res_layers.2.blocks.")}
    return {2: "r18vd", 23: "r101vd"}.get(len(stage3))


def load_rtdetr_state(model: RTDETR, state: dict[str, torch.Tensor], path) -> None:
    """Load every tensor (batch-norm counters aside); the sets of names and shapes must match.

    Raises:
        CheckpointError: Missing, extra or differently shaped tensors (one line naming the
            file, both layouts when they differ, and the first mismatch).
    """
    own = {k: v for k, v in model.state_dict().items() if not k.endswith(_SKIPPED)}
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or extra or wrong:
        found, name = layout_of(state), model.config.name
        hint = (f"the file is the {found} layout, the model {name}" if found and found != name
                else f"{len(missing)} tensors missing, {len(extra)} unknown, {len(wrong)} of "
                     "another shape")
        first = (wrong or missing or extra)[0]
        raise CheckpointError(f"{path}: does not fit RT-DETR {name} ({hint}; first: {first}); "
                              "pass the weights of the chosen --detector-model")
    model.load_state_dict(state, strict=False)
