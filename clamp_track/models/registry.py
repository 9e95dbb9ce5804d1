"""Named model variants: a dict from name to :class:`ModelConfig`.

Full-size variants follow the official configs (``CLAMP_res50_ap10k_256x256.py``,
``CLAMP_ViTB_ap10k_256x256.py``); the tiny variants have the hyper-parameters of the golden
reference models in ``shared/golden/README.md`` and are what fast tests build.
"""

from __future__ import annotations

from dataclasses import replace

from clamp_track.models.config import BackboneConfig, ModelConfig, TextConfig

RN50 = BackboneConfig(kind="resnet", width=64, layers=(3, 4, 6, 3), heads=32, output_dim=1024)
VITB16 = BackboneConfig(
    kind="vit", width=768, layers=(12,), heads=12, output_dim=512, patch_size=16,
    out_indices=(3, 5, 7, 11), drop_path_rate=0.4,
)
TINY_RN = BackboneConfig(kind="resnet", width=8, layers=(2, 2, 2, 2), heads=32, output_dim=128)
TINY_VIT = BackboneConfig(
    kind="vit", width=64, layers=(4,), heads=2, output_dim=64, patch_size=16,
    out_indices=(0, 1, 2, 3), drop_path_rate=0.4,
)

_CLAMP_RN50 = ModelConfig(
    arch="clamp", backbone=RN50, text=TextConfig(embed_dim=1024),
    head_channels=(256, 256, 256), upconv_channels=(256, 256, 256), spatial_weight=0.4,
)
_CLAMP_VITB16 = ModelConfig(
    arch="clamp", backbone=VITB16, text=TextConfig(embed_dim=512),
    head_channels=(256, 256), upconv_channels=(0, 0), spatial_weight=2.0,
)
_TINY_TEXT = TextConfig(width=64, heads=2, layers=2)

VARIANTS: dict[str, ModelConfig] = {
    "clamp_rn50": _CLAMP_RN50,
    "clamp_vitb16": _CLAMP_VITB16,
    "simplebaseline_rn50": replace(
        _CLAMP_RN50, arch="simplebaseline", text=None, spatial_weight=0.0, feature_weight=0.0
    ),
    "simplebaseline_vitb16": replace(
        _CLAMP_VITB16, arch="simplebaseline", text=None, spatial_weight=0.0, feature_weight=0.0
    ),
    "clamp_tiny_rn50": replace(
        _CLAMP_RN50, backbone=TINY_RN, text=replace(_TINY_TEXT, embed_dim=128),
        decoder_width=32, head_channels=(16, 16, 16), upconv_channels=(16, 16, 16),
    ),
    "clamp_tiny_vitb16": replace(
        _CLAMP_VITB16, backbone=TINY_VIT, text=replace(_TINY_TEXT, embed_dim=64),
        decoder_width=32, head_channels=(16, 16), upconv_channels=(0, 0),
    ),
}
VARIANTS["simplebaseline_rn50_imagenet"] = replace(
    VARIANTS["simplebaseline_rn50"],
    backbone=BackboneConfig(kind="imagenet_resnet", width=64, layers=(3, 4, 6, 3), heads=0,
                            output_dim=0),
)
VARIANTS["simplebaseline_tiny_rn50"] = replace(
    VARIANTS["clamp_tiny_rn50"], arch="simplebaseline", text=None, spatial_weight=0.0,
    feature_weight=0.0,
)

#: The CLIP model each CLIP backbone is initialised from (open_clip names).
CLIP_ARCH = {"resnet": "RN50", "vit": "ViT-B-16"}


def list_models() -> list[str]:
    """Names of all registered variants."""
    return sorted(VARIANTS)


def get_config(name: str) -> ModelConfig:
    """The config of a registered variant; unknown names list the known ones."""
    from clamp_track.errors import ClampTrackError

    try:
        return VARIANTS[name]
    except KeyError:
        raise ClampTrackError(
            f"unknown model {name!r}; known models: {', '.join(list_models())}"
        ) from None


def variant_name(cfg: ModelConfig) -> str | None:
    """The registered name of ``cfg``, or None for a custom architecture."""
    return next((n for n, c in VARIANTS.items() if c == cfg), None)
