"""CLAMP's text side: keypoint-name tokens, the prompt text encoder and the prompt encoder.

Each keypoint name becomes the sequence ``[SOT] V1..V8 name [EOT] pad`` (13 tokens), where the
8 context vectors ``V`` are learnable and shared by all keypoints. The CLIP text transformer
(frozen: never updated, but gradients flow through it into the contexts) encodes it; the
feature at EOT, projected, is the keypoint's text embedding T. The prompt encoder (one CLIP
block over the K embeddings, no positional embedding, no mask) refines T. None of this depends
on the image, so :class:`~clamp_track.models.clamp.Clamp` caches it at inference.
"""

from __future__ import annotations

import functools
import warnings

import torch
from open_clip.transformer import LayerNorm, QuickGELU, Transformer
from torch import nn

from clamp_track.models.config import TextConfig


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def tokenize_names(names, name_tokens: int) -> torch.Tensor:
    """CLIP-BPE-tokenise keypoint names as CLAMP does.

    Args:
        names: K keypoint names.
        name_tokens: Tokens per name including SOT and EOT (5 -> at most 3 BPE tokens).

    Returns:
        (K, name_tokens) int64 ids: ``[SOT, bpe..., EOT, 0...]``. Longer names are cut (EOT kept)
        with a warning.
    """
    tok = _tokenizer()
    sot, eot = tok.encoder["<start_of_text>"], tok.encoder["<end_of_text>"]
    ids = torch.zeros(len(names), name_tokens, dtype=torch.long)
    for i, name in enumerate(names):
        bpe = tok.encode(name)
        if len(bpe) > name_tokens - 2:
            warnings.warn(
                f"keypoint name {name!r} has {len(bpe)} BPE tokens; CLAMP prompts keep "
                f"{name_tokens - 2}, so it is shortened to {tok.decode(bpe[: name_tokens - 2])!r}",
                stacklevel=2,
            )
            bpe = bpe[: name_tokens - 2]
        row = [sot, *bpe, eot]
        ids[i, : len(row)] = torch.tensor(row)
    return ids


class PromptTextEncoder(nn.Module):
    """CLIP text transformer fed with learnable context tokens (CLIPTextContextEncoder)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.num_contexts = cfg.num_contexts
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.sequence_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, act_layer=QuickGELU)
        self.ln_final = LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, cfg.embed_dim))
        causal = torch.full((cfg.sequence_length,) * 2, float("-inf")).triu_(1)
        self.register_buffer("attn_mask", causal, persistent=False)
        self._init_clip_style(cfg)

    def _init_clip_style(self, cfg: TextConfig):
        """OpenAI CLIP's text-tower initialisation (replaced by CLIP weights in practice)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        _init_clip_blocks(self.transformer)
        nn.init.normal_(self.text_projection, std=cfg.width**-0.5)

    def forward(self, token_ids: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """Encode the prompts.

        Args:
            token_ids: (K, L) ids from :func:`tokenize_names`.
            contexts: (1, n_ctx, width) learnable context vectors.

        Returns:
            (K, D) text embeddings T.
        """
        k = token_ids.shape[0]
        words = self.token_embedding(token_ids)  # (K, L, width)
        ctx = contexts.expand(k, -1, -1).to(words.dtype)  # (K, n_ctx, width)
        x = torch.cat([words[:, :1], ctx, words[:, 1:]], dim=1)  # (K, 13, width)
        x = x + self.positional_embedding.to(x.dtype)
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
        eot = token_ids.argmax(dim=-1) + self.num_contexts  # EOT has the largest id
        return x[torch.arange(k, device=x.device), eot] @ self.text_projection  # (K, D)


class PromptEncoder(nn.Module):
    """One CLIP block over the K prompt embeddings (no positional embedding, no mask) + LN.

    It keeps PyTorch's default initialisation (``nn.MultiheadAttention``: Xavier-uniform
    projections, zero biases; ``nn.Linear``: Kaiming-uniform), as the official code does: its
    prompt encoder's ``init_weights`` does nothing and no CLIP weights reach it.
    """

    def __init__(self, width: int, heads: int, layers: int = 1):
        super().__init__()
        self.transformer = Transformer(width, layers, heads, act_layer=QuickGELU)
        self.ln_final = LayerNorm(width)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """(B, K, D) -> (B, K, D); the output replaces T (no outer residual)."""
        return self.ln_final(self.transformer(text))


def _init_clip_blocks(transformer: Transformer) -> None:
    width, layers = transformer.width, transformer.layers
    attn_std = width**-0.5
    proj_std = attn_std * (2 * layers) ** -0.5
    fc_std = (2 * width) ** -0.5
    for block in transformer.resblocks:
        nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
        nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
        nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
        nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
