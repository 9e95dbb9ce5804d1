"""Keypoint sets: names, flip pairs, skeleton edges and OKS sigmas.

A :class:`KeypointSet` is everything that depends on *which* keypoints a model predicts. CLAMP
turns the keypoint names into text prompts, so the names are natural language ("left front
paw"), while ``source_names`` keeps the spelling of the dataset files ("left_front_paw",
"L_F_Paw") for matching COCO categories and DeepLabCut bodyparts.

The AP-10K and Animal-Pose sets follow ``clamp-model-spec.md`` §1 and §3 (names in dataset order,
0-based flip pairs and skeleton, OKS sigmas).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from clamp_track.errors import InputError

#: OKS sigma used for keypoints of user-defined sets that do not give one (between the AP-10K
#: values for paws, 0.062-0.089, and for the head, 0.025).
DEFAULT_SIGMA = 0.05


@dataclass(frozen=True)
class KeypointSet:
    """A named, ordered set of keypoints.

    Attributes:
        name: Short identifier, e.g. ``"ap10k"``.
        names: Natural-language keypoint names in model-channel order (CLAMP's prompts).
        flip_pairs: Index pairs (left, right) swapped by a horizontal flip.
        skeleton: Index pairs drawn as limbs.
        sigmas: OKS sigma per keypoint (COCO keypoint-evaluation semantics).
        source_names: The dataset's own spelling of each name (defaults to ``names``).
        upper_body: Indices used by half-body augmentation as the upper half.
    """

    name: str
    names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    sigmas: tuple[float, ...] = ()
    source_names: tuple[str, ...] = ()
    upper_body: tuple[int, ...] = ()
    _index: dict = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        k = len(self.names)
        if k == 0:
            raise InputError(f"keypoint set {self.name!r} has no keypoints")
        if len(set(self.names)) != k:
            dup = sorted({n for n in self.names if self.names.count(n) > 1})
            raise InputError(f"keypoint set {self.name!r} repeats names {dup}")
        # normalise containers so equal sets compare equal whatever the caller passed
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "flip_pairs", _pairs(self.flip_pairs, k, self.name, "flip pair"))
        object.__setattr__(self, "skeleton", _pairs(self.skeleton, k, self.name, "skeleton edge"))
        sigmas = tuple(float(s) for s in self.sigmas) or (DEFAULT_SIGMA,) * k
        source = tuple(str(n) for n in self.source_names) or self.names
        for label, values in (("sigmas", sigmas), ("source_names", source)):
            if len(values) != k:
                raise InputError(
                    f"keypoint set {self.name!r}: {len(values)} {label} for {k} keypoints"
                )
        object.__setattr__(self, "sigmas", sigmas)
        object.__setattr__(self, "source_names", source)
        object.__setattr__(self, "upper_body", tuple(int(i) for i in self.upper_body))
        flipped = [i for pair in self.flip_pairs for i in pair]
        if len(flipped) != len(set(flipped)):
            raise InputError(f"keypoint set {self.name!r}: a keypoint is in two flip pairs")
        index = {}
        for i, (n, s) in enumerate(zip(self.names, self.source_names)):
            index[_norm(n)] = i
            index.setdefault(_norm(s), i)
        object.__setattr__(self, "_index", index)

    @property
    def num_keypoints(self) -> int:
        """Number of keypoints K."""
        return len(self.names)

    @property
    def lower_body(self) -> tuple[int, ...]:
        """Indices not in :attr:`upper_body`."""
        return tuple(i for i in range(self.num_keypoints) if i not in self.upper_body)

    def flip_permutation(self) -> list[int]:
        """Channel permutation applied by a horizontal flip (an involution)."""
        perm = list(range(self.num_keypoints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def index(self, name: str) -> int:
        """Index of a keypoint by its name or source name (case, '_' and spaces ignored)."""
        try:
            return self._index[_norm(name)]
        except KeyError:
            raise InputError(
                f"keypoint {name!r} is not in set {self.name!r} ({', '.join(self.names)})"
            ) from None

    def matches(self, names) -> bool:
        """Whether ``names`` (e.g. a COCO category's keypoints) name these keypoints in order."""
        names = list(names)
        if len(names) != self.num_keypoints:
            return False
        return all(self._index.get(_norm(n)) == i for i, n in enumerate(names))

    def to_dict(self) -> dict:
        """Plain-data form, stored in checkpoints and result files."""
        return {
            "name": self.name,
            "names": list(self.names),
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "skeleton": [list(p) for p in self.skeleton],
            "sigmas": list(self.sigmas),
            "source_names": list(self.source_names),
            "upper_body": list(self.upper_body),
        }

    @classmethod
    def from_dict(cls, data: dict) -> KeypointSet:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        allowed = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise InputError(f"unknown keypoint-set keys {unknown}; allowed: {sorted(allowed)}")
        if "names" not in data:
            raise InputError("a keypoint set needs 'names'")
        return cls(
            name=data.get("name", "custom"),
            names=tuple(data["names"]),
            flip_pairs=tuple(map(tuple, data.get("flip_pairs") or ())),
            skeleton=tuple(map(tuple, data.get("skeleton") or ())),
            sigmas=tuple(data.get("sigmas") or ()),
            source_names=tuple(data.get("source_names") or ()),
            upper_body=tuple(data.get("upper_body") or ()),
        )


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


def _pairs(pairs, k: int, set_name: str, what: str) -> tuple[tuple[int, int], ...]:
    out = []
    for pair in pairs:
        a, b = (int(i) for i in pair)
        if not (0 <= a < k and 0 <= b < k) or a == b:
            raise InputError(f"keypoint set {set_name!r}: bad {what} {pair} for {k} keypoints")
        out.append((a, b))
    return tuple(out)


AP10K = KeypointSet(
    name="ap10k",
    names=(
        "left eye", "right eye", "nose", "neck", "tail root", "left shoulder", "left elbow",
        "left front paw", "right shoulder", "right elbow", "right front paw", "left hip",
        "left knee", "left back paw", "right hip", "right knee", "right back paw",
    ),
    source_names=(
        "left_eye", "right_eye", "nose", "neck", "root_of_tail", "left_shoulder", "left_elbow",
        "left_front_paw", "right_shoulder", "right_elbow", "right_front_paw", "left_hip",
        "left_knee", "left_back_paw", "right_hip", "right_knee", "right_back_paw",
    ),
    flip_pairs=((0, 1), (5, 8), (6, 9), (7, 10), (11, 14), (12, 15), (13, 16)),
    skeleton=(
        (0, 1), (0, 2), (1, 2), (2, 3), (3, 4), (3, 5), (5, 6), (6, 7), (3, 8), (8, 9), (9, 10),
        (4, 11), (11, 12), (12, 13), (4, 14), (14, 15), (15, 16),
    ),
    sigmas=(
        0.025, 0.025, 0.026, 0.035, 0.035, 0.079, 0.072, 0.062, 0.079, 0.072, 0.062, 0.107,
        0.087, 0.089, 0.107, 0.087, 0.089,
    ),
    upper_body=(0, 1, 2, 3, 5, 6, 7, 8, 9),
)

ANIMALPOSE = KeypointSet(
    name="animalpose",
    names=(
        "left eye", "right eye", "left ear base", "right ear base", "nose", "throat", "tail base",
        "withers", "left front elbow", "right front elbow", "left back elbow", "right back elbow",
        "left front knee", "right front knee", "left back knee", "right back knee",
        "left front paw", "right front paw", "left back paw", "right back paw",
    ),
    source_names=(
        "L_Eye", "R_Eye", "L_EarBase", "R_EarBase", "Nose", "Throat", "TailBase", "Withers",
        "L_F_Elbow", "R_F_Elbow", "L_B_Elbow", "R_B_Elbow", "L_F_Knee", "R_F_Knee", "L_B_Knee",
        "R_B_Knee", "L_F_Paw", "R_F_Paw", "L_B_Paw", "R_B_Paw",
    ),
    flip_pairs=((0, 1), (2, 3), (8, 9), (10, 11), (12, 13), (14, 15), (16, 17), (18, 19)),
    skeleton=(
        (0, 1), (0, 2), (1, 3), (0, 4), (1, 4), (4, 5), (5, 7), (6, 7), (5, 8), (8, 12), (12, 16),
        (5, 9), (9, 13), (13, 17), (6, 10), (10, 14), (14, 18), (6, 11), (11, 15), (15, 19),
    ),
    sigmas=(
        0.025, 0.025, 0.026, 0.035, 0.035, 0.10, 0.10, 0.10, 0.107, 0.107, 0.107, 0.107, 0.087,
        0.087, 0.087, 0.087, 0.089, 0.089, 0.089, 0.089,
    ),
    # head, neck and front legs (mmpose's animalpose upper_body_ids)
    upper_body=(0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 16, 17),
)

BUILTIN_SETS = {s.name: s for s in (AP10K, ANIMALPOSE)}

# (pattern, replacement) turning a left-side name into its right-side twin
_LEFT_TO_RIGHT = (
    (re.compile("left"), "right"),
    (re.compile("Left"), "Right"),
    (re.compile("LEFT"), "RIGHT"),
    (re.compile(r"(?<![A-Za-z])L(?![a-z])"), "R"),  # L_Eye, L_F_Paw
    (re.compile(r"(?<![A-Za-z])l(?![a-z])"), "r"),  # l_ear
    (re.compile(r"(?<=[a-z0-9])L(?![a-z])"), "R"),  # eyeL, forelegL1
)


def infer_flip_pairs(names) -> tuple[tuple[int, int], ...]:
    """Find left/right pairs from names such as ``leftear``/``rightear`` or ``L_Eye``/``R_Eye``.

    Args:
        names: Keypoint names in order.

    Returns:
        Index pairs ``(left, right)`` for every left name whose right twin exists.
    """
    names = list(names)
    lookup = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, n in enumerate(names):
        for pattern, right in _LEFT_TO_RIGHT:
            j = lookup.get(pattern.sub(right, n, count=1)) if pattern.search(n) else None
            if j is not None and j != i:
                pairs.append((i, j))
                break
    return tuple(pairs)


def humanize(name: str) -> str:
    """Turn a dataset spelling into prompt text: ``"L_F_Paw"`` -> ``"left front paw"``.

    Only unambiguous abbreviations are expanded; CamelCase and snake_case become words.
    """
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", str(name))
    words = re.sub(r"\b([LRlr])(\d+)\b", r"\1 \2", words)  # a side with a number: "R4"
    words = re.sub(r"[_\-.]+", " ", words).strip().lower().split()
    expand = {"l": "left", "r": "right", "f": "front", "b": "back"}
    if words and words[0] in ("l", "r"):
        words = [expand.get(w, w) if len(w) == 1 else w for w in words]
    else:  # a side letter after the part, as SLEAP skeletons write it: "wingL", "legR4"
        named = [i for i, w in enumerate(words) if not w.isdigit()]
        if len(named) > 1 and words[named[-1]] in ("l", "r"):
            side = expand[words.pop(named[-1])]
            words = [side, *words]
    return " ".join(words)


def from_names(
    names,
    *,
    name: str = "custom",
    flip_pairs=None,
    skeleton=(),
    sigmas=(),
) -> KeypointSet:
    """Build a user-defined keypoint set from a list of names.

    The names are kept as the dataset spelling (``source_names``) and turned into prompt text
    with :func:`humanize`. Flip pairs are inferred from left/right names unless given. Flip pairs
    and skeleton edges may use indices or names.
    """
    names = [str(n) for n in names]
    index = {n: i for i, n in enumerate(names)}

    def as_index(item):
        if isinstance(item, str):
            if item not in index:
                raise InputError(f"keypoint set {name!r}: {item!r} is not one of {names}")
            return index[item]
        return int(item)

    def as_pairs(pairs):
        return tuple((as_index(a), as_index(b)) for a, b in pairs)

    return KeypointSet(
        name=name,
        names=tuple(humanize(n) for n in names),
        source_names=tuple(names),
        flip_pairs=infer_flip_pairs(names) if flip_pairs is None else as_pairs(flip_pairs),
        skeleton=as_pairs(skeleton or ()),
        sigmas=tuple(sigmas or ()),
    )


def get_keypoint_set(spec) -> KeypointSet:
    """Resolve ``"ap10k"``, ``"animalpose"``, a YAML/JSON file, or a ``KeypointSet``.

    A file holds either a list of names or a mapping with ``names`` and optionally ``name``,
    ``flip_pairs``, ``skeleton`` and ``sigmas`` (pairs by index or by name). Flip pairs are
    inferred from left/right names when the file does not give them.
    """
    if isinstance(spec, KeypointSet):
        return spec
    key = str(spec).lower().replace("-", "").replace("_", "")
    if key in BUILTIN_SETS:
        return BUILTIN_SETS[key]
    path = Path(spec)
    if not path.is_file():
        raise InputError(
            f"unknown keypoint set {spec!r}: use one of {sorted(BUILTIN_SETS)} "
            "or a YAML/JSON file listing the keypoint names"
        )
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid YAML/JSON ({exc.__class__.__name__})") from None
    if isinstance(data, list):
        data = {"names": data}
    if not isinstance(data, dict) or not isinstance(data.get("names"), list):
        raise InputError(f"{path}: expected a list of keypoint names or a mapping with 'names'")
    allowed = {"name", "names", "flip_pairs", "skeleton", "sigmas"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InputError(f"{path}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    return from_names(
        data["names"],
        name=str(data.get("name") or path.stem),
        flip_pairs=data.get("flip_pairs"),
        skeleton=data.get("skeleton") or (),
        sigmas=data.get("sigmas") or (),
    )
