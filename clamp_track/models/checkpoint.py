"""Reading, checking, converting and writing pose-model checkpoints.

Three kinds of file are recognised from their contents:

* **clamp-track** checkpoints: ``{"clamp_track": meta, "state_dict": ...}`` where ``meta`` holds
  the variant, the full :class:`ModelConfig`, the keypoint set, input size and normalisation;
* **official CLAMP** (mmpose) checkpoints: ``{"state_dict": ..., "meta": ...}`` with ``backbone.``,
  ``text_encoder.``, ... keys (``clamp-model-spec.md`` §5). Their parameter names are already
  ours; the three unused entries are dropped and the variant is found by matching the tensor
  shapes against the registered variants;
* CLIP weight files, which are refused here with a pointer to ``clip_weights``.

Every problem (missing, truncated, not a checkpoint, wrong variant, wrong keypoint count)
raises :class:`~clamp_track.errors.CheckpointError` naming the file and the mismatch.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from clamp_track import __version__
from clamp_track.config import from_dict, temp_beside, to_dict
from clamp_track.errors import CheckpointError
from clamp_track.models.config import ModelConfig
from clamp_track.models.registry import VARIANTS, variant_name
from clamp_track.skeleton import ANIMALPOSE, AP10K, KeypointSet

FORMAT_VERSION = 1

#: Official-checkpoint entries that the official model never uses.
OFFICIAL_UNUSED = ("text_projection", "prompt_encoder.positional_embedding",
                   "prompt_encoder.text_projection")


@dataclass
class Checkpoint:
    """A loaded checkpoint, whatever its origin.

    Attributes:
        path: The file it came from.
        config: Model architecture.
        keypoints: Keypoint set the heads were trained for.
        state_dict: Parameters and buffers under our names.
        variant: Registered variant name, or None for a custom architecture.
        source: ``"clamp-track"`` or ``"official"``.
        extra: Anything else stored with it (training state, notes).
    """

    path: Path | None
    config: ModelConfig
    keypoints: KeypointSet
    state_dict: dict
    variant: str | None
    source: str
    extra: dict


def read_file(path: str | os.PathLike, trust: bool = False):
    """``torch.load`` a checkpoint safely, with clear errors.

    Only tensors, plain data and numpy scalars/arrays are unpickled (mmpose checkpoints keep
    numpy values in their ``meta``); anything else needs ``trust=True`` (arbitrary code can run
    when unpickling, so only for files from a source you trust).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty; re-download or re-convert it")
    if _is_torchscript(path):
        raise CheckpointError(
            f"{path}: this is a TorchScript (CLIP) file, not pose weights; "
            "pass it as clip_weights (--clip-weights) instead"
        )
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(
            f"{path}: truncated or corrupt checkpoint ({exc}); re-download or re-convert it"
        ) from None
    except pickle.UnpicklingError as exc:
        # only a file that names Python classes can be loaded with trust; random or damaged
        # bytes ("Unsupported operand") cannot
        if "weights only" in str(exc).lower() and "global" in str(exc).lower() and not trust:
            raise CheckpointError(
                f"{path}: holds Python objects other than weights; if you trust its source, "
                "convert it with `clamp-track weights convert --trust FILE -o OUT.pt`"
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (its contents are not "
                              "readable pickle data); pass a checkpoint file") from None
    except RuntimeError as exc:
        if "zip" in str(exc).lower() or "archive" in str(exc).lower():
            raise CheckpointError(
                f"{path}: truncated or corrupt checkpoint; re-download or re-convert it"
            ) from None
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({exc})") from None
    except Exception as exc:  # pickle errors of non-checkpoint files
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint ({exc.__class__.__name__}: {str(exc)[:120]})"
        ) from None


def _numpy_globals() -> list:
    """Numpy types that may appear in checkpoint metadata and are safe to rebuild."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    kinds = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
             "float16", "float32", "float64", "complex64", "complex128", "str", "bytes", "object")
    dtypes = [type(np.dtype(kind)) for kind in kinds]
    return [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype, *dtypes]


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def load_checkpoint(path: str | os.PathLike, keypoints: KeypointSet | None = None,
                    trust: bool = False) -> Checkpoint:
    """Read any supported checkpoint into a :class:`Checkpoint`.

    Args:
        path: File path.
        keypoints: Keypoint set for official checkpoints (default: AP-10K for 17 keypoints,
            Animal-Pose for 20); ignored for clamp-track checkpoints, which carry theirs.
        trust: Unpickle any Python object in the file (see :func:`read_file`).
    """
    path = Path(path)
    data = read_file(path, trust)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a checkpoint (a {type(data).__name__}, not a dict)")
    if "clamp_track" in data:
        return _from_ours(path, data)
    state = data.get("state_dict", data)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a checkpoint (no state_dict of tensors)")
    if any(k.startswith("visual.") for k in state):
        raise CheckpointError(
            f"{path}: these are CLIP weights, not pose weights; pass them as "
            "clip_weights (--clip-weights) to initialise a model"
        )
    if any(k.startswith("backbone.") for k in state) and any(
        k.startswith("keypoint_head.") for k in state
    ):
        return from_official(state, path, keypoints)
    raise CheckpointError(
        f"{path}: not a clamp-track or official CLAMP checkpoint (keys like "
        f"{sorted(state)[:3]})"
    )


def _from_ours(path: Path, data: dict) -> Checkpoint:
    meta = data["clamp_track"]
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is not supported by clamp-track "
            f"{__version__} (expects {FORMAT_VERSION}); upgrade clamp-track"
        )
    try:
        config = from_dict(ModelConfig, meta["model_config"], source=str(path))
        keypoints = KeypointSet.from_dict(meta["keypoints"])
        state = data["state_dict"]
    except KeyError as exc:
        raise CheckpointError(f"{path}: incomplete clamp-track checkpoint (no {exc})") from None
    return Checkpoint(path, config, keypoints, state, meta.get("variant"), "clamp-track",
                      meta.get("extra", {}))


def from_official(state: dict, path=None, keypoints: KeypointSet | None = None) -> Checkpoint:
    """Convert an official CLAMP (mmpose) state dict: drop unused keys, find the variant."""
    state = {k: v for k, v in state.items() if k not in OFFICIAL_UNUSED}
    k = state["keypoint_head.final_layer.weight"].shape[0]
    if keypoints is None:
        keypoints = {17: AP10K, 20: ANIMALPOSE}.get(k)
        if keypoints is None:
            raise CheckpointError(
                f"{path}: official checkpoint for {k} keypoints; say which keypoint set it is "
                "(--keypoints FILE)"
            )
    elif keypoints.num_keypoints != k:
        raise CheckpointError(
            f"{path}: the checkpoint predicts {k} keypoints but the keypoint set "
            f"{keypoints.name!r} has {keypoints.num_keypoints}"
        )
    arch = "clamp" if "contexts" in state else "simplebaseline"
    candidates = [n for n, c in VARIANTS.items() if c.arch == arch]
    for name in candidates:
        if not shape_mismatches(VARIANTS[name], keypoints, state):
            return Checkpoint(path, VARIANTS[name], keypoints, state, name, "official", {})
    raise CheckpointError(
        f"{path}: the tensor shapes match none of the known {arch} variants "
        f"({', '.join(candidates)})"
    )


def expected_shapes(config: ModelConfig, keypoints: KeypointSet) -> dict[str, tuple]:
    """State-dict key -> shape of a model, computed without allocating it (meta device)."""
    from clamp_track.models.clamp import build_model

    with torch.device("meta"):
        model = build_model(config, keypoints)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def shape_mismatches(config: ModelConfig, keypoints: KeypointSet, state: dict) -> list[str]:
    """Human-readable differences between ``state`` and a model's expected keys/shapes."""
    expected = expected_shapes(config, keypoints)
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    for key, shape in expected.items():
        if key in state and tuple(state[key].shape) != shape:
            problems.append(f"{key} has shape {tuple(state[key].shape)}, the model needs {shape}")
    return problems


def check_fits(ckpt: Checkpoint, config: ModelConfig, keypoints: KeypointSet, name: str) -> None:
    """Raise a clear error if ``ckpt`` cannot be loaded into model ``name``."""
    where = ckpt.path or "checkpoint"
    if ckpt.keypoints.num_keypoints != keypoints.num_keypoints:
        raise CheckpointError(
            f"{where}: weights for {ckpt.keypoints.num_keypoints} keypoints "
            f"({ckpt.keypoints.name}), but the model has {keypoints.num_keypoints} "
            f"({keypoints.name})"
        )
    problems = shape_mismatches(config, keypoints, ckpt.state_dict)
    if problems:
        have = ckpt.variant or "a custom architecture"
        raise CheckpointError(
            f"{where}: weights of {have} do not fit {name}: {problems[0]}"
            + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
        )


def save_checkpoint(model, path: str | os.PathLike, *, extra: dict | None = None,
                    origin: str = "clamp-track") -> Path:
    """Write ``model`` with its metadata, atomically (temporary file, then rename).

    Args:
        model: A :class:`~clamp_track.models.clamp.PoseModel`.
        path: Destination file (``.pt``).
        extra: Plain data stored alongside (e.g. training provenance).
        origin: Where the weights came from (``"clamp-track"``, ``"official"``).

    Returns:
        The written path.
    """
    path = Path(path)
    config, keypoints = model.config, model.keypoints
    meta = {
        "format_version": FORMAT_VERSION,
        "clamp_track_version": __version__,
        "variant": variant_name(config),
        "model_config": to_dict(config),
        "keypoints": keypoints.to_dict(),
        "input_size": list(config.input_size),
        "mean": list(config.mean),
        "std": list(config.std),
        "origin": origin,
        "extra": extra or {},
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_atomic({"clamp_track": meta, "state_dict": state}, path)
    return path


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` via a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)  # the user's umask, not mkstemp's 0600
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------ new keypoint vocabularies


@dataclass(frozen=True)
class Adaptation:
    """How weights for one keypoint set were carried over to another.

    Attributes:
        state_dict: The new model's parameters and buffers.
        matched: ``(new index, old index)`` of keypoints present in both sets (same name or
            dataset spelling); their channels were copied.
        reinitialised: State-dict keys whose size depends on the number of keypoints; the
            channels of unmatched keypoints in them keep the new model's initialisation.
    """

    state_dict: dict
    matched: tuple[tuple[int, int], ...]
    reinitialised: tuple[str, ...]


def match_keypoints(old: KeypointSet, new: KeypointSet) -> tuple[tuple[int, int], ...]:
    """Pairs ``(new index, old index)`` of keypoints the two sets share, by name.

    A new keypoint matches an old one with the same prompt name or dataset spelling (case,
    ``_``, ``-`` and spaces ignored); each old keypoint is used at most once.
    """
    from clamp_track.errors import InputError

    pairs, used = [], set()
    for j, (name, source) in enumerate(zip(new.names, new.source_names)):
        for candidate in (name, source):
            try:
                i = old.index(candidate)
            except InputError:
                continue
            if i not in used:
                pairs.append((j, i))
                used.add(i)
            break
    return tuple(pairs)


def _probe_set(k: int) -> KeypointSet:
    return KeypointSet(name="probe", names=tuple(f"probe {i}" for i in range(k)))


def keypoint_dims(config: ModelConfig, k: int) -> dict[str, tuple[int, ...]]:
    """For each state-dict key, the dimensions whose size grows with the number of keypoints.

    Found by comparing the shapes of the model for ``k`` and ``k + 3`` keypoints (meta device,
    nothing allocated), so it follows the architecture instead of a list of names: for CLAMP
    that is the first deconvolution of ``keypoint_head`` (input channels C + K), its final
    layer, and the ``upconv_head``.
    """
    a = expected_shapes(config, _probe_set(k))
    b = expected_shapes(config, _probe_set(k + 3))
    out = {}
    for key, shape in a.items():
        dims = tuple(d for d, (x, y) in enumerate(zip(shape, b[key])) if x != y)
        if dims:
            out[key] = dims
    return out


def adapt_state_dict(state: dict, old: KeypointSet, config: ModelConfig,
                     new: KeypointSet, fresh: dict) -> Adaptation:
    """Carry weights trained for keypoint set ``old`` over to a model for set ``new``.

    Everything whose size does not depend on the number of keypoints is copied: the image
    backbone, the text encoder, the learnable contexts, the prompt encoder, the context
    decoder, gamma, the logit scale and the middle layers of the heads. In the tensors that do
    depend on it (:func:`keypoint_dims`), the channels of keypoints found in both sets
    (:func:`match_keypoints`) are copied and the others keep ``fresh`` (the new model's own
    initialisation). The K-channel ``upconv_head`` layers of the ViT configs count their
    channels as keypoints too.

    Args:
        state: The trained state dict (set ``old``).
        old: Its keypoint set.
        config: The architecture (the same for both).
        new: The new keypoint set.
        fresh: A newly initialised state dict of the model for ``new``.

    Returns:
        The :class:`Adaptation`.
    """
    dims = keypoint_dims(config, new.num_keypoints)
    matched = match_keypoints(old, new)
    new_idx = torch.tensor([j for j, _ in matched], dtype=torch.long)
    old_idx = torch.tensor([i for _, i in matched], dtype=torch.long)
    k_old, k_new = old.num_keypoints, new.num_keypoints
    out = {}
    for key, target in fresh.items():
        source = state[key]
        if key not in dims:
            out[key] = source.detach().clone()
            continue
        value = target.detach().clone()
        src_sel, dst_sel = [], []
        for d in range(value.ndim):
            if d in dims[key]:
                offset = value.shape[d] - k_new  # e.g. the C feature channels before the K
                if source.shape[d] - k_old != offset:
                    raise CheckpointError(f"{key}: cannot map dimension {d} between the sets")
                if offset:  # the keypoint-independent channels (C of C + K) are copied
                    _copy_leading(value, source, d, offset)
                src_sel.append(old_idx + offset)
                dst_sel.append(new_idx + offset)
            else:
                src_sel.append(torch.arange(value.shape[d]))
                dst_sel.append(torch.arange(value.shape[d]))
        if len(matched):
            value[torch.meshgrid(*dst_sel, indexing="ij")] = source[
                torch.meshgrid(*src_sel, indexing="ij")].to(value.dtype)
        out[key] = value
    return Adaptation(out, matched, tuple(sorted(dims)))


def _copy_leading(value: torch.Tensor, source: torch.Tensor, dim: int, count: int) -> None:
    """Copy the first ``count`` entries of dimension ``dim`` from ``source`` into ``value``."""
    index = [slice(None)] * value.ndim
    index[dim] = slice(0, count)
    value[tuple(index)] = source[tuple(index)].to(value.dtype)
