"""Writers of pipeline results: tidy CSV, DeepLabCut ``.h5``/``.csv``, annotated video, plots.

All writers take the results as pandas DataFrames, as the result store produces them:

* **keypoints**: one row per frame, track and keypoint, columns ``frame, time_s, track,
  keypoint, x, y, confidence, x_smooth, y_smooth, variance`` (:data:`KEYPOINT_COLUMNS`).
  ``keypoint`` is a keypoint name (``KeypointSet.names`` or ``source_names``) or its index;
  ``track`` is a final track id >= 1; coordinates are frame pixels; missing values are NaN.
* **boxes** (annotated video only): one row per frame and track, columns ``frame, track, x1,
  y1, x2, y2`` and optionally ``score``.

plus an :class:`ExportInfo` (keypoint set, video, model name). Every output is written to a
temporary file in its destination folder and moved into place with ``os.replace``, so a failed
or interrupted export leaves no partial file; a folder that cannot be written is a one-line
:class:`~clamp_track.errors.InputError`.

DeepLabCut layout (see the project's ``dlc-compat`` notes; facts from DeepLabCut 3.0.2):

* scorer ``DLC_<NetName>_clamptrack<Mon><day>shuffle1_snapshot_<E>``, e.g.
  ``DLC_ClampRn50_clamptrackNov25shuffle1_snapshot_0`` (NetName from the model name the way
  DeepLabCut capitalises its ``net_type``). DeepLabCut's project-based tools look files up by
  the scorer *they* derive from a project, which DeepLabCut 3.0.2 only builds from its own net
  types: to be found by them without renaming, export with
  ``ExportInfo(dlc_net_type="resnet_50")`` (``DLC_Resnet50_...``) — see :class:`ExportInfo`;
* single-animal when the results hold one animal (``layout="auto"``; what anipose and
  Lightning Pose read): ``<video stem><scorer>.h5``, columns ``scorer / bodyparts / coords``;
  multi-animal otherwise: ``<video stem><scorer>_el.h5``, columns ``scorer / individuals /
  bodyparts / coords``, individuals ``animal1..N`` in track order (:func:`individual_names`);
  every file has the one HDF5 key ``df_with_missing`` (DeepLabCut reads without a key,
  movement and anipose with this one), ``format="table"`` as DeepLabCut writes it, or
  ``"fixed"`` for tables too wide for it (:func:`hdf_format`);
* the main file holds the raw predictions (corrections in place), never NaN for low
  confidence; ``<...>_filtered.h5`` the smoothed coordinates, as DeepLabCut's
  ``filterpredictions`` names them; the tidy CSV has both;
* bodyparts are ``KeypointSet.source_names`` (the dataset spelling DeepLabCut users know, e.g.
  ``left_eye``), coords ``x, y, likelihood`` in that order, one row per video frame 0..n-1
  with NaN where an animal is absent; the ``.csv`` twins are the same tables' ``to_csv``;
* ``<video stem><scorer>_meta.pickle`` with DeepLabCut's ``{"data": {...}}`` keys, plain Python
  values only, plus ``"clamp-track"``: the coordinates of each file, the track-to-individual
  mapping, keypoint names, the model and the video's absolute path.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from clamp_track.config import temp_beside
from clamp_track.errors import InputError
from clamp_track.skeleton import KeypointSet
from clamp_track.types import VideoInfo

#: Columns of the tidy keypoint table, in the order the tidy CSV writes them.
KEYPOINT_COLUMNS = ("frame", "time_s", "track", "keypoint", "x", "y", "confidence",
                    "x_smooth", "y_smooth", "variance")
#: Columns of the box table used by the annotated video (``score`` optional).
BOX_COLUMNS = ("frame", "track", "x1", "y1", "x2", "y2")
#: Task name inside the DeepLabCut scorer.
DLC_TASK = "clamptrack"
#: Suffix of multi-animal tracked files (DeepLabCut's ellipse-tracker suffix, the default).
DLC_TRACK_SUFFIX = "_el"


@dataclass(frozen=True)
class ExportInfo:
    """What the writers need besides the results.

    Attributes:
        keypoint_set: The model's keypoints (names, DeepLabCut spelling, skeleton).
        video: The analysed video (its stem names the DeepLabCut files; size and fps).
        model_name: Pose model name, e.g. ``"clamp_rn50"``; becomes the scorer's NetName.
        date: Date in the scorer as DeepLabCut writes it (``"Nov25"``); pass the run's date
            so re-exports keep the file names. Defaults to today.
        snapshot: The ``snapshot_<E>`` part of the scorer (e.g. training epochs of the weights).
        n_frames: Rows of the DeepLabCut table; defaults to ``video.n_frames``.
        dlc_net_type: A DeepLabCut ``net_type`` (e.g. ``"resnet_50"``) to name in the scorer
            instead of the model. DeepLabCut 3.0.2 derives a project's scorer only from its own
            net types (it rejects others when it reads the shuffle's ``pytorch_config.yaml``),
            so only such a scorer can match a DeepLabCut project (Task ``clamptrack``, the
            date, shuffle 1) and be found by its project-based tools without renaming.
        track_names: Names users gave tracks (``{track: "female"}``); they name the
            individuals of every export instead of ``animal<track>``.
    """

    keypoint_set: KeypointSet
    video: VideoInfo
    model_name: str = "clamp"
    date: str | None = None
    snapshot: int | str = 0
    n_frames: int | None = None
    dlc_net_type: str | None = None
    track_names: dict[int, str] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        """Number of video frames (rows of a DeepLabCut table)."""
        return int(self.video.n_frames if self.n_frames is None else self.n_frames)

    @property
    def stem(self) -> str:
        """The video's file name without extension."""
        return Path(self.video.path).stem

    @property
    def scorer(self) -> str:
        """DeepLabCut scorer name (see :func:`dlc_scorer`)."""
        return dlc_scorer(self.dlc_net_type or self.model_name, date=self.date,
                          snapshot=self.snapshot)


def dlc_scorer(model_name: str, *, date: str | None = None, task: str = DLC_TASK,
               shuffle: int = 1, snapshot: int | str = 0) -> str:
    """A scorer name of DeepLabCut 3's form ``DLC_<NetName>_<Task><date>shuffle<N>_snapshot_<E>``.

    Args:
        model_name: e.g. ``"clamp_rn50"`` -> NetName ``ClampRn50`` (parts split on ``_``/``-``,
            capitalised and joined, as DeepLabCut does with its ``net_type``).
        date: ``<Mon><day>`` (``"Nov25"``, day not zero-padded, as DeepLabCut projects write
            it; a padded ``"Dec03"`` is written ``"Dec3"``); defaults to today.
        task: Task name.
        shuffle: Shuffle number.
        snapshot: Snapshot id (an epoch number or ``"best-<epoch>"``).

    Returns:
        The scorer, e.g. ``DLC_ClampRn50_clamptrackNov25shuffle1_snapshot_0``.
    """
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", model_name) if p]
    net = "".join(p.capitalize() for p in parts) or "Clamp"
    if not net[0].isalpha():
        net = "Clamp" + net
    date = dlc_date() if date is None else re.sub(r"^([A-Za-z]+)0(\d)$", r"\1\2", date)
    return f"DLC_{net}_{task}{date}shuffle{shuffle}_snapshot_{snapshot}"


def dlc_date(day: datetime.date | None = None) -> str:
    """A date as DeepLabCut writes it in project and scorer names: ``Dec3`` (day not padded).

    Args:
        day: The date; defaults to today.
    """
    day = day or datetime.date.today()
    return f"{day.strftime('%b')}{day.day}"


# ------------------------------------------------------------------------- atomic output


@contextlib.contextmanager
def _atomic(*paths: Path) -> Iterator[list[Path]]:
    """Temporary files beside ``paths``, moved onto them only if the block succeeds.

    Yields:
        One temporary path per output (same folder, same suffix); all are removed on error.
    """
    temps: list[Path] = []
    try:
        for path in paths:
            folder = _writable_dir(path.parent)
            try:  # (also removes the temporary files of a killed export)
                temps.append(temp_beside(folder / path.name, f".tmp{path.suffix}"))
            except OSError as exc:
                raise InputError(f"{folder}: cannot write there ({exc.strerror}); "
                                 "choose another output directory") from None
        yield temps
        for tmp, path in zip(temps, paths):
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def _writable_dir(folder: Path) -> Path:
    """Create ``folder`` if needed; a one-line InputError if that is impossible."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"{folder}: cannot create the output directory ({reason})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{folder}: output directory is not writable")
    return folder


# --------------------------------------------------------------------------- tidy CSV


def write_tidy_csv(keypoints, path: str | os.PathLike, keypoint_set: KeypointSet | None = None
                   ) -> Path:
    """Write the keypoint table as a tidy CSV (one row per frame, track and keypoint).

    Args:
        keypoints: The tidy keypoint table (:data:`KEYPOINT_COLUMNS`; extra columns are kept
            after them).
        path: Output ``.csv``.
        keypoint_set: If given, rows within a frame and track follow its keypoint order;
            otherwise the table's order.

    Returns:
        The written path. Missing values are empty fields.
    """
    _require_columns(keypoints, KEYPOINT_COLUMNS, "keypoint table")
    table = keypoints
    if keypoint_set is not None and len(table):
        order = _keypoint_indices(table["keypoint"], keypoint_set)
        table = table.assign(_k=order).sort_values(["frame", "track", "_k"], kind="stable")
        table = table.drop(columns="_k")
    extra = [c for c in table.columns if c not in KEYPOINT_COLUMNS]
    path = Path(path)
    with _atomic(path) as (tmp,):
        write_csv(table[list(KEYPOINT_COLUMNS) + extra], tmp, index=False)
    return path


def write_csv(table, path: str | os.PathLike, index: bool = True) -> None:
    """``table.to_csv(path, index=index)``, byte for byte, in about 60 % of pandas' time.

    pandas formats every number through NumPy string arrays (about 2 µs a float); here pandas
    writes only the header lines and each float64 of the rows is written as Python's ``repr``
    (the shortest text that reads back to the same number: what pandas writes too). Missing
    values are empty fields; text is quoted as pandas quotes it (``csv.QUOTE_MINIMAL``).
    Columns of other kinds (float32, extension types) are left to NumPy's formatting.
    """
    path = Path(path)
    table.iloc[:0].to_csv(path, index=index)  # the header lines, as pandas writes them
    if not len(table):
        return
    if all(dtype == np.float64 for dtype in table.dtypes):  # DeepLabCut's tables: row by row
        fields = [["" if v != v else repr(v) for v in row] for row in table.to_numpy().tolist()]
        if index:
            fields = [[label, *row] for label, row in zip(_csv_fields(table.index.to_numpy()),
                                                          fields)]
    else:
        columns = [table.index.to_numpy()] if index else []
        columns += [table.iloc[:, i].to_numpy() for i in range(table.shape[1])]
        fields = zip(*map(_csv_fields, columns))
    rows = os.linesep.join(map(",".join, fields))
    with open(path, "a", encoding="utf-8", newline="") as fh:
        fh.write(rows + os.linesep)


def _csv_fields(values: np.ndarray) -> list[str]:
    """One column's values as pandas' ``to_csv`` writes them."""
    if values.dtype == np.float64:
        return ["" if v != v else repr(v) for v in values.tolist()]
    if values.dtype.kind in "iub":
        return list(map(str, values.tolist()))
    if values.dtype.kind == "f":  # float32 & co: NumPy's shortest text for the type
        text = values.astype(str).astype(object)
        text[np.isnan(values)] = ""
        return text.tolist()
    names: dict[str, str] = {}  # names repeat: each distinct one is quoted once
    out = []
    for value in values.tolist():
        if type(value) is str:
            text = names.get(value)
            if text is None:
                text = names[value] = _csv_text(value)
        else:
            text = _csv_text(value)
        out.append(text)
    return out


def _csv_text(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if any(ch in text for ch in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


# ------------------------------------------------------------------------- DeepLabCut


#: Values of ``--dlc-layout``: one animal -> single-animal files, else multi-animal.
DLC_LAYOUTS = ("auto", "single", "multi")
#: HDF5 key of every DeepLabCut file written: DeepLabCut reads without a key (one key per
#: file), movement's ``from_dlc_file`` and anipose read ``df_with_missing``.
DLC_HDF_KEY = "df_with_missing"
#: Largest pickled column index written in pandas' "table" format: PyTables keeps it in one
#: HDF5 attribute, which must fit a 64 KiB object header (about 50 animals of 17 keypoints).
_MAX_TABLE_COLUMNS_BYTES = 40_000


@dataclass(frozen=True)
class DlcExport:
    """Files written by :func:`write_dlc`.

    Attributes:
        h5: The main ``.h5``: raw predictions (pandas/PyTables, key ``df_with_missing``).
        csv: Its ``.csv`` twin, or None.
        filtered_h5: ``<...>_filtered.h5``: the smoothed coordinates, or None (nothing smoothed).
        filtered_csv: Its ``.csv`` twin, or None.
        meta: The ``_meta.pickle``.
        scorer: The scorer in the columns and the file names.
        layout: ``"single"`` or ``"multi"``.
        individuals: Track id -> DeepLabCut individual name (empty for single-animal).
    """

    h5: Path
    csv: Path | None
    filtered_h5: Path | None
    filtered_csv: Path | None
    meta: Path
    scorer: str
    layout: str
    individuals: dict[int, str]

    @property
    def paths(self) -> list[Path]:
        """The written files."""
        return [p for p in (self.h5, self.csv, self.filtered_h5, self.filtered_csv, self.meta)
                if p is not None]


def individual_names(tracks: Iterable[int], given: dict[int, str] | None = None
                     ) -> dict[int, str]:
    """The exported name of each track: the name the user gave it, else ``animal1..animalN``.

    The one naming rule of every export that names individuals (DeepLabCut ``individuals``,
    SLEAP tracks, NWB subjects, video labels, behaviour tables). Unnamed tracks are numbered
    compactly in track-id order, so ids left with gaps (deleted or merged tracks) still give
    ``animal1..N``; a number a user's name already takes is skipped.

    Args:
        tracks: Track ids (repeats allowed).
        given: Names users gave tracks (``{track: "female"}``, :meth:`ResultStore.track_names`).
    """
    given = {int(t): n for t, n in (given or {}).items() if n}
    taken = set(given.values())
    names, number = {}, 0
    for track in sorted({int(t) for t in tracks}):
        if track in given:
            names[track] = given[track]
            continue
        number += 1
        while f"animal{number}" in taken:
            number += 1
        names[track] = f"animal{number}"
    return names


def dlc_layout(keypoints, layout: str = "auto") -> str:
    """``"single"`` or ``"multi"``: the DeepLabCut layout ``layout`` asks for.

    ``"auto"`` is single-animal when the results hold at most one track (what DeepLabCut
    writes for a single-animal project, and what anipose and Lightning Pose read).
    """
    if layout not in DLC_LAYOUTS:
        raise InputError(f"unknown DeepLabCut layout {layout!r}; use {', '.join(DLC_LAYOUTS)}")
    if layout != "auto":
        return layout
    return "single" if keypoints["track"].nunique() <= 1 else "multi"


def dlc_table(keypoints, info: ExportInfo, *, single_animal: bool = False,
              track: int | None = None, smoothed: bool = False):
    """A DeepLabCut DataFrame of the results (what :func:`write_dlc` writes).

    Args:
        keypoints: The tidy keypoint table.
        info: Keypoint set, video and scorer.
        single_animal: Columns ``scorer / bodyparts / coords`` for one track instead of
            ``scorer / individuals / bodyparts / coords`` for all.
        track: The track of a single-animal table; needed when there is more than one.
        smoothed: Write ``x_smooth, y_smooth`` (the ``_filtered`` file; the table must have
            them) instead of the raw ``x, y`` (the main file).

    Returns:
        ``(frame, coordinates, individuals)``: the DataFrame (index 0..n_frames-1, float64),
        ``"smoothed"`` or ``"raw"``, and the track -> individual mapping
        (:func:`individual_names`). Likelihood is the keypoint confidence, 0 for a point the
        smoother filled in (no confidence) and NaN where the written x/y are NaN. Raw
        coordinates are every prediction (corrections in place, a keypoint marked occluded
        NaN): rows of a frame the animal is in have no NaN otherwise. A multi-animal table
        with no tracks has one all-NaN individual ``animal1``, so DeepLabCut still opens it.
    """
    import pandas as pd

    _require_columns(keypoints, ("frame", "track", "keypoint", "x", "y", "confidence"),
                     "keypoint table")
    xcol, ycol, coordinates = ("x_smooth", "y_smooth", "smoothed") if smoothed else (
        "x", "y", "raw")
    _require_columns(keypoints, (xcol, ycol), "keypoint table")
    table = _select_track(keypoints, track) if single_animal else keypoints
    names = individual_names(table["track"].unique(), info.track_names)
    tracks = list(names)
    slots = tracks or [1]
    kset, n_frames = info.keypoint_set, info.frames
    values = np.full((n_frames, len(slots), kset.num_keypoints, 3), np.nan)
    if len(table):
        frames = table["frame"].to_numpy(dtype=np.int64)
        if frames.min() < 0 or frames.max() >= n_frames:
            raise ValueError(f"frames {frames.min()}..{frames.max()} outside 0..{n_frames - 1}")
        slot = np.searchsorted(slots, table["track"].to_numpy(dtype=np.int64))
        kp = _keypoint_indices(table["keypoint"], kset)
        _check_unique(frames, slot, kp, len(slots), kset.num_keypoints)
        xy = table[[xcol, ycol]].to_numpy(dtype=np.float64)
        likelihood = table["confidence"].to_numpy(dtype=np.float64)
        # a point the smoother filled in without a measurement has no confidence: 0, not NaN;
        # a point without coordinates is absent: NaN likelihood (DeepLabCut would draw it)
        absent = np.isnan(xy).any(1)
        likelihood = np.where(absent, np.nan, np.where(np.isnan(likelihood), 0.0, likelihood))
        values[frames, slot, kp] = np.column_stack([xy, likelihood])
    level_names = ["scorer", "individuals", "bodyparts", "coords"]
    levels = [[info.scorer], [names.get(t, "animal1") for t in slots],
              list(kset.source_names), ["x", "y", "likelihood"]]
    if single_animal:
        del level_names[1], levels[1]
    columns = pd.MultiIndex.from_product(levels, names=level_names)
    frame = pd.DataFrame(values.reshape(n_frames, -1), columns=columns, index=range(n_frames))
    return frame, coordinates, ({} if single_animal else names)


def write_dlc(keypoints, out_dir: str | os.PathLike, info: ExportInfo, *,
              layout: str = "auto", track: int | None = None, csv: bool = True) -> DlcExport:
    """Write DeepLabCut's files of an analysed video, as DeepLabCut itself lays them out.

    * ``<stem><scorer>[_el].h5`` (+ ``.csv``): every **raw** prediction with its likelihood,
      never NaN-ed for low confidence (DeepLabCut's consumers apply their ``pcutoff``), the
      user's corrections at their exact positions and a keypoint marked occluded NaN;
    * ``<stem><scorer>[_el]_filtered.h5`` (+ ``.csv``): the smoothed coordinates, where
      DeepLabCut's ``filterpredictions`` would write its own (so it does not smooth twice);
      NaN where the smoother had no confident point near; left out for a table without
      smoothed columns;
    * ``<stem><scorer>_meta.pickle``.

    Single-animal layout (3 column levels, no ``_el`` suffix) for one animal, multi-animal
    (``individuals`` level, ``_el``) otherwise; see :func:`dlc_layout`. Every file has the
    one key ``df_with_missing``.

    Args:
        keypoints: The tidy keypoint table.
        out_dir: Folder for the files (DeepLabCut looks beside the video or where it is told).
        info: Keypoint set, video, model name.
        layout: ``"auto"``, ``"single"`` or ``"multi"`` (:data:`DLC_LAYOUTS`).
        track: The track of a single-animal export of results with several.
        csv: Also write the ``.csv`` twins.

    Returns:
        The written files and what went into them.
    """
    layout = dlc_layout(keypoints, layout)
    single = layout == "single"
    raw, _, individuals = dlc_table(keypoints, info, single_animal=single, track=track)
    smoothed = {"x_smooth", "y_smooth"} <= set(keypoints.columns)
    smooth = dlc_table(keypoints, info, single_animal=single, track=track,
                       smoothed=True)[0] if smoothed else None
    base = Path(out_dir) / f"{info.stem}{info.scorer}"
    name = base.name + ("" if single else DLC_TRACK_SUFFIX)
    h5 = base.with_name(name + ".h5")
    filtered = base.with_name(name + "_filtered.h5") if smoothed else None
    meta = base.with_name(base.name + "_meta.pickle")
    tables = [(h5, raw)] + ([(filtered, smooth)] if filtered else [])
    outputs = [(path.with_suffix(".csv"), table) for path, table in tables] if csv else []
    meta_data = _dlc_meta(info, raw, individuals, single, filtered is not None)
    with _atomic(meta, *(p for p, _ in tables + outputs)) as temps:
        with open(temps[0], "wb") as fh:
            pickle.dump(meta_data, fh, pickle.HIGHEST_PROTOCOL)
        for tmp, (path, table) in zip(temps[1:], tables + outputs):
            if path.suffix == ".h5":
                _write_hdf(table, tmp, DLC_HDF_KEY)
            else:
                write_csv(table, tmp)
    return DlcExport(h5, h5.with_suffix(".csv") if csv else None, filtered,
                     filtered.with_suffix(".csv") if csv and filtered else None, meta,
                     info.scorer, layout, individuals)


#: Format version pandas 1.x-2.x write into every HDF5 table (``pandas_version`` attribute).
_PANDAS_HDF_FORMAT_VERSION = "0.15.2"


def hdf_format(frame) -> str:
    """The pandas HDF5 format for a DeepLabCut table: ``"table"``, or ``"fixed"`` for wide ones.

    DeepLabCut writes ``format="table"``, which PyTables gives its column index in a single
    HDF5 attribute: with about 55 or more animals (17 keypoints) that no longer fits and the
    write fails ("object header message is too large"). Such tables are written in pandas'
    ``"fixed"`` format, which keeps the columns in datasets; DeepLabCut, movement and pandas
    read both with ``read_hdf`` alike (nobody appends to or queries these files).
    """
    size = len(pickle.dumps(list(frame.columns), protocol=2))
    return "table" if size <= _MAX_TABLE_COLUMNS_BYTES else "fixed"


def _write_hdf(frame, path: Path, key: str) -> None:
    """``to_hdf`` as DeepLabCut writes it, readable by pandas 2 as well as 3.

    pandas 3 no longer stores the ``pandas_version`` attribute; pandas 2 (which DeepLabCut 3.0
    runs on) then takes the table for a pre-0.10.1 file, looks for ``values_0`` instead of
    ``values_block_0`` and fails (``'NoneType' object has no attribute 'startswith'``). Writing
    the attribute pandas 2 itself writes makes the file readable by both. See
    :func:`hdf_format` for the format.
    """
    import pandas as pd

    frame.to_hdf(path, key=key, format=hdf_format(frame), mode="w")
    with pd.HDFStore(path, mode="a") as store:
        attrs = store.get_storer(key).attrs
        if getattr(attrs, "pandas_version", None) is None:
            attrs.pandas_version = _PANDAS_HDF_FORMAT_VERSION


def _dlc_meta(info: ExportInfo, frame, individuals: dict[int, str], single_animal: bool,
              filtered: bool) -> dict:
    """DeepLabCut's ``_meta.pickle`` content (plain Python values only)."""
    from clamp_track import __version__

    video, kset = info.video, info.keypoint_set
    now = datetime.datetime.now().timestamp()
    data = {
        "start": now,
        "stop": now,
        "run_duration": 0.0,
        "Scorer": info.scorer,
        "fps": float(video.fps),
        "batch_size": 1,
        "frame_dimensions": (int(video.width), int(video.height)),
        "nframes": int(len(frame)),
        "iteration (active-learning)": 0,
        "training set fraction": 0.95,
        "cropping": False,
        "cropping_parameters": [0, int(video.width), 0, int(video.height)],
        "individuals": ([] if single_animal else
                        list(frame.columns.get_level_values("individuals").unique())),
        "bodyparts": list(kset.source_names),
        "unique_bodyparts": [],
        "clamp-track": {
            "version": __version__,
            "coordinates": "raw",
            "filtered": "smoothed (clamp-track's Kalman + RTS smoother)" if filtered else None,
            "model": info.model_name,
            "dlc_net_type": info.dlc_net_type,
            "video": str(video.path),
            "keypoint_names": list(kset.names),
            "keypoint_set": kset.name,
            "individuals": {int(t): name for t, name in individuals.items()},
        },
    }
    return {"data": data}


@dataclass(frozen=True)
class InstanceGrid:
    """The tidy keypoint table as one row per (frame, track) instance (:func:`instance_grid`).

    Attributes:
        frames: (P,) frame of each instance, ascending; ``tracks``: (P,) its track.
        time_s: (P,) its time in seconds.
        xy: (P, K, 2) coordinates (NaN where absent).
        likelihood: (P, K) confidence as the DeepLabCut table writes it: 0 for a point the
            smoother filled in, NaN where ``xy`` is NaN.
        corrected: (P, K) whether the user corrected the keypoint.
        coordinates: ``"smoothed"`` or ``"raw"``: which x/y ``xy`` holds.
    """

    frames: np.ndarray
    tracks: np.ndarray
    time_s: np.ndarray
    xy: np.ndarray
    likelihood: np.ndarray
    corrected: np.ndarray
    coordinates: str


def instance_grid(keypoints, keypoint_set: KeypointSet, smoothed: bool = True) -> InstanceGrid:
    """Gather the tidy keypoint table by instance, keypoints in ``keypoint_set`` order."""
    xcol, ycol, coordinates = _coordinate_columns(keypoints, smoothed)
    pairs, row = np.unique(keypoints[["frame", "track"]].to_numpy(np.int64).reshape(-1, 2),
                           axis=0, return_inverse=True)
    row, kp = row.reshape(-1), _keypoint_indices(keypoints["keypoint"], keypoint_set)
    shape = (len(pairs), keypoint_set.num_keypoints)
    xy, conf = np.full((*shape, 2), np.nan), np.full(shape, np.nan)
    xy[row, kp] = keypoints[[xcol, ycol]].to_numpy(np.float64)
    conf[row, kp] = keypoints["confidence"].to_numpy(np.float64)
    time_s, corrected = np.full(len(pairs), np.nan), np.zeros(shape, bool)
    if "time_s" in keypoints:
        time_s[row] = keypoints["time_s"].to_numpy(np.float64)
    if "corrected" in keypoints:
        corrected[row, kp] = keypoints["corrected"].to_numpy(bool)
    likelihood = np.where(np.isnan(xy).any(-1), np.nan, np.nan_to_num(conf, nan=0.0))
    return InstanceGrid(pairs[:, 0], pairs[:, 1], time_s, xy, likelihood, corrected,
                        coordinates)


def _coordinate_columns(keypoints, smoothed: bool) -> tuple[str, str, str]:
    has_smooth = {"x_smooth", "y_smooth"} <= set(keypoints.columns)
    if smoothed and has_smooth and (
            len(keypoints) == 0 or keypoints[["x_smooth", "y_smooth"]].notna().any().all()):
        return "x_smooth", "y_smooth", "smoothed"
    return "x", "y", "raw"


def _select_track(keypoints, track: int | None):
    tracks = sorted(int(t) for t in keypoints["track"].unique())
    if track is None:
        if len(tracks) > 1:
            raise InputError(f"a single-animal export needs one track; the results have "
                             f"{len(tracks)} ({tracks}): choose one")
        return keypoints
    if int(track) not in tracks:
        raise InputError(f"track {track} is not in the results (tracks: {tracks})")
    return keypoints[keypoints["track"] == int(track)]


def _check_unique(frames, slot, kp, n_slots: int, n_kp: int) -> None:
    flat = (frames * n_slots + slot) * n_kp + kp
    if len(np.unique(flat)) != len(flat):
        raise ValueError("the keypoint table has repeated (frame, track, keypoint) rows")


def _keypoint_indices(column, keypoint_set: KeypointSet) -> np.ndarray:
    """Index in ``keypoint_set`` of each value (a name, source name or index)."""
    import pandas as pd

    if pd.api.types.is_integer_dtype(column):
        idx = column.to_numpy(dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= keypoint_set.num_keypoints):
            raise InputError(f"keypoint indices outside 0..{keypoint_set.num_keypoints - 1}")
        return idx
    lookup = {name: keypoint_set.index(name) for name in column.unique()}
    return column.map(lookup).to_numpy(dtype=np.int64)


def _require_columns(table, columns, what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}")


# ---------------------------------------------------------------------- annotated video


@dataclass(frozen=True)
class VideoStyle:
    """How the annotated video looks.

    Attributes:
        smoothed: Draw smoothed keypoints where the table has them, else raw.
        min_confidence: Keypoints with a lower confidence are not drawn (NaN confidence, a
            point the smoother filled in, is drawn grey).
        confidence_bins: Upper edges of the four confidence classes drawn red, orange, yellow,
            green.
        radius: Keypoint radius in pixels.
        thickness: Box and skeleton line width in pixels.
        crf: H.264 quality (lower is better and larger; 18-28 is usual).
    """

    smoothed: bool = True
    min_confidence: float = 0.0
    confidence_bins: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    radius: int = 4
    thickness: int = 2
    crf: int = 20

    def __post_init__(self):
        if len(self.confidence_bins) != len(_CONFIDENCE_COLORS):
            raise ValueError(f"confidence_bins needs {len(_CONFIDENCE_COLORS)} upper edges")


_CONFIDENCE_COLORS = ("#e6194b", "#f58231", "#ffe119", "#3cb44b")
_NO_CONFIDENCE_COLOR = "#a0a0a0"


def write_annotated_video(frames: Iterable[tuple[int, np.ndarray]], path: str | os.PathLike,
                          info: ExportInfo, keypoints=None, boxes=None,
                          style: VideoStyle | None = None) -> Path:
    """Draw boxes, track ids, skeletons and keypoints on frames and write an H.264 video.

    Drawn with supervision's annotators: ``BoxAnnotator`` and ``LabelAnnotator`` (box and
    ``animal<id>`` label in the track's colour), ``EdgeAnnotator`` (skeleton in the track's
    colour) and ``VertexAnnotator`` (keypoints coloured by confidence class).

    Args:
        frames: ``(frame_index, image)`` pairs, image (H, W, 3) uint8 RGB, in output order
            (e.g. from the video reader); frames without results are written unchanged.
        path: Output video (``.mp4`` unless the suffix says ``.mov``/``.mkv``).
        info: Keypoint set (skeleton) and video (frame rate).
        keypoints: The tidy keypoint table, or None.
        boxes: The box table (:data:`BOX_COLUMNS`), or None.
        style: Drawing options.

    Returns:
        The written path. Odd frame sizes are padded by one black row/column (H.264 4:2:0).
    """
    style = style or VideoStyle()
    path = Path(path)
    drawer = _FrameDrawer(info.keypoint_set, keypoints, boxes, style, info.track_names)
    with _atomic(path) as (tmp,):
        writer = None
        try:
            for index, image in frames:
                if writer is None:
                    writer = _H264Writer(tmp, info.video.fps, image.shape[1], image.shape[0],
                                         style.crf, _container_format(path))
                writer.write(drawer.draw(int(index), image))
            if writer is None:
                raise InputError(f"{path}: no frames to write")
        finally:
            if writer is not None:
                writer.close()
    return path


def _container_format(path: Path) -> str:
    return {".mov": "mov", ".mkv": "matroska"}.get(path.suffix.lower(), "mp4")


class _H264Writer:
    """Minimal PyAV H.264 writer (constant frame rate, yuv420p)."""

    def __init__(self, path: Path, fps: float, width: int, height: int, crf: int, fmt: str):
        import av

        self.size = (width + width % 2, height + height % 2)
        self.container = av.open(str(path), mode="w", format=fmt)
        rate = Fraction(fps if fps and fps > 0 else 30.0).limit_denominator(100_000)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = self.size
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": "veryfast"}

    def write(self, bgr: np.ndarray) -> None:
        import av

        h, w = bgr.shape[:2]
        if (w + w % 2, h + h % 2) != self.size:
            raise ValueError(f"frame size {w}x{h} differs from the first frame's")
        if (w, h) != self.size:
            bgr = np.pad(bgr, ((0, self.size[1] - h), (0, self.size[0] - w), (0, 0)))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self.container.close()


class _FrameDrawer:
    """Per-frame drawing with supervision's annotators; the tables are indexed once."""

    def __init__(self, keypoint_set: KeypointSet, keypoints, boxes, style: VideoStyle,
                 track_names: dict[int, str] | None = None):
        import supervision as sv

        self.sv, self.style = sv, style
        tracks = [t for table in (keypoints, boxes) if table is not None and len(table)
                  for t in table["track"].unique()]
        self.names = individual_names(tracks, track_names)
        self.n_kp = keypoint_set.num_keypoints
        self.edges = [(a + 1, b + 1) for a, b in keypoint_set.skeleton]  # sv edges are 1-based
        self.palette = sv.ColorPalette.DEFAULT
        self.boxes = _group_boxes(boxes)
        self.points = _group_points(keypoints, keypoint_set, style.smoothed)
        self.box_annotator = sv.BoxAnnotator(color=self.palette, thickness=style.thickness,
                                             color_lookup=sv.ColorLookup.TRACK)
        self.label_annotator = sv.LabelAnnotator(color=self.palette, text_scale=0.5,
                                                 text_padding=4,
                                                 color_lookup=sv.ColorLookup.TRACK)
        colors = [sv.Color.from_hex(c) for c in _CONFIDENCE_COLORS]
        self.vertex_annotators = [sv.VertexAnnotator(color=c, radius=style.radius)
                                  for c in colors]
        self.grey_vertices = sv.VertexAnnotator(color=sv.Color.from_hex(_NO_CONFIDENCE_COLOR),
                                                radius=style.radius)

    def draw(self, index: int, rgb: np.ndarray) -> np.ndarray:
        """The annotated frame, BGR (supervision's annotators draw in OpenCV's BGR order)."""
        scene = np.ascontiguousarray(rgb[..., ::-1])
        if index in self.boxes:
            scene = self._draw_boxes(scene, *self.boxes[index])
        if index in self.points:
            scene = self._draw_points(scene, *self.points[index])
        return scene

    def _draw_boxes(self, scene, tracks, xyxy):
        sv = self.sv
        det = sv.Detections(xyxy=xyxy, class_id=np.zeros(len(tracks), dtype=int),
                            tracker_id=tracks)
        scene = self.box_annotator.annotate(scene, det)
        return self.label_annotator.annotate(scene, det,
                                             labels=[self.names[int(t)] for t in tracks])

    def _draw_points(self, scene, tracks, xy, confidence):
        sv = self.sv
        shown = ~np.isnan(xy).any(-1) & ~(confidence < self.style.min_confidence)
        for i, track in enumerate(tracks):
            one = sv.KeyPoints(xy=xy[i:i + 1].astype(np.float32), visible=shown[i:i + 1])
            if self.edges:
                color = self.palette.by_idx(int(track))
                scene = sv.EdgeAnnotator(color=color, thickness=self.style.thickness,
                                         edges=self.edges).annotate(scene, one)
        # confidence class 0..n-1 (values above the last edge count in the last class)
        classes = np.digitize(confidence, self.style.confidence_bins[:-1], right=True)
        for c, annotator in enumerate(self.vertex_annotators):
            in_class = shown & (classes == c) & ~np.isnan(confidence)
            scene = annotator.annotate(scene, sv.KeyPoints(xy=xy.astype(np.float32),
                                                           visible=in_class))
        unknown = shown & np.isnan(confidence)
        return self.grey_vertices.annotate(scene, sv.KeyPoints(xy=xy.astype(np.float32),
                                                               visible=unknown))


def _group_boxes(boxes) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Index the box table: frame -> (track ids (N,), boxes (N, 4))."""
    if boxes is None or len(boxes) == 0:
        return {}
    _require_columns(boxes, BOX_COLUMNS, "box table")
    out = {}
    for frame, rows in boxes.groupby("frame", sort=False):
        out[int(frame)] = (rows["track"].to_numpy(dtype=np.int64),
                           rows[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float32))
    return out


def _group_points(keypoints, keypoint_set: KeypointSet, smoothed: bool) -> dict:
    """Index the keypoint table: frame -> (track ids (N,), xy (N, K, 2), confidence (N, K))."""
    if keypoints is None or len(keypoints) == 0:
        return {}
    _require_columns(keypoints, ("frame", "track", "keypoint", "x", "y", "confidence"),
                     "keypoint table")
    xcol, ycol, _ = _coordinate_columns(keypoints, smoothed)
    table = keypoints.assign(_k=_keypoint_indices(keypoints["keypoint"], keypoint_set))
    out = {}
    k = keypoint_set.num_keypoints
    for frame, rows in table.groupby("frame", sort=False):
        tracks, slot = np.unique(rows["track"].to_numpy(dtype=np.int64), return_inverse=True)
        xy = np.full((len(tracks), k, 2), np.nan)
        conf = np.full((len(tracks), k), np.nan)
        kp = rows["_k"].to_numpy()
        xy[slot, kp] = rows[[xcol, ycol]].to_numpy(dtype=np.float64)
        conf[slot, kp] = rows["confidence"].to_numpy(dtype=np.float64)
        out[int(frame)] = (tracks, xy, conf)
    return out


# ---------------------------------------------------------------------------- plots


def write_track_plots(keypoints, out_dir: str | os.PathLike, info: ExportInfo) -> list[Path]:
    """One PNG per track: x and y over time (raw dots, smoothed lines) and confidence.

    Smoothed lines carry a band of two standard deviations (``sqrt(variance)``) when the
    table has a ``variance`` column. Files are ``<video stem>_track<id>.png``.

    Args:
        keypoints: The tidy keypoint table (``time_s`` on the time axis).
        out_dir: Folder for the PNGs.
        info: Keypoint set (names, order) and video (file stem).

    Returns:
        The written paths, by track id (none for a table without tracks).
    """
    _require_columns(keypoints, ("frame", "time_s", "track", "keypoint", "x", "y",
                                 "confidence"), "keypoint table")
    out_dir = _writable_dir(Path(out_dir))
    written = []
    names = individual_names(keypoints["track"].unique(), info.track_names)
    for track, rows in keypoints.groupby("track", sort=True):
        path = out_dir / f"{info.stem}_track{int(track)}.png"
        figure = _track_figure(rows, int(track), names[int(track)], info)
        with _atomic(path) as (tmp,):
            figure.savefig(tmp, format="png", dpi=100)
        written.append(path)
    return written


def _limit_to_data(ax, rows, coord: str, video: VideoInfo) -> None:
    """Y limits from the positions, not the uncertainty bands (which can be huge in gaps)."""
    values = rows[[c for c in (coord, f"{coord}_smooth") if c in rows]].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return
    side = video.width if coord == "x" else video.height
    lo, hi = max(values.min(), -0.5 * side), min(values.max(), 1.5 * side)
    pad = 0.05 * (hi - lo) + 1.0
    ax.set_ylim(lo - pad, hi + pad)


def _track_figure(rows, track: int, name: str, info: ExportInfo):
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    kset = info.keypoint_set
    rows = rows.assign(_k=_keypoint_indices(rows["keypoint"], kset))
    figure = Figure(figsize=(11, 8), layout="constrained")
    axes = figure.subplots(3, 1, sharex=True)
    cmap = matplotlib.colormaps["tab20"]
    has_smooth = {"x_smooth", "y_smooth"} <= set(rows.columns)
    for k, group in rows.groupby("_k", sort=True):
        group = group.sort_values("frame")
        color = cmap(int(k) % 20)
        t = group["time_s"].to_numpy(dtype=float)
        for ax, coord in zip(axes[:2], ("x", "y")):
            ax.plot(t, group[coord].to_numpy(dtype=float), ".", ms=2, color=color, alpha=0.5)
            if has_smooth:
                smooth = group[f"{coord}_smooth"].to_numpy(dtype=float)
                ax.plot(t, smooth, "-", lw=1, color=color, label=kset.source_names[k])
                if "variance" in group:
                    sd = np.sqrt(group["variance"].to_numpy(dtype=float))
                    ax.fill_between(t, smooth - 2 * sd, smooth + 2 * sd, color=color,
                                    alpha=0.15, lw=0)
        axes[2].plot(t, group["confidence"].to_numpy(dtype=float), "-", lw=1, color=color,
                     label=kset.source_names[k])
    for ax, coord in zip(axes[:2], ("x", "y")):
        _limit_to_data(ax, rows, coord, info.video)
    axes[0].set_ylabel("x (px)")
    axes[1].set_ylabel("y (px)")
    axes[1].invert_yaxis()  # image rows grow downwards
    axes[2].set_ylabel("confidence")
    axes[2].set_ylim(-0.02, 1.02)
    axes[2].set_xlabel("time (s)")
    axes[2].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    smooth_note = "dots raw, lines smoothed ±2 sd" if has_smooth else "dots raw"
    figure.suptitle(f"{info.stem}: {name} (track {track}), "
                    f"{info.model_name}; {smooth_note}")
    return figure
