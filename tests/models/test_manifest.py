"""Full-size RN50 / ViT-B/16 CLAMP: every official key maps onto our model, and vice versa.

The manifests list the state_dict of the official models built from the official configs.
"""

from __future__ import annotations

import json

import pytest
import torch

from clamp_track.models import create_model
from clamp_track.models.checkpoint import OFFICIAL_UNUSED, from_official

# Official entries the official model never uses, so ours has no parameter for them.
DELIBERATE_EXCEPTIONS = set(OFFICIAL_UNUSED)


@pytest.mark.parametrize(
    ("manifest", "variant"),
    [("full_rn50_key_manifest.json", "clamp_rn50"),
     ("full_vitb16_key_manifest.json", "clamp_vitb16")],
)
def test_official_keys_map_onto_our_model(golden_dir, manifest, variant):
    entries = json.loads((golden_dir / manifest).read_text())["keys"]
    official = {e["key"]: tuple(e["shape"]) for e in entries}
    ours = {k: tuple(v.shape) for k, v in create_model(variant).state_dict().items()}

    unmatched = {k for k in official if k not in ours} - DELIBERATE_EXCEPTIONS
    assert not unmatched, f"official keys without a parameter of ours: {sorted(unmatched)[:5]}"
    wrong = {k: (official[k], ours[k]) for k in official if k in ours and official[k] != ours[k]}
    assert not wrong, f"shape mismatches: {list(wrong.items())[:5]}"
    unfed = set(ours) - set(official)
    assert not unfed, f"our parameters fed by no official key: {sorted(unfed)[:5]}"
    assert DELIBERATE_EXCEPTIONS <= set(official)

    # The converter recognises the variant from the shapes alone.
    fake = {k: torch.empty(s, device="meta") for k, s in official.items()}
    assert from_official(fake).variant == variant
