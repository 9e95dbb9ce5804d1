"""Finding weight files: a small registry of named weights and a cache directory.

* Pose weights by name: ``clamp-track weights fetch clamp-official`` downloads the official
  CLAMP release once, converts every checkpoint in it to clamp-track's format and keeps the
  results in the cache (``$CLAMP_TRACK_CACHE``, default ``~/.cache/clamp-track``); afterwards
  ``--pose-weights <stem>`` finds them by name.
* CLIP initial weights (``pretrained="openai"``) are fetched and cached by open_clip's own
  logic (the Hugging Face hub cache).
* Detector weights are fetched and cached by torchvision (the torch hub cache); MegaDetector's
  are single files fetched by :func:`fetch_file` into ``<cache>/detector`` (with a progress bar),
  checked against the registry's checksum and, from then on, against the SHA-256 recorded at
  the first fetch.

Without network, anything not cached fails at once with a message saying what to download and
where to put it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from clamp_track.errors import CheckpointError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsEntry:
    """A named, downloadable set of weights.

    Attributes:
        name: Registry name.
        kind: ``"pose"``, ``"clip"`` or ``"detector"``.
        description: One line for ``weights list``.
        url: Where it comes from (for pose archives and single files, a direct download URL).
        source: Human-readable provenance.
        file: For a single file fetched by :func:`fetch_file`: its name in the cache.
        md5: Its MD5 as the publisher lists it (Zenodo does), when known.
        sha256: Its SHA-256, when known.
        licence: Licence of the weights.
    """

    name: str
    kind: str
    description: str
    url: str
    source: str
    file: str | None = None
    md5: str | None = None
    sha256: str | None = None
    licence: str | None = None


_GDRIVE = "https://drive.usercontent.google.com/download?id={}&export=download&confirm=t"
_ZENODO_MD6 = "https://zenodo.org/records/15398270/files/{}?download=1"

REGISTRY: dict[str, WeightsEntry] = {
    e.name: e
    for e in (
        WeightsEntry(
            "clamp-official", "pose",
            "official CLAMP checkpoints (AP-10K / Animal-Pose, RN50 / ViT-B), converted on fetch",
            _GDRIVE.format("1ep5WExRnN51n1w-0mg7Lxv-1vJahcECM"),
            "github.com/xuzhang1199/CLAMP README, 'Main Results' Google Drive link",
        ),
        WeightsEntry("clip-rn50", "clip", "OpenAI CLIP RN50 (initialises clamp_rn50 training)",
                     "open_clip RN50/openai", "open_clip pretrained registry"),
        WeightsEntry("clip-vitb16", "clip",
                     "OpenAI CLIP ViT-B/16 (initialises clamp_vitb16 training)",
                     "open_clip ViT-B-16/openai", "open_clip pretrained registry"),
        WeightsEntry("fasterrcnn_mobilenet_v3_large_fpn", "detector",
                     "COCO Faster R-CNN MobileNetV3 (fast animal detector)",
                     "torchvision FasterRCNN_MobileNet_V3_Large_FPN_Weights.DEFAULT",
                     "torchvision model zoo"),
        WeightsEntry("fasterrcnn_resnet50_fpn_v2", "detector",
                     "COCO Faster R-CNN ResNet-50 v2 (accurate animal detector)",
                     "torchvision FasterRCNN_ResNet50_FPN_V2_Weights.DEFAULT",
                     "torchvision model zoo"),
        # MegaDetector v6, MIT weights (Zenodo record 15398270, as PytorchWildlife 1.3.0 fetches
        # them). The MD5 of the compact file is the one Zenodo lists, as quoted by a project
        # that checks it before loading; the extra file's is not known here, so its SHA-256 is
        # recorded at the first fetch and checked from then on.
        WeightsEntry("MDV6-mit-yolov9-c", "detector",
                     "MegaDetector v6 compact, MIT YOLOv9 (animal/person/vehicle)",
                     _ZENODO_MD6.format("MDV6-mit-yolov9-c.ckpt"), "zenodo.org/records/15398270",
                     file="MDV6-mit-yolov9-c.ckpt", md5="d8626ba22fccbd9c520e0deb19d721f7",
                     licence="MIT"),
        WeightsEntry("MDV6-mit-yolov9-e", "detector",
                     "MegaDetector v6 extra, MIT YOLOv9 (animal/person/vehicle)",
                     _ZENODO_MD6.format("MDV6-mit-yolov9-e.ckpt"), "zenodo.org/records/15398270",
                     file="MDV6-mit-yolov9-e.ckpt", licence="MIT"),
        # MegaDetector v6, Apache-2.0 RT-DETRv2 weights: same Zenodo record, the URLs and file
        # names PytorchWildlife's MegaDetectorV6Apache fetches (microsoft/CameraTraps @ 4077ae2,
        # rtdetr_apache/megadetectorv6_apache.py). No checksum is known here: the SHA-256 is
        # recorded at the first fetch and checked from then on.
        WeightsEntry("MDV6-apa-rtdetr-c", "detector",
                     "MegaDetector v6 compact, Apache RT-DETRv2 R18vd (animal/person/vehicle)",
                     _ZENODO_MD6.format("MDV6-apa-rtdetr-c.pth"), "zenodo.org/records/15398270",
                     file="MDV6-apa-rtdetr-c.pth", licence="Apache-2.0"),
        WeightsEntry("MDV6-apa-rtdetr-e", "detector",
                     "MegaDetector v6 extra, Apache RT-DETRv2 R101vd (animal/person/vehicle)",
                     _ZENODO_MD6.format("MDV6-apa-rtdetr-e.pth"), "zenodo.org/records/15398270",
                     file="MDV6-apa-rtdetr-e.pth", licence="Apache-2.0"),
        # MegaDetector v5a: URL and MD5 as the megadetector package 10.0.28 lists them
        # (run_detector.py, known_models['v5a.0.0']).
        WeightsEntry("MDv5a", "detector", "MegaDetector v5a, YOLOv5x6 (animal/person/vehicle)",
                     "https://github.com/agentmorris/MegaDetector/releases/download/v5.0/"
                     "md_v5a.0.0.pt", "github.com/agentmorris/MegaDetector release v5.0",
                     file="md_v5a.0.0.pt", md5="ec1d7603ec8cf642d6e0cd008ba2be8c",
                     licence="no restrictions by its developers (trained with GPL-3.0 yolov5); "
                     "PytorchWildlife's model zoo lists AGPL-3.0"),
    )
}


def cache_dir() -> Path:
    """clamp-track's weight cache (``$CLAMP_TRACK_CACHE`` or ``~/.cache/clamp-track``)."""
    root = os.environ.get("CLAMP_TRACK_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "clamp-track"


def cached_pose_weights() -> dict[str, Path]:
    """Converted pose checkpoints in the cache, by name (file stem)."""
    folder = cache_dir() / "pose"
    return {p.stem: p for p in sorted(folder.glob("*.pt"))} if folder.is_dir() else {}


def _index_path() -> Path:
    return cache_dir() / "pose" / "index.json"


def pose_weights_index() -> dict[str, dict]:
    """What the cached pose checkpoints are: ``{name: {"variant", "keypoints"}}``.

    Files put into the cache by hand (e.g. ``weights convert ... -o CACHE/pose/NAME.pt``) are
    described from their own metadata and added.
    """
    import json

    try:
        index = json.loads(_index_path().read_text())
    except (OSError, ValueError):
        index = {}
    cached = cached_pose_weights()
    index = {name: entry for name, entry in index.items() if name in cached}
    for name in sorted(set(cached) - set(index)):
        entry = _describe(cached[name])
        if entry is not None:
            _add_to_index(name, entry["variant"], entry["keypoints"])
            index[name] = entry
    return index


def _describe(path: Path) -> dict | None:
    """Variant and keypoint set of a clamp-track checkpoint, read without loading its weights."""
    import torch

    try:
        meta = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["clamp_track"]
        return {"variant": meta["variant"], "keypoints": meta["keypoints"]["name"]}
    except Exception:  # noqa: BLE001 - not a clamp-track checkpoint: not usable by name
        log.warning("%s is not a clamp-track checkpoint; ignored", path)
        return None


def default_pose_weights(variant: str, keypoints: str = "ap10k") -> Path:
    """The cached official checkpoint for ``variant`` (fetched once if online).

    Raises:
        CheckpointError: When none is cached and the release cannot be downloaded.
    """
    def find():
        for name, entry in sorted(pose_weights_index().items()):
            if entry.get("variant") == variant and entry.get("keypoints") == keypoints:
                return cached_pose_weights()[name]
        return None

    path = find()
    if path is None:
        log.info("no cached %s weights for %s: fetching the official CLAMP release", variant,
                 keypoints)
        try:
            fetch("clamp-official")
        except CheckpointError as exc:
            raise CheckpointError(
                f"no {variant} weights for {keypoints} in {cache_dir() / 'pose'} and the "
                f"official release could not be fetched ({exc}); pass --pose-weights FILE "
                "(or --pose-weights none for an untrained model)"
            ) from None
        path = find()
    if path is None:
        raise CheckpointError(f"the official CLAMP release has no {variant} weights for "
                              f"{keypoints}; pass --pose-weights FILE")
    return path


def resolve_pose_weights(spec: str | os.PathLike, variant: str | None = None) -> Path:
    """A pose-weights path, cached name or ``"auto"`` -> the file to load.

    Args:
        spec: A checkpoint file, the name of a cached checkpoint, or ``"auto"`` (the official
            AP-10K weights of ``variant``).
        variant: Model variant, for ``"auto"``.

    Raises:
        CheckpointError: For a name that is neither a file nor cached, saying how to fetch it.
    """
    if str(spec) == "auto":
        return default_pose_weights(variant or "clamp_rn50")
    path = Path(spec)
    if path.is_file():
        return path
    cached = cached_pose_weights()
    if str(spec) in cached:
        return cached[str(spec)]
    if path.suffix in (".pt", ".pth") or os.sep in str(spec):
        raise CheckpointError(f"{spec}: weights file not found")
    known = ", ".join(sorted(cached)) or "none yet"
    raise CheckpointError(
        f"pose weights {spec!r} are not a file and not in the cache {cache_dir() / 'pose'} "
        f"(cached: {known}); run `clamp-track weights fetch clamp-official` once with internet, "
        "or pass the path of a checkpoint"
    )


def fetch(name: str) -> list[Path]:
    """Download (once) the named weights; returns the usable files."""
    entry = REGISTRY.get(name)
    if entry is None:
        raise CheckpointError(f"unknown weights {name!r}; known: {', '.join(sorted(REGISTRY))}")
    if entry.kind == "clip":
        arch = {"clip-rn50": "RN50", "clip-vitb16": "ViT-B-16"}[name]
        return [clip_weights_file(arch, "openai")]
    if entry.file:
        return [fetch_file(name)]
    if entry.kind == "detector":
        return [_fetch_torchvision(name)]
    return fetch_pose_archive(entry.url, name)


def fetch_pose_archive(url: str, name: str) -> list[Path]:
    """Download a checkpoint or an archive of checkpoints and convert each one into the cache.

    Official (mmpose) checkpoints are converted to clamp-track checkpoints named after their
    file stem; clamp-track checkpoints are copied.
    """
    from clamp_track.models import create_model, load_checkpoint, save_checkpoint

    out_dir = cache_dir() / "pose"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        download = Path(tmp) / "download"
        _download(url, download, name)
        files = _unpack(download, Path(tmp) / "unpacked")
        written = []
        for file in files:
            ckpt = load_checkpoint(file)
            model = create_model(ckpt.variant, weights=file)
            target = out_dir / f"{file.stem}.pt"
            save_checkpoint(model, target, origin=ckpt.source,
                            extra={"fetched_from": url, "file": file.name})
            log.info("%s -> %s (%s, %s)", file.name, target, ckpt.variant, ckpt.keypoints.name)
            _add_to_index(target.stem, ckpt.variant, ckpt.keypoints.name)
            written.append(target)
    if not written:
        raise CheckpointError(f"{url}: the download holds no checkpoints (.pth/.pt)")
    return written


def _add_to_index(name: str, variant: str | None, keypoints: str) -> None:
    import json

    from clamp_track.config import atomic_write_text

    try:
        index = json.loads(_index_path().read_text())
    except (OSError, ValueError):
        index = {}
    index[name] = {"variant": variant, "keypoints": keypoints}
    atomic_write_text(_index_path(), json.dumps(index, indent=1, sort_keys=True))


def _download(url: str, target: Path, name: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except OSError as exc:
        raise CheckpointError(
            f"cannot download {name} ({exc.__class__.__name__}: {exc}); download {url} by hand "
            f"and convert it with `clamp-track weights convert FILE -o "
            f"{cache_dir() / 'pose' / 'NAME.pt'}`"
        ) from None


def _unpack(download: Path, folder: Path) -> list[Path]:
    folder.mkdir()
    if zipfile.is_zipfile(download) and not _is_torch_zip(download):
        with zipfile.ZipFile(download) as z:
            z.extractall(folder)
    elif tarfile.is_tarfile(download):
        with tarfile.open(download) as t:
            t.extractall(folder, filter="data")
    else:
        return [download.rename(folder / "checkpoint.pth")]
    return sorted(p for p in folder.rglob("*") if p.suffix in (".pth", ".pt") and p.is_file())


def _is_torch_zip(path: Path) -> bool:
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("data.pkl") for n in z.namelist())


def imagenet_resnet_file() -> Path:
    """The ImageNet ResNet-50 weights, fetched once into the torch hub cache.

    torchvision's ``IMAGENET1K_V1``, which is what mmpose's ``torchvision://resnet50`` is.
    """
    import torch
    import torchvision

    url = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not path.is_file():
        try:
            torch.hub.download_url_to_file(url, str(path), progress=True)
        except OSError as exc:
            raise CheckpointError(
                f"cannot download the ImageNet ResNet-50 weights ({exc.__class__.__name__}); "
                f"download {url} and put it at {path}"
            ) from None
    return path


def is_offline() -> bool:
    """Whether the user asked for no downloads (``HF_HUB_OFFLINE=1``, as the tests set)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _digest(path: Path, algorithm: str) -> str:
    import hashlib

    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_file(path: Path, entry: WeightsEntry) -> None:
    """Compare ``path`` with the registry's checksums and the SHA-256 recorded at first fetch."""
    sidecar = path.with_name(path.name + ".sha256")
    expected = [("sha256", entry.sha256), ("md5", entry.md5)]
    if sidecar.is_file():
        expected.append(("sha256", sidecar.read_text().split()[0]))
    for algorithm, value in expected:
        if value and _digest(path, algorithm) != value.lower():
            raise CheckpointError(
                f"{path}: {algorithm} does not match {entry.name}'s ({value}); the file is "
                f"damaged or another one: delete it and fetch it again ({entry.url})")


def fetch_file(name: str) -> Path:
    """The single weights file ``name`` of the registry, fetched once and checked.

    Downloaded with a progress bar into ``<cache>/detector``, checksum-checked, then reused.

    Raises:
        CheckpointError: Unknown name; offline or the download failed (one line with the URL
            and where to put the file); a checksum mismatch.
    """
    from clamp_track.config import atomic_write_text

    entry = REGISTRY.get(name)
    if entry is None or not entry.file:
        known = sorted(n for n, e in REGISTRY.items() if e.file)
        raise CheckpointError(f"unknown weights file {name!r}; known: {', '.join(known)}")
    target = cache_dir() / "detector" / entry.file
    if not target.is_file():
        where = f"download {entry.url} and put it at {target}"
        if is_offline():
            raise CheckpointError(f"{entry.name} weights are not cached and downloads are off "
                                  f"(HF_HUB_OFFLINE): {where}")
        import torch

        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s (%s) to %s", entry.name, entry.licence or "?", target)
        try:  # writes a temporary file and renames it when complete
            torch.hub.download_url_to_file(entry.url, str(target), progress=True)
        except (OSError, RuntimeError) as exc:
            raise CheckpointError(f"cannot download {entry.name} ({exc.__class__.__name__}: "
                                  f"{str(exc)[:80]}); {where}") from None
        try:
            _check_file(target, entry)
        except CheckpointError:
            target.unlink(missing_ok=True)
            raise
        atomic_write_text(target.with_name(target.name + ".sha256"),
                          f"{_digest(target, 'sha256')}  {entry.file}\n")
        return target
    _check_file(target, entry)
    return target


def _fetch_torchvision(name: str) -> Path:
    import torch
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        weights.get_state_dict(progress=True)
    except OSError as exc:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        raise CheckpointError(
            f"cannot download {name} ({exc.__class__.__name__}); download {weights.url} and "
            f"put it in {hub}"
        ) from None
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


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
