"""DenseCLIP's context decoder: prompts attend to the image to become image-specific.

``memory = LN -> Linear -> LN ([g; flatten(F)])`` and ``x = LN -> Linear (prompts)``; three
pre-norm layers of self-attention, cross-attention to the memory and an MLP; then
``LN -> Linear`` back to width D. CLAMP adds the result, scaled by a learnable ``gamma``, to the
prompts: ``P = T + gamma * decoder(T, memory)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections without bias (DenseCLIP's)."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """Queries (B, Nq, C) attend to keys/values (B, Nk, C); returns (B, Nq, C)."""
        b, nq, c = q.shape

        def split(t):  # (B, N, C) -> (B, heads, N, C/heads)
            return t.view(b, t.shape[1], self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.q_proj(q)), split(self.k_proj(kv)), split(self.v_proj(kv))
        )  # (B, heads, Nq, C/heads)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, nq, c)))


class DecoderLayer(nn.Module):
    """Pre-norm self-attention, cross-attention to the memory, and MLP (exact GELU)."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.self_attn = Attention(width, heads, dropout)
        self.cross_attn = Attention(width, heads, dropout)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.norm3 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(
            nn.Linear(width, width * 4), nn.GELU(), nn.Dropout(dropout), nn.Linear(width * 4, width)
        )

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """(B, K, C) prompts, (B, N, C) memory -> (B, K, C)."""
        y = self.norm1(x)
        x = x + self.self_attn(y, y)
        x = x + self.cross_attn(self.norm2(x), memory)
        return x + self.dropout(self.mlp(self.norm3(x)))


class ContextDecoder(nn.Module):
    """DenseCLIP context decoder mapping (prompts, visual tokens) to a prompt update."""

    def __init__(self, visual_dim: int, width: int, heads: int, layers: int, dropout: float):
        super().__init__()
        self.memory_proj = nn.Sequential(
            nn.LayerNorm(visual_dim), nn.Linear(visual_dim, width), nn.LayerNorm(width)
        )
        self.text_proj = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, width))
        self.decoder = nn.ModuleList(DecoderLayer(width, heads, dropout) for _ in range(layers))
        self.out_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, visual_dim))
        self.apply(_init_weights)

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Decode.

        Args:
            text: (B, K, D) prompt embeddings.
            visual: (B, 1 + h*w, D) global token then dense features.

        Returns:
            (B, K, D) update (before ``gamma``).
        """
        memory = self.memory_proj(visual)  # (B, 1+hw, width)
        x = self.text_proj(text)  # (B, K, width)
        for layer in self.decoder:
            x = layer(x, memory)
        return self.out_proj(x)  # (B, K, D)


def _init_weights(m: nn.Module) -> None:
    # DenseCLIP: trunc_normal_(std=.02) with absolute bounds +-2 (so effectively untruncated)
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
