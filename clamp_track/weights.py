"""Finding weight files: CLIP initial weights through open_clip's hub cache.

CLIP weights (``pretrained="openai"``) are fetched and cached by open_clip's own logic (the
Hugging Face hub cache, ``~/.cache/huggingface``). Without network, a weight file that is not
cached fails at once with a message saying how to get it; set ``HF_HUB_OFFLINE=1`` to skip the
network lookup entirely.
"""

from __future__ import annotations

import logging
from pathlib import Path

from clamp_track.errors import CheckpointError

log = logging.getLogger(__name__)


def clip_weights_file(arch: str, tag: str = "openai") -> Path:
    """Path of the CLIP weights ``arch``/``tag`` (e.g. ``"RN50"``, ``"openai"``), fetched once.

    Raises:
        CheckpointError: When the weights are neither cached nor downloadable, with the URL to
            download by hand and the option to pass the file.
    """
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    cfg = get_pretrained_cfg(arch, tag)
    if not cfg:
        raise CheckpointError(f"open_clip has no pretrained weights {arch!r} with tag {tag!r}")
    try:
        path = download_pretrained(cfg)
    except Exception as exc:  # network, offline mode, hub errors: all mean "not available"
        url = cfg.get("url") or f"https://huggingface.co/{cfg.get('hf_hub', '').rstrip('/')}"
        raise CheckpointError(
            f"CLIP {arch} ({tag}) weights are not cached and could not be downloaded "
            f"({exc.__class__.__name__}); connect to the internet once so open_clip caches "
            f"them, or download {url} and pass the file with --clip-weights PATH"
        ) from None
    if not path:
        raise CheckpointError(f"open_clip returned no file for CLIP {arch} ({tag})")
    log.debug("CLIP %s (%s) weights: %s", arch, tag, path)
    return Path(path)
