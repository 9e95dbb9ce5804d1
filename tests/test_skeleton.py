from __future__ import annotations

import pytest

from clamp_track.errors import InputError
from clamp_track.skeleton import (
    ANIMALPOSE,
    AP10K,
    KeypointSet,
    from_names,
    get_keypoint_set,
    humanize,
    infer_flip_pairs,
)


@pytest.mark.parametrize("kps", [AP10K, ANIMALPOSE], ids=["ap10k", "animalpose"])
def test_builtin_sets_are_consistent(kps):
    k = kps.num_keypoints
    assert len(kps.sigmas) == len(kps.source_names) == k
    perm = kps.flip_permutation()
    assert sorted(perm) == list(range(k)) and [perm[p] for p in perm] == list(range(k))
    # every flip pair is a left/right pair by name
    for a, b in kps.flip_pairs:
        assert kps.names[a].startswith("left")
        assert kps.names[b] == kps.names[a].replace("left", "right")
    assert infer_flip_pairs(kps.source_names) == kps.flip_pairs
    assert KeypointSet.from_dict(kps.to_dict()) == kps


def test_spec_values():
    assert AP10K.names[4] == "tail root" and AP10K.sigmas[11] == 0.107
    assert ANIMALPOSE.names[2] == "left ear base" and ANIMALPOSE.sigmas[5] == 0.10
    assert (4, 11) in AP10K.skeleton and (15, 19) in ANIMALPOSE.skeleton


def test_matching_dataset_spellings():
    assert AP10K.matches(["left_eye", "right_eye", "nose", "neck", "root_of_tail",
                          *AP10K.names[5:]])
    assert ANIMALPOSE.matches(ANIMALPOSE.source_names)
    assert not AP10K.matches(ANIMALPOSE.source_names)
    assert ANIMALPOSE.index("L_F_Paw") == 16


@pytest.mark.parametrize(
    ("names", "pairs"),
    [
        (["snout", "leftear", "rightear", "tailbase"], ((1, 2),)),
        (["head", "eyeL", "eyeR", "wingL", "wingR"], ((1, 3 - 1), (3, 4))),
        (["Eye_Left", "Eye_Right", "Nose"], ((0, 1),)),
        (["nose", "tail"], ()),
    ],
)
def test_flip_pairs_are_inferred_from_names(names, pairs):
    assert infer_flip_pairs(names) == pairs


def test_user_sets_from_names_and_files(tmp_path):
    mouse = from_names(["snout", "leftear", "rightear", "tailbase"],
                       skeleton=[("snout", "leftear"), (0, 3)])
    assert mouse.names == ("snout", "leftear", "rightear", "tailbase")
    assert mouse.skeleton == ((0, 1), (0, 3)) and mouse.flip_pairs == ((1, 2),)
    assert humanize("L_F_Paw") == "left front paw" and humanize("tailBase") == "tail base"
    assert humanize("wingL") == "left wing" and humanize("forelegR4") == "right foreleg 4"
    assert humanize("eye_l") == "left eye" and humanize("paw1") == "paw1"

    f = tmp_path / "bird.yaml"
    f.write_text("names: [beak, left wing tip, right wing tip]\n"
                 "skeleton: [[beak, left wing tip]]\n")
    bird = get_keypoint_set(f)
    assert bird.name == "bird" and bird.flip_pairs == ((1, 2),) and bird.skeleton == ((0, 1),)
    f.write_text("names: [a, b]\ncolour: red\n")
    with pytest.raises(InputError, match="unknown keys"):
        get_keypoint_set(f)
    with pytest.raises(InputError, match="unknown keypoint set"):
        get_keypoint_set("ap-11k")


def test_invalid_sets_are_rejected():
    with pytest.raises(InputError, match="repeats"):
        KeypointSet("x", ("a", "a"))
    with pytest.raises(InputError, match="bad flip pair"):
        KeypointSet("x", ("a", "b"), flip_pairs=((0, 2),))
    with pytest.raises(InputError, match="sigmas"):
        KeypointSet("x", ("a", "b"), sigmas=(0.1,))
