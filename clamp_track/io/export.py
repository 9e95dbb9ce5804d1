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
* multi-animal (default): ``<video stem><scorer>_el.h5`` with HDF5 key ``tracks``, columns
  ``scorer / individuals / bodyparts / coords``; track id ``t`` is individual ``animal<t>``
  (final ids 1..M from the tracker give ``animal1``...); single-animal:
  ``<video stem><scorer>.h5``, key ``df_with_missing``, columns ``scorer / bodyparts /
  coords``;
* bodyparts are ``KeypointSet.source_names`` (the dataset spelling DeepLabCut users know, e.g.
  ``left_eye``), coords ``x, y, likelihood`` in that order, one row per video frame 0..n-1
  with NaN where an animal is absent; the ``.csv`` twin is the same table's ``to_csv``;
* ``<video stem><scorer>_meta.pickle`` with DeepLabCut's ``{"data": {...}}`` keys, plain Python
  values only, plus ``"clamp-track"``: which coordinates were written (smoothed or raw), the
  track-to-individual mapping, keypoint names and the model.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

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
            it); defaults to today.
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
    if date is None:
        today = datetime.date.today()
        date = f"{today.strftime('%b')}{today.day}"
    return f"DLC_{net}_{task}{date}shuffle{shuffle}_snapshot_{snapshot}"


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
            try:
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.",
                                           suffix=f".tmp{path.suffix}")
            except OSError as exc:
                raise InputError(f"{folder}: cannot write there ({exc.strerror}); "
                                 "choose another output directory") from None
            os.close(fd)
            temps.append(Path(tmp))
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
        table[list(KEYPOINT_COLUMNS) + extra].to_csv(tmp, index=False)
    return path


# ------------------------------------------------------------------------- DeepLabCut


@dataclass(frozen=True)
class DlcExport:
    """Files written by :func:`write_dlc`.

    Attributes:
        h5: The ``.h5`` (pandas/PyTables, one key).
        csv: The ``.csv`` twin, or None.
        meta: The ``_meta.pickle``.
        scorer: The scorer in the columns and the file names.
        coordinates: ``"smoothed"`` or ``"raw"``: which x/y were written.
        individuals: Track id -> DeepLabCut individual name (empty for single-animal).
    """

    h5: Path
    csv: Path | None
    meta: Path
    scorer: str
    coordinates: str
    individuals: dict[int, str]


def individual_name(track: int, names: dict[int, str] | None = None) -> str:
    """DeepLabCut individual of a track id: 1 -> ``animal1``, or the name the user gave it."""
    given = (names or {}).get(int(track))
    return given if given else f"animal{int(track)}"


def dlc_table(keypoints, info: ExportInfo, *, single_animal: bool = False,
              track: int | None = None, smoothed: bool = True):
    """The DeepLabCut DataFrame of the results (what :func:`write_dlc` writes).

    Args:
        keypoints: The tidy keypoint table.
        info: Keypoint set, video and scorer.
        single_animal: Columns ``scorer / bodyparts / coords`` for one track instead of
            ``scorer / individuals / bodyparts / coords`` for all.
        track: The track of a single-animal table; needed when there is more than one.
        smoothed: Write ``x_smooth, y_smooth`` (when the table has any) instead of ``x, y``.

    Returns:
        ``(frame, coordinates, individuals)``: the DataFrame (index 0..n_frames-1, float64),
        ``"smoothed"`` or ``"raw"``, and the track -> individual mapping. Likelihood is the
        keypoint confidence, 0 for a point the smoother filled in (no confidence) and NaN where
        the written x/y are NaN. A multi-animal table with no tracks has one all-NaN individual
        ``animal1``, so DeepLabCut still opens it.
    """
    import pandas as pd

    _require_columns(keypoints, ("frame", "track", "keypoint", "x", "y", "confidence"),
                     "keypoint table")
    xcol, ycol, coordinates = _coordinate_columns(keypoints, smoothed)
    table = _select_track(keypoints, track) if single_animal else keypoints
    tracks = sorted(int(t) for t in table["track"].unique())
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
    names = ["scorer", "individuals", "bodyparts", "coords"]
    levels = [[info.scorer], [individual_name(t, info.track_names) for t in slots],
              list(kset.source_names), ["x", "y", "likelihood"]]
    if single_animal:
        del names[1], levels[1]
    columns = pd.MultiIndex.from_product(levels, names=names)
    frame = pd.DataFrame(values.reshape(n_frames, -1), columns=columns, index=range(n_frames))
    individuals = {} if single_animal else {t: individual_name(t, info.track_names) for t in tracks}
    return frame, coordinates, individuals


def write_dlc(keypoints, out_dir: str | os.PathLike, info: ExportInfo, *,
              single_animal: bool = False, track: int | None = None, smoothed: bool = True,
              csv: bool = True) -> DlcExport:
    """Write DeepLabCut-compatible ``.h5`` (+ ``.csv``) and ``_meta.pickle`` files.

    Args:
        keypoints: The tidy keypoint table.
        out_dir: Folder for the files (DeepLabCut looks beside the video or where it is told).
        info: Keypoint set, video, model name.
        single_animal: Write DeepLabCut's single-animal layout for one track (see
            :func:`dlc_table`); otherwise the multi-animal tracked layout (``_el``).
        track: The track of a single-animal export.
        smoothed: Smoothed coordinates where the table has them (the default), else raw.
        csv: Also write the ``.csv`` twin.

    Returns:
        The written files and what went into them.
    """
    frame, coordinates, individuals = dlc_table(keypoints, info, single_animal=single_animal,
                                                track=track, smoothed=smoothed)
    base = Path(out_dir) / f"{info.stem}{info.scorer}"
    suffix = "" if single_animal else DLC_TRACK_SUFFIX
    h5 = base.with_name(base.name + suffix + ".h5")
    csv_path = h5.with_suffix(".csv") if csv else None
    meta = base.with_name(base.name + "_meta.pickle")
    key = "df_with_missing" if single_animal else "tracks"
    meta_data = _dlc_meta(info, frame, coordinates, individuals, single_animal)
    outputs = [h5, meta] + ([csv_path] if csv else [])
    with _atomic(*outputs) as temps:
        _write_hdf(frame, temps[0], key)
        with open(temps[1], "wb") as fh:
            pickle.dump(meta_data, fh, pickle.HIGHEST_PROTOCOL)
        if csv:
            frame.to_csv(temps[2])
    return DlcExport(h5, csv_path, meta, info.scorer, coordinates, individuals)


#: Format version pandas 1.x-2.x write into every HDF5 table (``pandas_version`` attribute).
_PANDAS_HDF_FORMAT_VERSION = "0.15.2"


def _write_hdf(frame, path: Path, key: str) -> None:
    """``to_hdf`` as DeepLabCut writes it, readable by pandas 2 as well as 3.

    pandas 3 no longer stores the ``pandas_version`` attribute; pandas 2 (which DeepLabCut 3.0
    runs on) then takes the table for a pre-0.10.1 file, looks for ``values_0`` instead of
    ``values_block_0`` and fails (``'NoneType' object has no attribute 'startswith'``). Writing
    the attribute pandas 2 itself writes makes the file readable by both.
    """
    import pandas as pd

    frame.to_hdf(path, key=key, format="table", mode="w")
    with pd.HDFStore(path, mode="a") as store:
        attrs = store.get_storer(key).attrs
        if getattr(attrs, "pandas_version", None) is None:
            attrs.pandas_version = _PANDAS_HDF_FORMAT_VERSION


def _dlc_meta(info: ExportInfo, frame, coordinates: str, individuals: dict[int, str],
              single_animal: bool) -> dict:
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
            "coordinates": coordinates,
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
    drawer = _FrameDrawer(info.keypoint_set, keypoints, boxes, style)
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

    def __init__(self, keypoint_set: KeypointSet, keypoints, boxes, style: VideoStyle):
        import supervision as sv


        self.sv, self.style = sv, style
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
                                             labels=[individual_name(t) for t in tracks])

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
    for track, rows in keypoints.groupby("track", sort=True):
        path = out_dir / f"{info.stem}_track{int(track)}.png"
        figure = _track_figure(rows, int(track), info)
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


def _track_figure(rows, track: int, info: ExportInfo):
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
    figure.suptitle(f"{info.stem}: {individual_name(track)} (track {track}), "
                    f"{info.model_name}; {smooth_note}")
    return figure
