"""CLIP image towers returning what CLAMP needs, built on open_clip's modules.

Both backbones subclass open_clip's classes, so their parameter names are CLIP's (and the
official CLAMP checkpoint's ``backbone.*`` names) and CLIP weights load without renaming.

* :class:`ResNetBackbone` (CLIP RN50): the four stage maps and, from the attention pool run with
  *every* position as a query (DenseCLIP), the dense projected map ``F`` and the global
  embedding ``g``.
* :class:`ViTBackbone` (CLIP ViT-B/16): the token maps of ``out_indices`` blocks (no
  ``ln_post``) and ``ln_post`` + projection of all tokens: token 0 -> ``g``, the rest -> ``F``.

Positional embeddings are stored for a square grid and bilinearly resized to the actual grid
on every forward (the identity at the stored size).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import QuickGELU, VisionTransformer
from torch import nn
from torchvision.ops import stochastic_depth

from clamp_track.models.config import BackboneConfig


class BackboneOutput(NamedTuple):
    """What a backbone returns.

    Attributes:
        features: Stage maps (ResNet) or token maps of ``out_indices`` blocks (ViT), each
            (B, C_i, H_i, W_i); the last one is concatenated with the score map.
        global_embedding: (B, D) mean-token / class-token embedding, or None without dense output.
        dense: (B, D, h, w) projected dense features ``F``, or None without dense output.
    """

    features: list[torch.Tensor]
    global_embedding: torch.Tensor | None
    dense: torch.Tensor | None


def resize_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a CLIP positional embedding to a new grid, keeping the first row.

    Args:
        pos: (1 + S*S, C) embedding: one row for the mean/class token, then an S x S grid.
        grid: Target (H, W).

    Returns:
        (1 + H*W, C) embedding (``pos`` itself when the grid already matches).
    """
    side = int(round((pos.shape[0] - 1) ** 0.5))
    if (side, side) == tuple(grid):
        return pos
    c = pos.shape[1]
    spatial = pos[1:].reshape(1, side, side, c).permute(0, 3, 1, 2)  # (1, C, S, S)
    spatial = F.interpolate(spatial, size=grid, mode="bilinear", align_corners=False)
    spatial = spatial.reshape(c, grid[0] * grid[1]).T  # (H*W, C)
    return torch.cat([pos[:1], spatial], dim=0)


class ResNetBackbone(ModifiedResNet):
    """CLIP ModifiedResNet with a dense attention pool (CLIPResNetWithAttention)."""

    def __init__(self, cfg: BackboneConfig, dense: bool = True):
        super().__init__(
            layers=list(cfg.layers),
            output_dim=cfg.output_dim,
            heads=cfg.heads,
            image_size=cfg.image_size,
            width=cfg.width,
        )
        if not dense:
            self.attnpool = None

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        """Run the tower on (B, 3, H, W) normalised images."""
        x = self.stem(x)
        features = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)  # (B, 32*width, H/32, W/32) for layer4
        if self.attnpool is None:
            return BackboneOutput(features, None, None)
        global_embedding, dense = self.dense_attention_pool(x)
        return BackboneOutput(features, global_embedding, dense)

    def dense_attention_pool(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP's attention pool with every position (and the mean token) as a query.

        Args:
            x: (B, C, H, W) layer4 map.

        Returns:
            ``(g, F)``: (B, D) output at the mean token and (B, D, H, W) output at the positions.
        """
        pool = self.attnpool
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # (B, 1+HW, C)
        tokens = tokens + resize_pos_embed(pool.positional_embedding, (h, w)).to(tokens.dtype)
        heads = pool.num_heads

        def split(t):  # (B, L, C) -> (B, heads, L, C/heads)
            return t.view(b, h * w + 1, heads, c // heads).transpose(1, 2)

        q, k, v = (split(proj(tokens)) for proj in (pool.q_proj, pool.k_proj, pool.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, 1+HW, C/heads)
        out = pool.c_proj(out.transpose(1, 2).reshape(b, h * w + 1, c))  # (B, 1+HW, D)
        dense = out[:, 1:].transpose(1, 2).reshape(b, -1, h, w)  # (B, D, H, W)
        return out[:, 0], dense


class ViTBackbone(VisionTransformer):
    """CLIP VisionTransformer returning block token maps and projected patch tokens."""

    def __init__(self, cfg: BackboneConfig, dense: bool = True):
        (n_blocks,) = cfg.layers
        super().__init__(
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            width=cfg.width,
            layers=n_blocks,
            heads=cfg.heads,
            mlp_ratio=4.0,
            output_dim=cfg.output_dim,
            act_layer=QuickGELU,
        )
        self.out_indices = tuple(cfg.out_indices) or (n_blocks - 1,)
        if self.out_indices[-1] != n_blocks - 1:
            raise ValueError("the last out_index must be the last block")
        self.drop_path_rates = [
            cfg.drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)
        ]
        if not dense:
            self.ln_post = None
            self.proj = None

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        """Run the tower on (B, 3, H, W) normalised images."""
        x = self.conv1(x)  # (B, width, h, w)
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, hw, width)
        cls = self.class_embedding.to(x.dtype).expand(b, 1, c)
        x = torch.cat([cls, x], dim=1)  # (B, 1+hw, width)
        pos = resize_pos_embed(self.positional_embedding, (h, w)).to(x.dtype)
        # Official quirk kept for checkpoint compatibility: class_embedding is added twice.
        pos = torch.cat([pos[:1] + self.class_embedding.to(x.dtype), pos[1:]], dim=0)
        x = self.ln_pre(x + pos)
        features = []
        for i, block in enumerate(self.transformer.resblocks):
            x = self._block(block, x, self.drop_path_rates[i])
            if i in self.out_indices:
                features.append(x[:, 1:].transpose(1, 2).reshape(b, c, h, w))  # (B, width, h, w)
        if self.proj is None:
            return BackboneOutput(features, None, None)
        y = self.ln_post(x) @ self.proj  # (B, 1+hw, D)
        dense = y[:, 1:].transpose(1, 2).reshape(b, -1, h, w)  # (B, D, h, w)
        return BackboneOutput(features, y[:, 0], dense)

    def _block(self, block: nn.Module, x: torch.Tensor, drop: float) -> torch.Tensor:
        """One open_clip residual block with stochastic depth on both branches."""
        attn = block.ls_1(block.attention(block.ln_1(x)))
        x = x + stochastic_depth(attn, drop, "row", self.training)
        mlp = block.ls_2(block.mlp(block.ln_2(x)))
        return x + stochastic_depth(mlp, drop, "row", self.training)


class ImageNetResNetBackbone(nn.Module):
    """torchvision's ResNet-50 (the ImageNet SimpleBaseline of the paper's tables).

    The same module names as torchvision, so ``ResNet50_Weights.IMAGENET1K_V1`` (what mmpose's
    ``torchvision://resnet50`` is) loads directly; no dense output (no language parts).
    """

    def __init__(self, cfg: BackboneConfig, dense: bool = False):
        super().__init__()
        if dense:
            raise ValueError("the ImageNet ResNet has no dense projected features: "
                             "use it for a SimpleBaseline only")
        from torchvision.models.resnet import Bottleneck, ResNet

        net = ResNet(Bottleneck, list(cfg.layers))
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        """Run the tower on (B, 3, H, W) normalised images."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)  # layer4: (B, 2048, H/32, W/32)
        return BackboneOutput(features, None, None)


def build_backbone(cfg: BackboneConfig, dense: bool = True) -> nn.Module:
    """Build the image tower of ``cfg``; ``dense=False`` drops the pool/projection (baseline)."""
    if cfg.kind == "resnet":
        return ResNetBackbone(cfg, dense)
    if cfg.kind == "vit":
        return ViTBackbone(cfg, dense)
    if cfg.kind == "imagenet_resnet":
        return ImageNetResNetBackbone(cfg, dense)
    raise ValueError(f"unknown backbone kind {cfg.kind!r}")
