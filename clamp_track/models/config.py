"""Typed hyper-parameters of the pose models.

Derived sizes (feature channels, strides, head input channels, heatmap size) are properties
computed here, never literals elsewhere. Every checkpoint clamp-track writes stores a
:class:`ModelConfig` (as plain data) so that loading it needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneConfig:
    """A CLIP image tower.

    Attributes:
        kind: ``"resnet"`` (open_clip ``ModifiedResNet``), ``"vit"`` (``VisionTransformer``) or
            ``"imagenet_resnet"`` (torchvision's ResNet, for the ImageNet SimpleBaseline).
        width: ResNet stem width (64 for RN50) or ViT token width (768 for ViT-B).
        layers: Bottleneck blocks per ResNet stage, or ``(n_blocks,)`` for a ViT.
        heads: Attention heads (of the ResNet attention pool, or of every ViT block).
        output_dim: Width D of the joint image/text space (the dense features ``F``).
        patch_size: ViT patch size.
        out_indices: ViT blocks whose token maps are returned (the last one feeds the head).
        drop_path_rate: ViT stochastic depth, linear from 0 at the first block to this value.
        image_size: Square input size the positional embeddings are stored for.
    """

    kind: Literal["resnet", "vit", "imagenet_resnet"]
    width: int
    layers: tuple[int, ...]
    heads: int
    output_dim: int
    patch_size: int = 16
    out_indices: tuple[int, ...] = ()
    drop_path_rate: float = 0.0
    image_size: int = 256

    @property
    def feature_channels(self) -> int:
        """Channels of the map concatenated with the score map (layer4 or last block)."""
        return self.width if self.kind == "vit" else self.width * 32

    @property
    def stride(self) -> int:
        """Input pixels per cell of the feature map."""
        return self.patch_size if self.kind == "vit" else 32

    @property
    def grid(self) -> int:
        """Side of the square positional-embedding grid stored in the weights."""
        return self.image_size // self.stride


@dataclass(frozen=True)
class TextConfig:
    """CLIP text transformer with CLAMP's learnable context tokens.

    Attributes:
        width: Token width (512 for CLIP RN50 / ViT-B/16).
        heads: Attention heads.
        layers: Transformer blocks.
        embed_dim: Output width after ``text_projection`` (= the image ``output_dim``).
        vocab_size: CLIP BPE vocabulary size.
        num_contexts: Learnable context tokens shared by all keypoints (8).
        name_tokens: Tokens per keypoint name including SOT and EOT (5: at most 3 BPE tokens).
    """

    width: int = 512
    heads: int = 8
    layers: int = 12
    embed_dim: int = 1024
    vocab_size: int = 49408
    num_contexts: int = 8
    name_tokens: int = 5

    @property
    def sequence_length(self) -> int:
        """Tokens per prompt: ``[SOT] V1..Vn name [EOT] pad`` (13 for CLAMP)."""
        return self.num_contexts + self.name_tokens


@dataclass(frozen=True)
class ModelConfig:
    """A complete pose-model architecture (without the keypoint set, which is separate).

    Attributes:
        arch: ``"clamp"`` or ``"simplebaseline"`` (same backbone, deconv head, no language).
        backbone: The image tower.
        text: The text tower (CLAMP only).
        head_channels: Output channels of each deconv layer of the keypoint head.
        upconv_channels: Channels of each deconv layer of CLAMP's spatial ``upconv_head``;
            ``0`` stands for "the number of keypoints" (the ViT configs use K channels).
        prompt_heads: Heads of the prompt encoder block.
        prompt_layers: Blocks of the prompt encoder.
        use_prompt_encoder: ``False`` for the "without prompt encoder" ablation.
        decoder_width: Width of the DenseCLIP context decoder.
        decoder_heads: Heads of the context decoder.
        decoder_layers: Layers of the context decoder.
        decoder_dropout: Dropout inside the context decoder.
        pose_weight: Weight of L_pose (heatmap MSE).
        spatial_weight: Weight alpha1 of L_spatial (0 disables the term and its head's use).
        feature_weight: Weight alpha2 of L_feature (0 disables the term).
        feature_loss: How L_feature is computed: ``"official"`` (the official code's
            nearest-cell loss over all keypoints, every preset) or ``"bilinear"`` (features
            sampled at the exact keypoint, visible keypoints only); see
            :mod:`clamp_track.models.losses`.
        input_size: Model input (height, width) in pixels.
        mean: Per-channel RGB mean of the input normalisation (ImageNet, as the official code).
        std: Per-channel RGB std of the input normalisation.
        heatmap_stride: Input pixels per heatmap cell (4: 256 px -> 64 cells).
    """

    arch: Literal["clamp", "simplebaseline"]
    backbone: BackboneConfig
    text: TextConfig | None = None
    head_channels: tuple[int, ...] = (256, 256, 256)
    upconv_channels: tuple[int, ...] = (256, 256, 256)
    prompt_heads: int = 8
    prompt_layers: int = 1
    use_prompt_encoder: bool = True
    decoder_width: int = 256
    decoder_heads: int = 4
    decoder_layers: int = 3
    decoder_dropout: float = 0.1
    pose_weight: float = 1.0
    spatial_weight: float = 0.4
    feature_weight: float = 0.0005
    feature_loss: Literal["official", "bilinear"] = "official"
    input_size: tuple[int, int] = (256, 256)
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    heatmap_stride: int = 4

    def __post_init__(self):
        if self.feature_loss not in ("official", "bilinear"):
            raise ValueError(f"feature_loss must be 'official' or 'bilinear', got "
                             f"{self.feature_loss!r}")
        if self.arch == "clamp" and self.text is None:
            raise ValueError("a CLAMP model needs a text config")
        if self.arch == "clamp" and self.text.embed_dim != self.backbone.output_dim:
            raise ValueError(
                f"text embed_dim {self.text.embed_dim} != image output_dim "
                f"{self.backbone.output_dim}"
            )
        upsample = 2 ** len(self.head_channels)
        if self.backbone.stride != self.heatmap_stride * upsample:
            raise ValueError(
                f"{len(self.head_channels)} deconvs turn stride {self.backbone.stride} into "
                f"{self.backbone.stride // upsample}, not the heatmap stride {self.heatmap_stride}"
            )

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """Heatmap (height, width) for :attr:`input_size`."""
        h, w = self.input_size
        return h // self.heatmap_stride, w // self.heatmap_stride
