"""DeepLabCut labelled data: ``labeled-data/<video>/CollectedData_<scorer>.h5`` + ``.csv``.

Layout (facts from DeepLabCut 2.2-3.0 projects; see ``dlc-compat`` and ``anchors`` §1 notes):

* one folder per video, ``labeled-data/<video stem>/``, holding the extracted frames
  (``img<index>.png``) and ``CollectedData_<scorer>.h5`` (pandas HDF5, key
  ``df_with_missing``, written by DeepLabCut with ``to_hdf``'s default "fixed" format) with
  its ``.csv`` twin;
* rows: one per labelled image, a 3-level index ``("labeled-data", "<video>", "img0001.png")``
  (older projects, like DeepLabCut's own open-field example, use one string
  ``"labeled-data/<video>/img0001.png"``; both are read, the 3-level form is written);
* columns: ``scorer / bodyparts / coords`` (single animal) or ``scorer / individuals /
  bodyparts / coords`` (multi-animal), coords ``x, y`` (machine labels also have
  ``likelihood``, which is ignored); float64 image pixels, NaN where a bodypart is not
  labelled.

Multi-animal "unique bodyparts" (individual ``single``) are not read (one keypoint set per
label); a warning says so. The project's ``config.yaml`` is not written: it must list the same
bodyparts (and individuals) — the command prints them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from clamp_track.errors import InputError
from clamp_track.io.labels import (
    Label,
    Labels,
    bodyparts_to_set,
    frame_from_name,
    image_size,
    remap,
)

log = logging.getLogger(__name__)

HDF_KEY = "df_with_missing"
PREFIX = "CollectedData_"


# ----------------------------------------------------------------------------- reading


def find_collected_data(path: str | os.PathLike) -> Path:
    """The ``CollectedData_*`` file of a labelled-data folder (``.h5`` preferred) or ``path``.

    Raises:
        InputError: Nothing found, or several scorers' files in one folder.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise InputError(f"{path}: no such DeepLabCut labelled-data folder or file")
    found = sorted(path.glob(f"{PREFIX}*.h5")) or sorted(path.glob(f"{PREFIX}*.csv"))
    if not found:
        found = sorted(path.glob("CollectedData*.csv"))
    if not found:
        raise InputError(f"{path}: no {PREFIX}<scorer>.h5 or .csv in this folder; pass a "
                         "DeepLabCut labeled-data/<video> folder")
    if len(found) > 1:
        raise InputError(f"{path}: several label files ({', '.join(p.name for p in found)}); "
                         "pass the one to use")
    return found[0]


def read_table(path: str | os.PathLike):
    """The labelled-data DataFrame of a ``CollectedData`` ``.h5`` or ``.csv`` file, as stored.

    An ``.h5`` file is checked first (:func:`check_hdf_holds_data`): pandas' HDF5 reader
    unpickles the file's attributes and object columns, which would let a crafted label file
    run code. Every coordinate must be a number (or empty).

    Raises:
        InputError: Not a labelled-data file, pickled objects in it, or a non-numeric cell.
    """
    import pandas as pd

    path = Path(path)
    try:
        if path.suffix.lower() == ".h5":
            check_hdf_holds_data(path)
            table = pd.read_hdf(path)
        else:
            header, index = _csv_layout(path)
            table = pd.read_csv(path, header=list(range(header)),
                                index_col=list(range(index)))
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path}: not a DeepLabCut labelled-data file ({exc})") from None
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"{path}: holds no table; not a DeepLabCut labelled-data file")
    _check_numeric(table, path)
    return table


def _check_numeric(table, path: Path) -> None:
    """Refuse a table with a cell that is not a number, naming its row and column."""
    import pandas as pd

    for column in table.columns:
        values = table[column]
        if pd.api.types.is_numeric_dtype(values.dtype):
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna() & values.notna()
        if bad.any():
            row = values.index[bad.to_numpy().argmax()]
            raise InputError(f"{path}: the cell at row {row!r}, column {column!r} is "
                             f"{values[bad].iloc[0]!r}, not a number; fix or empty it")
        table[column] = numbers


#: Pickle opcodes that import or call anything: a pickle without them only builds plain
#: Python values (numbers, strings, lists, tuples, dicts, sets).
_CODE_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ",
                           "NEWOBJ_EX", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"})


def _pickle_runs_code(value: bytes) -> bool:
    """Whether unpickling ``value`` could import or call anything (it is never unpickled)."""
    import pickletools

    try:
        for opcode, _, _ in pickletools.genops(value):
            if opcode.name in _CODE_OPCODES:
                return True
    except Exception:  # noqa: BLE001 - not (or no longer) a pickle: unpickling stops here too
        return False
    return False


def check_hdf_holds_data(path: str | os.PathLike) -> None:
    """Refuse an HDF5 file whose reading with pandas/PyTables could run code.

    PyTables unpickles attribute values that look like pickles and the contents of
    object (``VLArray`` of ``ObjectAtom``) nodes. DeepLabCut's files use pickles only for plain
    values (lists of column names), so the file is walked with h5py, which never unpickles,
    and refused if an attribute's pickle imports or calls anything or a node holds
    Python objects.

    Raises:
        InputError: One line naming the file and the offending node.
    """
    import h5py

    path = Path(path)
    problems: list[str] = []

    def check_attrs(name: str, obj) -> None:
        for key in obj.attrs:
            try:
                value = obj.attrs[key]
            except (OSError, TypeError, ValueError):
                problems.append(f"{name or '/'}@{key} (unreadable attribute)")
                continue
            raw = value.tobytes() if isinstance(value, np.bytes_) else value
            if isinstance(raw, bytes) and raw.endswith(b".") and _pickle_runs_code(raw):
                problems.append(f"{name or '/'}@{key}")
            if key == "PSEUDOATOM" and raw in (b"object", "object"):
                problems.append(f"{name} (pickled objects)")
        if isinstance(obj, h5py.Dataset):
            dtype = obj.dtype
            kinds = [dtype[f].kind for f in dtype.names] if dtype.names else [dtype.kind]
            if "O" in kinds or h5py.check_vlen_dtype(dtype) is not None:
                problems.append(f"{name} (variable-length objects)")

    try:
        with h5py.File(path, "r") as f:
            check_attrs("", f)
            f.visititems(check_attrs)
    except OSError as exc:
        raise InputError(f"{path}: not an HDF5 file ({exc})") from None
    if problems:
        raise InputError(f"{path}: holds pickled Python objects ({problems[0]}), which could run "
                         "code when loaded; refusing to read it: use the labels' CSV twin or "
                         "export them again from DeepLabCut")


def _csv_layout(path: Path) -> tuple[int, int]:
    """``(header rows, index columns)`` of a DeepLabCut CSV from its first lines."""
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        rows = [row for _, row in zip(range(5), csv.reader(fh))]
    if not rows or rows[0][:1] != ["scorer"]:
        raise InputError(f"{path}: not a DeepLabCut labelled-data CSV (no 'scorer' header row)")
    header = next((i + 1 for i, r in enumerate(rows) if r[:1] == ["coords"]), None)
    if header is None:
        raise InputError(f"{path}: no 'coords' header row; not a DeepLabCut labelled-data CSV")
    first = rows[0]
    index = 1 + next((i for i, v in enumerate(first[1:]) if v != ""), 0)
    return header, index


def read_dlc_labels(path: str | os.PathLike, *, keypoints=None,
                    check_images: bool = True) -> Labels:
    """Read a DeepLabCut ``labeled-data/<video>`` folder (or its ``CollectedData`` file).

    Args:
        path: The folder or the ``.h5``/``.csv`` file.
        keypoints: Keypoint set to map the bodyparts onto by name; default: a set made from
            the bodyparts (:func:`~clamp_track.io.labels.bodyparts_to_set`), named after the
            project folder.
        check_images: Fail at once if a labelled image is missing.

    Returns:
        One label per (image, individual); single-animal data has individual ``""``. Images
        without any label are kept (all keypoints unlabelled), so the table writes back as it
        was.
    """
    file = find_collected_data(path)
    table = read_table(file)
    multi = _check_columns(table, file)
    scorer = str(table.columns.get_level_values("scorer")[0])
    if multi:
        singles = table.columns.get_level_values("individuals") == "single"
        if singles.any():
            log.warning("%s: unique bodyparts (individual 'single') are not read", file)
            table = table.loc[:, ~singles]
    individuals = list(dict.fromkeys(table.columns.get_level_values("individuals"))) \
        if multi else [""]
    bodyparts = list(dict.fromkeys(table.columns.get_level_values("bodyparts")))
    kp = bodyparts_to_set(bodyparts, name=_project_name(file))
    items = []
    for row_key, row in zip(table.index, table.itertuples(index=False)):
        parts = _index_parts(row_key)
        video = parts[-2] if len(parts) >= 3 else file.parent.name
        image = _find_image(file, parts, check_images)
        size = image_size(image) if image.is_file() else None
        series = dict(zip(table.columns, row))
        for individual in individuals:
            xy = np.full((len(bodyparts), 3), np.nan)
            for k, part in enumerate(bodyparts):
                prefix = (scorer, individual, part) if multi else (scorer, part)
                xy[k, 0] = series.get((*prefix, "x"), np.nan)
                xy[k, 1] = series.get((*prefix, "y"), np.nan)
            xy[:, 2] = np.where(np.isfinite(xy[:, :2]).all(axis=1), 2.0, 0.0)
            items.append(Label(image=str(image), video=video, image_name=parts[-1],
                               keypoints=xy, individual=individual, size=size,
                               frame=frame_from_name(parts[-1]), origin=str(file)))
    labels = Labels(kp, items, scorer, tuple(i for i in individuals if i), (str(file),))
    return remap(labels, _resolve(keypoints)) if keypoints is not None else labels


def _resolve(keypoints):
    from clamp_track.io.labels import load_keypoint_set

    return load_keypoint_set(keypoints)


def _check_columns(table, file: Path) -> bool:
    names = list(table.columns.names)
    if names == ["scorer", "individuals", "bodyparts", "coords"]:
        return True
    if names == ["scorer", "bodyparts", "coords"]:
        return False
    raise InputError(f"{file}: columns {names} are not DeepLabCut's scorer/[individuals/]"
                     "bodyparts/coords")


def _index_parts(key) -> tuple[str, ...]:
    if isinstance(key, tuple):
        return tuple(str(k) for k in key)
    return tuple(p for p in str(key).replace("\\", "/").split("/") if p)


def _find_image(file: Path, parts: tuple[str, ...], check: bool) -> Path:
    """Where an image of the index is.

    Beside the label file (DeepLabCut's layout), at the index path from the label file's
    folder, or at the index path from the project folder.
    """
    candidates = [file.parent / parts[-1], file.parent.joinpath(*parts)]
    if len(file.parents) > 2:
        candidates.append(file.parents[2].joinpath(*parts))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if check:
        raise InputError(f"{file}: labelled image {'/'.join(parts)} not found beside it; keep "
                         "the images in the labelled-data folder")
    return candidates[0]


def _project_name(file: Path) -> str:
    """``<project>`` of ``<project>/labeled-data/<video>/CollectedData_x.h5``, else the folder."""
    parents = file.parents
    if len(parents) > 2 and parents[1].name == "labeled-data":
        return parents[2].name
    return file.parent.name or "dlc"


# ----------------------------------------------------------------------------- writing


def dlc_table(labels: Labels, *, multi_animal: bool | None = None):
    """The labels as DeepLabCut's labelled-data DataFrame.

    Args:
        labels: The labels (bodyparts = the keypoint set's dataset spelling).
        multi_animal: ``scorer / individuals / bodyparts / coords`` columns; default: when the
            labels name individuals.

    Returns:
        The DataFrame: float64, 3-level row index ``("labeled-data", video, image)``, rows in
        the labels' image order, NaN where unlabelled.

    Raises:
        InputError: Single-animal layout asked for labels with several animals in one image.
    """
    import pandas as pd

    multi = labels.multi_animal if multi_animal is None else multi_animal
    kp = labels.keypoints
    individuals = list(labels.individuals) or (["animal1"] if multi else [])
    if multi:
        individuals += [i.individual for i in labels.items
                        if i.individual and i.individual not in individuals]
    images = labels.images()
    row_of = {key: r for r, key in enumerate(images)}
    slots = max(1, len(individuals))
    values = np.full((len(images), slots, kp.num_keypoints, 2), np.nan)
    filled = np.zeros((len(images), slots), bool)
    for item in labels.items:
        r = row_of[item.image_key]
        s = individuals.index(item.individual or individuals[0]) if multi else 0
        if filled[r, s] and item.labelled.any():
            raise InputError(
                f"{item.video}/{item.image_name}: two labelled animals for individual "
                f"{item.individual or '(single)'}; export in the multi-animal layout")
        if item.labelled.any():
            values[r, s] = item.keypoints[:, :2]
            filled[r, s] = True
    names = ["scorer", "individuals", "bodyparts", "coords"]
    levels = [[labels.scorer], individuals, list(kp.source_names), ["x", "y"]]
    if not multi:
        del names[1], levels[1]
    columns = pd.MultiIndex.from_product(levels, names=names)
    index = pd.MultiIndex.from_tuples([("labeled-data", v, n) for v, n in images])
    return pd.DataFrame(values.reshape(len(images), -1), index=index, columns=columns)


def write_dlc_labels(labels: Labels, out_dir: str | os.PathLike, *,
                     multi_animal: bool | None = None, images: bool = True,
                     progress=None) -> list[Path]:
    """Write DeepLabCut ``labeled-data`` folders: images and ``CollectedData_<scorer>``.

    Args:
        labels: The labels.
        out_dir: The project folder (or any folder): ``<out_dir>/labeled-data/<video>/`` is
            written for every video.
        multi_animal: Layout (see :func:`dlc_table`).
        images: Also write the images (video frames are decoded to PNG).
        progress: Optional ``callable(done, total)`` per image.

    Returns:
        The written ``.h5`` files (a ``.csv`` twin is beside each).
    """
    from clamp_track.io.export import _atomic
    from clamp_track.io.labels import write_images

    root = Path(out_dir) / "labeled-data"
    if images:
        labels = write_images(labels, root, progress=progress)
    written = []
    for video in dict.fromkeys(item.video for item in labels.items):
        part = labels.with_items([i for i in labels.items if i.video == video])
        table = dlc_table(part, multi_animal=labels.multi_animal
                          if multi_animal is None else multi_animal)
        h5 = root / video / f"{PREFIX}{labels.scorer}.h5"
        with _atomic(h5, h5.with_suffix(".csv")) as (tmp_h5, tmp_csv):
            write_hdf(table, tmp_h5)
            table.to_csv(tmp_csv)
        written.append(h5)
    return written


#: ``pandas_version`` attribute pandas 1.x-2.x write into every HDF5 object; pandas 3 does not.
_PANDAS_HDF_FORMAT_VERSION = "0.15.2"


def write_hdf(table, path: Path) -> None:
    """``to_hdf`` as DeepLabCut writes labelled data.

    Key ``df_with_missing`` in pandas' default ("fixed") format, which keeps the 3-level row
    index; plus the ``pandas_version`` attribute pandas 2 (DeepLabCut's) looks for, which
    pandas 3 no longer writes.
    """
    import pandas as pd

    table.to_hdf(path, key=HDF_KEY, mode="w")
    with pd.HDFStore(path, mode="a") as store:
        attrs = store.get_storer(HDF_KEY).attrs
        if getattr(attrs, "pandas_version", None) is None:
            attrs.pandas_version = _PANDAS_HDF_FORMAT_VERSION
