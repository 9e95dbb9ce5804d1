"""The CLAMP pose model and its SimpleBaseline counterpart.

CLAMP (CVPR 2023): a CLIP image tower gives the feature map and dense projected features ``F``;
keypoint-name prompts through the CLIP text tower and the prompt encoder give T; the context
decoder adapts them to the image, ``P = T + gamma * decoder(T, [g; F])``; the cosine score map
``S = <F / |F|, P / |P|>`` is concatenated with the feature map and a deconv head predicts the
heatmaps. In training, a second head (``upconv_head``) upsamples S for L_spatial, and P with F
at the keypoints gives L_feature.

The SimpleBaseline has the same image tower and deconv head and no language parts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clamp_track.models.backbones import build_backbone
from clamp_track.models.config import ModelConfig
from clamp_track.models.context_decoder import ContextDecoder
from clamp_track.models.heads import DeconvHead
from clamp_track.models.losses import pose_losses
from clamp_track.models.text import PromptEncoder, PromptTextEncoder, tokenize_names
from clamp_track.skeleton import KeypointSet


class PoseModel(nn.Module):
    """What every pose model shares: its config, keypoint set and loss computation."""

    config: ModelConfig
    keypoints: KeypointSet

    def loss(self, outputs: dict, targets, target_weights, keypoints=None, visible=None) -> dict:
        """Weighted loss terms and ``total`` for a training forward (see ``pose_losses``)."""
        return pose_losses(
            self.config, outputs, targets, target_weights, keypoints,
            getattr(self, "logit_scale", None), visible,
        )

    @property
    def num_keypoints(self) -> int:
        """Number of keypoints K."""
        return self.keypoints.num_keypoints


class Clamp(PoseModel):
    """CLAMP: language-prompted top-down pose estimation on CLIP.

    Args:
        cfg: Architecture (``cfg.arch == "clamp"``).
        keypoints: The keypoint set; its ``names`` are the text prompts.
    """

    def __init__(self, cfg: ModelConfig, keypoints: KeypointSet):
        super().__init__()
        self.config, self.keypoints = cfg, keypoints
        k, bb, text = keypoints.num_keypoints, cfg.backbone, cfg.text
        d = bb.output_dim
        self.backbone = build_backbone(bb, dense=True)
        self.text_encoder = PromptTextEncoder(text)
        # Frozen: never updated, but gradients still flow through it into `contexts`.
        self.text_encoder.requires_grad_(False)
        self.prompt_encoder = None
        if cfg.use_prompt_encoder:
            self.prompt_encoder = PromptEncoder(d, cfg.prompt_heads, cfg.prompt_layers)
        self.context_decoder = ContextDecoder(
            d, cfg.decoder_width, cfg.decoder_heads, cfg.decoder_layers, cfg.decoder_dropout
        )
        self.keypoint_head = DeconvHead(bb.feature_channels + k, cfg.head_channels, k)
        upconv = tuple(c or k for c in cfg.upconv_channels)
        self.upconv_head = DeconvHead(k, upconv, k, init_std=None)
        self.contexts = nn.Parameter(torch.empty(1, text.num_contexts, text.width))
        nn.init.trunc_normal_(self.contexts, mean=0.0, std=1.0, a=-2.0, b=2.0)
        self.gamma = nn.Parameter(torch.full((d,), 1e-3))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.register_buffer(
            "token_ids", tokenize_names(keypoints.names, text.name_tokens), persistent=False
        )
        self._text_cache = None

    def encode_text(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the text side: ``(T, T')``, the (K, D) text-encoder and prompt-encoder outputs."""
        t = self.text_encoder(self.token_ids, self.contexts)  # (K, D)
        if self.prompt_encoder is None:
            return t, t
        return t, self.prompt_encoder(t[None])[0]  # (K, D)

    def text_embeddings(self) -> torch.Tensor:
        """The (K, D) prompts after the prompt encoder, cached while they cannot change.

        Without autograd (inference) the result is cached; the cache key holds the version
        counters of every text-side parameter, so an optimizer step, ``load_state_dict`` or any
        in-place edit of the prompts invalidates it, as do device, dtype and autocast changes.
        With autograd enabled it is always recomputed so gradients reach ``contexts``.
        """
        if torch.is_grad_enabled():
            return self.encode_text()[1]
        key = self._text_cache_key()
        if self._text_cache is None or self._text_cache[0] != key:
            self._text_cache = (key, self.encode_text()[1])
        return self._text_cache[1]

    def _text_cache_key(self) -> tuple:
        params = [self.contexts, *self.text_encoder.parameters()]
        if self.prompt_encoder is not None:
            params += list(self.prompt_encoder.parameters())
        device = self.contexts.device
        autocast = torch.is_autocast_enabled(device.type)
        return (device, self.contexts.dtype, autocast, id(self.token_ids),
                tuple(p._version for p in params))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict heatmaps for a batch of crops.

        Args:
            images: (B, 3, H, W) crops normalised with ``config.mean``/``config.std``.

        Returns:
            Dict with ``heatmaps`` (B, K, H/4, W/4), ``score_map`` S (B, K, h, w),
            ``prompt_embeddings`` P (B, K, D), ``dense_features`` F (B, D, h, w),
            ``global_embedding`` (B, D), ``text_embeddings`` (K, D) and, in training mode,
            ``spatial_heatmaps`` (B, K, H/4, W/4) from the ``upconv_head``.
        """
        out = self.backbone(images)
        g, dense = out.global_embedding, out.dense  # (B, D), (B, D, h, w)
        b = images.shape[0]
        text = self.text_embeddings()  # (K, D)
        prompts = text.to(dense.dtype).unsqueeze(0).expand(b, -1, -1)  # (B, K, D)
        memory = torch.cat([g[:, None], dense.flatten(2).transpose(1, 2)], dim=1)  # (B, 1+hw, D)
        prompts = prompts + self.gamma * self.context_decoder(prompts, memory)  # P (B, K, D)
        score = torch.einsum(
            "bchw,bkc->bkhw", F.normalize(dense, dim=1), F.normalize(prompts, dim=2)
        )  # S (B, K, h, w)
        heatmaps = self.keypoint_head.forward_parts(out.features[-1], score)  # of [layer4; S]
        result = {
            "heatmaps": heatmaps,
            "score_map": score,
            "prompt_embeddings": prompts,
            "dense_features": dense,
            "global_embedding": g,
            "text_embeddings": text,
        }
        if self.training:
            result["spatial_heatmaps"] = self.upconv_head(score)
        return result


class SimpleBaseline(PoseModel):
    """SimpleBaseline on a CLIP tower: feature map -> deconv head, no language parts."""

    def __init__(self, cfg: ModelConfig, keypoints: KeypointSet):
        super().__init__()
        self.config, self.keypoints = cfg, keypoints
        self.backbone = build_backbone(cfg.backbone, dense=False)
        k = keypoints.num_keypoints
        self.keypoint_head = DeconvHead(cfg.backbone.feature_channels, cfg.head_channels, k)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) normalised crops -> ``{"heatmaps": (B, K, H/4, W/4)}``."""
        return {"heatmaps": self.keypoint_head(self.backbone(images).features[-1])}


def build_model(cfg: ModelConfig, keypoints: KeypointSet) -> PoseModel:
    """Build a randomly initialised model of architecture ``cfg`` for ``keypoints``."""
    cls = {"clamp": Clamp, "simplebaseline": SimpleBaseline}[cfg.arch]
    return cls(cfg, keypoints)
