"""Behaviour measures per animal, computed with ``movement`` from a result store.

The poses come from the store through one loader, registered with ``movement`` as the source
software ``"clamp-track"`` (:func:`load_store_poses`): after ``import
clamp_track.pipelines.behaviour``, ``movement.io.load_dataset(store, "clamp-track")`` returns
the dataset the behaviour layer itself analyses. It holds the corrected, smoothed coordinates
every export writes (:func:`clamp_track.pipelines.run.corrected_table`): smoothed keypoints,
the user's corrections in place, occluded marks missing; its ``confidence`` is the keypoint
confidence (1 for a corrected keypoint, 0 for one the smoother filled in without a
measurement). Time is the frames' real timestamps in seconds; track ``t`` is individual
``animal<t>`` as in the DeepLabCut, SLEAP and NWB exports.

From that dataset, :func:`compute_behaviour` uses movement's filtering and kinematics:

* keypoints with confidence below ``min_confidence`` become gaps (NaN), not zeros
  (``movement.filtering.filter_by_confidence``), so low-confidence stretches produce no speed,
  distance or state;
* the **body centre** is the mean of the visible centre keypoints (default: the torso
  keypoints of the keypoint set, :func:`body_plan`);
* **speed** and **acceleration** are the norms of movement's velocity and acceleration of the
  centre (second-order central differences over the real timestamps);
* **heading** is the direction of the body axis (tail root -> neck), in degrees
  counter-clockwise from the image's +x axis as seen on screen, in (-180, 180];
* **distance** is the path length of the centre, summed over consecutive frames where it is
  defined (a gap is not bridged by a straight line);
* **joint angles** at the keypoints the skeleton joins to exactly two others and whose names
  are joints (elbow, knee, shoulder, hip, ...), in degrees in [0, 180];
* **body length** is the nose (or snout) to tail-root distance;
* the **state** is ``resting`` below ``rest_below`` body lengths per second, ``running`` at or
  above ``run_above``, ``walking`` between, with the animal's median body length;
* per animal: the activity budget (seconds and fraction of the frames with a state), time
  visible (frames with a body centre times the frame interval) and total distance.

Lengths are in pixels, or in metres when ``px_per_m`` is given (``movement.transforms.scale``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clamp_track.errors import InputError, require
from clamp_track.pipelines.qc import QCConfig
from clamp_track.skeleton import KeypointSet

#: The source software name under which the store loader is registered with movement.
SOURCE_SOFTWARE = "clamp-track"
#: Activity states, slowest first.
STATES = ("resting", "walking", "running")
#: Colours of the states in the plots and the GUI (resting, walking, running).
STATE_COLORS = {"resting": "#4363d8", "walking": "#3cb44b", "running": "#e6194b"}
#: Number format of the CSVs: 10 significant digits (no float noise such as 4.0000000000000036).
CSV_FLOAT = "%.10g"
#: What the coordinates are, written in both CSVs.
COORDINATES = "smoothed+corrected"

#: Name fragments of torso keypoints (the default body centre).
TORSO_WORDS = ("neck", "withers", "throat", "shoulder", "hip", "tail root", "tail base",
               "tailbase", "root of tail", "spine", "thorax", "abdomen", "chest",
               "centroid", "centre", "center", "body", "pelvis")
#: Name fragments of joints whose angle is measured when the skeleton gives two neighbours.
JOINT_WORDS = ("elbow", "knee", "shoulder", "hip", "wrist", "ankle", "hock", "stifle")
#: Front ends of the body, most preferred first: for the body length ...
LENGTH_FRONT = ("nose", "snout", "head", "neck", "withers")
#: ... and for the heading (the torso's axis turns less than the head).
HEADING_FRONT = ("neck", "withers", "throat", "nose", "snout", "head")
#: Back ends of the body.
BACK = ("tail root", "tail base", "tailbase", "root of tail", "tail", "abdomen")

#: Columns of the per-frame table, before the joint-angle columns ``angle_<keypoint>``.
FRAME_COLUMNS = ("frame", "time_s", "track", "individual", "centre_x", "centre_y", "speed",
                 "acceleration", "heading_deg", "distance", "body_length", "speed_bl_s",
                 "state", "length_unit", "coordinates")
#: Columns of the per-animal summary.
SUMMARY_COLUMNS = ("track", "individual", "frames_visible", "time_visible_s", "total_distance",
                   "mean_speed", "max_speed", "body_length", "resting_s", "walking_s",
                   "running_s", "resting_fraction", "walking_fraction", "running_fraction",
                   "rest_below_bl_s", "run_above_bl_s", "length_unit", "coordinates")


@dataclass(frozen=True)
class BehaviourConfig:
    """Settings of the behaviour measures.

    Attributes:
        centre: Keypoint names whose visible mean is the body centre (default: the torso
            keypoints of the set, see :func:`body_plan`).
        min_confidence: Keypoints below this confidence are gaps (default: the review queue's
            low-confidence threshold).
        rest_below: Resting below this speed, in body lengths per second.
        run_above: Running at or above this speed, in body lengths per second.
        px_per_m: Pixels per metre; lengths are then in metres instead of pixels.
    """

    centre: tuple[str, ...] = ()
    min_confidence: float = QCConfig.low_confidence
    rest_below: float = 0.2
    run_above: float = 2.0
    px_per_m: float | None = None

    def __post_init__(self):
        if not 0 <= self.rest_below <= self.run_above:
            raise InputError(f"activity thresholds need 0 <= rest below ({self.rest_below}) "
                             f"<= run above ({self.run_above}) body lengths per second")
        if self.px_per_m is not None and not self.px_per_m > 0:
            raise InputError(f"--px-per-m must be a positive number, got {self.px_per_m}")

    @property
    def length_unit(self) -> str:
        """``"m"`` with a scale, else ``"px"``."""
        return "m" if self.px_per_m else "px"


@dataclass(frozen=True)
class BodyPlan:
    """Which keypoints the measures use (indices into the keypoint set).

    Attributes:
        centre: Keypoints averaged into the body centre.
        length: ``(front, back)`` of the body length, or None.
        heading: ``(front, back)`` of the heading axis, or None.
        angles: ``(a, joint, c)`` triples; the angle is measured at ``joint``.
    """

    centre: tuple[int, ...]
    length: tuple[int, int] | None
    heading: tuple[int, int] | None
    angles: tuple[tuple[int, int, int], ...] = field(default=())


@dataclass
class BehaviourResult:
    """The measures of one store.

    Attributes:
        frames: Per-frame table (:data:`FRAME_COLUMNS` and ``angle_<keypoint>`` columns), one
            row per frame and animal where the animal is in the store.
        summary: Per-animal table (:data:`SUMMARY_COLUMNS`).
        poses: The movement dataset the measures were computed from.
        config: The settings used.
        plan: The keypoints used.
    """

    frames: object
    summary: object
    poses: object
    config: BehaviourConfig
    plan: BodyPlan


# ============================================================================================
# Keypoints


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


def _has_word(name: str, words) -> bool:
    """Whether ``name`` contains one of ``words`` (spaces, ``_``, ``-`` and case ignored)."""
    text = _norm(name).replace(" ", "")
    return any(w.replace(" ", "") in text for w in words)


def _first(kset: KeypointSet, words) -> int | None:
    for word in words:
        for i, name in enumerate(kset.names):
            if _has_word(name, (word,)):
                return i
    return None


def body_plan(kset: KeypointSet, centre=()) -> BodyPlan:
    """The keypoints of the body centre, body length, heading axis and joint angles.

    The centre is ``centre`` (names) if given, else every keypoint named like a torso part
    (:data:`TORSO_WORDS`: neck, withers, shoulders, hips, tail root, ...), else all keypoints.
    Joint angles are measured at each keypoint named like a joint (:data:`JOINT_WORDS`) that
    the skeleton joins to exactly two others, e.g. AP-10K's elbow between shoulder and paw.

    Args:
        kset: The store's keypoint set.
        centre: Keypoint names of the body centre (names or dataset spellings).

    Returns:
        The plan; unknown centre names raise :class:`InputError` listing the keypoints.
    """
    if centre:
        idx = tuple(dict.fromkeys(kset.index(n) for n in centre))
    else:
        idx = tuple(i for i, n in enumerate(kset.names) if _has_word(n, TORSO_WORDS))
        idx = idx or tuple(range(kset.num_keypoints))
    back = _first(kset, BACK)
    axes = []
    for fronts in (LENGTH_FRONT, HEADING_FRONT):
        front = _first(kset, fronts)
        axes.append((front, back) if None not in (front, back) and front != back else None)
    neighbours: dict[int, list[int]] = {}
    for a, b in kset.skeleton:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    angles = tuple((near[0], j, near[1]) for j, near in sorted(neighbours.items())
                   if len(near) == 2 and _has_word(kset.names[j], JOINT_WORDS))
    return BodyPlan(idx, axes[0], axes[1], angles)


# ============================================================================================
# Loading: one path, registered with movement


def _movement():
    return require("movement.io", "behaviour", "clamp-track behaviour")


def register_movement_loader() -> None:
    """Register :func:`load_store_poses` with movement as source software ``"clamp-track"``.

    Afterwards ``movement.io.load_dataset(store, "clamp-track")`` loads a result store.
    Registering again is harmless.
    """
    load = require("movement.io.load", "behaviour", "clamp-track behaviour")
    load.register_loader(SOURCE_SOFTWARE)(load_store_poses)


def load_store_poses(file, fps: float | None = None):
    """A result store as a movement poses dataset (what the behaviour layer analyses).

    Args:
        file: A ``<video>.clamp.sqlite`` store.
        fps: Ignored: time is the frames' real timestamps in seconds (movement's loaders
            take it; the store knows its timestamps).

    Returns:
        movement poses dataset ``(time, space, keypoints, individuals)`` with ``position`` in
        frame pixels (corrected, smoothed), ``confidence``, a ``frame`` coordinate on
        ``time``; keypoints are the dataset spellings, individuals ``animal<t>``.
    """
    from clamp_track.io.store import ResultStore
    from clamp_track.pipelines.run import corrected_table

    with ResultStore.open(file, readonly=True) as store:
        if not store.complete:
            raise InputError(f"{file}: the run did not finish; finish it with "
                             "`clamp-track run VIDEO --resume` first")
        kset, video = store.keypoints, store.video_info
        frames, times = store.frame_times()
        table = corrected_table(store)
    return poses_from_table(table, kset, frames, times, source=Path(file), fps=video.fps)


def poses_from_table(table, kset: KeypointSet, frames, times, *, source=None, fps=None):
    """Build the movement dataset from a tidy keypoint table (see :func:`load_store_poses`).

    Args:
        table: The tidy keypoint table (``corrected_table`` of a store).
        kset: Its keypoint set.
        frames: (T,) every processed frame, ascending.
        times: (T,) their times in seconds.
        source: The file, recorded in the dataset's attributes.
        fps: The video's frame rate, recorded in the attributes.
    """
    from clamp_track.io.export import individual_names, instance_grid

    grid = instance_grid(table, kset, smoothed=True)
    tracks = np.unique(grid.tracks)
    row = np.searchsorted(frames, grid.frames)
    if len(grid.frames) and not np.array_equal(frames[np.minimum(row, len(frames) - 1)],
                                               grid.frames):
        raise InputError(f"{source}: instances on frames the store has no time for")
    col = np.searchsorted(tracks, grid.tracks)
    position = np.full((len(frames), 2, kset.num_keypoints, len(tracks)), np.nan)
    confidence = np.full((len(frames), kset.num_keypoints, len(tracks)), np.nan)
    position[row, :, :, col] = grid.xy.transpose(0, 2, 1)  # (P, 2, K)
    confidence[row, :, col] = grid.likelihood
    ds = _movement().load_poses.from_numpy(
        position, confidence, individual_names=list(individual_names(tracks).values()),
        keypoint_names=list(kset.source_names), source_software=SOURCE_SOFTWARE)
    ds = ds.assign_coords(time=np.asarray(times, float), frame=("time", np.asarray(frames)),
                          track=("individuals", tracks.astype(int)))
    ds.attrs.update(time_unit="seconds", fps=fps, coordinates=COORDINATES,
                    source_file=str(source) if source else None)
    return ds


# ============================================================================================
# Measures


def compute_behaviour(store, config: BehaviourConfig | None = None) -> BehaviourResult:
    """All measures of a result store (see the module docstring).

    Args:
        store: Path of a complete ``<video>.clamp.sqlite``.
        config: Settings (defaults: :class:`BehaviourConfig`).

    Returns:
        The per-frame and per-animal tables, and the dataset they came from.
    """
    from clamp_track.io.store import ResultStore

    config = config or BehaviourConfig()
    register_movement_loader()
    ds = _movement().load_dataset(Path(store), SOURCE_SOFTWARE)
    with ResultStore.open(store, readonly=True) as s:
        kset = s.keypoints
    return measure(ds, kset, config)


def measure(ds, kset: KeypointSet, config: BehaviourConfig) -> BehaviourResult:
    """The measures of a movement poses dataset whose keypoints are ``kset``'s."""
    from movement.filtering import filter_by_confidence
    from movement.kinematics import (
        compute_acceleration,
        compute_forward_displacement,
        compute_speed,
    )
    from movement.transforms import scale
    from movement.utils.vector import compute_norm

    plan = body_plan(kset, config.centre)
    names = list(kset.source_names)
    position = filter_by_confidence(ds.position, ds.confidence, config.min_confidence)
    if config.px_per_m:
        position = scale(position, factor=1.0 / config.px_per_m, space_unit="m")
    centre = _nanmean(position.isel(keypoints=list(plan.centre)), "keypoints")
    speed = compute_speed(centre)
    accel = compute_norm(compute_acceleration(centre))
    step = compute_norm(compute_forward_displacement(centre)).shift(time=1)  # t-1 -> t
    distance = step.fillna(0).cumsum("time").where(centre.notnull().all("space"))
    body_length = _distance(position, plan.length, names)
    heading = _heading(position, plan.heading, names)
    columns = {
        "centre_x": centre.sel(space="x"), "centre_y": centre.sel(space="y"),
        "speed": speed, "acceleration": accel, "heading_deg": heading, "distance": distance,
        "body_length": body_length,
    }
    for a, j, c in plan.angles:
        columns[f"angle_{names[j]}"] = _angle(position, (names[a], names[j], names[c]))
    frames = _frame_table(ds, columns, config)
    frames.insert(frames.columns.get_loc("coordinates"), "length_unit", config.length_unit)
    summary = _summary(frames, ds, config)
    return BehaviourResult(frames=frames, summary=summary, poses=ds, config=config, plan=plan)


def _nanmean(data, dim: str):
    """Mean over ``dim`` of the values that are there; NaN where none is."""
    count = data.notnull().sum(dim)
    return (data.fillna(0).sum(dim) / count).where(count > 0)


def _distance(position, pair, names):
    """Per-frame distance between the two keypoints of ``pair`` (None: all NaN)."""
    if pair is None:
        return position.isel(keypoints=0, space=0) * np.nan
    from movement.utils.vector import compute_norm

    front, back = (position.sel(keypoints=names[i]) for i in pair)
    return compute_norm(front - back)


def _heading(position, pair, names):
    """Direction back -> front in degrees counter-clockwise on screen, (-180, 180]."""
    if pair is None:
        return position.isel(keypoints=0, space=0) * np.nan
    from movement.utils.vector import compute_signed_angle_2d

    front, back = (position.sel(keypoints=names[i]) for i in pair)
    axis = (front - back) * position.space.copy(data=[1.0, -1.0])  # y up, as seen on screen
    angle = compute_signed_angle_2d(axis, np.array([1.0, 0.0]), v_as_left_operand=True)
    return (np.degrees(angle) + 0.0).where(axis.notnull().all("space"))  # + 0.0: no -0.0


def _angle(position, triple):
    """Angle at the middle keypoint of ``triple`` (names) in degrees, [0, 180]."""
    from movement.utils.vector import compute_signed_angle_2d

    a, j, c = (position.sel(keypoints=n) for n in triple)
    u, v = a - j, c - j
    angle = np.degrees(np.abs(compute_signed_angle_2d(u, v)))
    return angle.where(u.notnull().all("space") & v.notnull().all("space"))


def _frame_table(ds, columns: dict, config: BehaviourConfig):
    """One row per (frame, animal) where the animal is in the store."""
    import pandas as pd

    present = ds.position.notnull().any(["space", "keypoints"]) | ds.confidence.notnull().any(
        "keypoints")  # (time, individuals): the animal has an instance on this frame
    parts = []
    for i, individual in enumerate(ds.individuals.values):
        keep = present.isel(individuals=i).values
        part = {"frame": ds.frame.values[keep], "time_s": ds.time.values[keep],
                "track": int(ds.track.values[i]), "individual": str(individual)}
        for name, values in columns.items():
            part[name] = np.asarray(values.isel(individuals=i).values, float)[keep]
        parts.append(pd.DataFrame(part))
    angle_cols = [c for c in columns if c.startswith("angle_")]
    order = [c for c in FRAME_COLUMNS if c not in ("length_unit", "coordinates")
             and c not in ("speed_bl_s", "state")]
    if not parts:
        frames = pd.DataFrame(columns=order + angle_cols)
    else:
        frames = pd.concat(parts, ignore_index=True)
    lengths = frames.groupby("track")["body_length"].transform("median") if len(frames) else []
    frames["speed_bl_s"] = frames["speed"] / lengths if len(frames) else []
    frames["state"] = _states(frames["speed_bl_s"].to_numpy(float), config)
    frames["coordinates"] = COORDINATES
    frames = frames.sort_values(["frame", "track"], kind="stable", ignore_index=True)
    return frames[[c for c in FRAME_COLUMNS if c != "length_unit"] + angle_cols]


def _states(speed_bl: np.ndarray, config: BehaviourConfig) -> np.ndarray:
    """``resting``/``walking``/``running`` per speed in body lengths per second; "" if none."""
    state = np.full(len(speed_bl), "", dtype=object)
    known = np.isfinite(speed_bl)
    state[known] = "walking"
    state[known & (speed_bl < config.rest_below)] = "resting"
    state[known & (speed_bl >= config.run_above)] = "running"
    return state


def frame_interval(times) -> float:
    """The typical time between frames: the median of the positive timestamp differences."""
    steps = np.diff(np.unique(np.asarray(times, float)))
    steps = steps[steps > 0]
    return float(np.median(steps)) if len(steps) else float("nan")


def _summary(frames, ds, config: BehaviourConfig):
    """One row per animal (see :data:`SUMMARY_COLUMNS`)."""
    import pandas as pd

    dt = frame_interval(ds.time.values)
    if not np.isfinite(dt) and ds.attrs.get("fps"):
        dt = 1.0 / float(ds.attrs["fps"])
    rows = []
    for track, rows_ in frames.groupby("track", sort=True):
        visible = rows_["centre_x"].notna()
        state = rows_["state"]
        n_state = int((state != "").sum())
        row = {"track": int(track), "individual": rows_["individual"].iloc[0],
               "frames_visible": int(visible.sum()), "time_visible_s": visible.sum() * dt,
               "total_distance": float(np.nan_to_num(rows_["distance"].max())),
               "mean_speed": rows_["speed"].mean(), "max_speed": rows_["speed"].max(),
               "body_length": rows_["body_length"].median()}
        for name in STATES:
            count = int((state == name).sum())
            row[f"{name}_s"] = count * dt
            row[f"{name}_fraction"] = count / n_state if n_state else np.nan
        rows.append(row)
    summary = pd.DataFrame(rows, columns=[c for c in SUMMARY_COLUMNS[:-4]])
    summary["rest_below_bl_s"] = config.rest_below
    summary["run_above_bl_s"] = config.run_above
    summary["length_unit"] = config.length_unit
    summary["coordinates"] = COORDINATES
    return summary[list(SUMMARY_COLUMNS)]


# ============================================================================================
# Outputs


def output_paths(stem: str, out_dir: str | os.PathLike) -> dict[str, Path]:
    """The files :func:`write_behaviour` writes for a video called ``stem``, by kind."""
    out = Path(out_dir)
    return {"frames": out / f"{stem}.behaviour.csv",
            "summary": out / f"{stem}.behaviour_summary.csv",
            "speed": out / f"{stem}.behaviour_speed.png",
            "trajectory": out / f"{stem}.behaviour_trajectory.png",
            "ethogram": out / f"{stem}.behaviour_ethogram.png"}


def write_behaviour(result: BehaviourResult, stem: str, out_dir: str | os.PathLike, *,
                    plots: bool = True, video_size: tuple[int, int] | None = None
                    ) -> list[Path]:
    """Write the two CSVs and (with ``plots``) the three PNGs, each atomically.

    Args:
        result: From :func:`compute_behaviour`.
        stem: The video's file name without extension (names the files).
        out_dir: Destination folder.
        plots: Also write the speed, trajectory and ethogram plots.
        video_size: ``(width, height)`` in pixels, to frame the trajectory plot.

    Returns:
        The written paths.
    """
    from clamp_track.io.export import _atomic

    paths = output_paths(stem, out_dir)
    with _atomic(paths["frames"], paths["summary"]) as (frames, summary):
        result.frames.to_csv(frames, index=False, float_format=CSV_FLOAT)
        result.summary.to_csv(summary, index=False, float_format=CSV_FLOAT)
    written = [paths["frames"], paths["summary"]]
    if plots:
        for kind, draw in (("speed", speed_figure), ("trajectory", trajectory_figure),
                           ("ethogram", ethogram_figure)):
            figure = draw(result, stem, video_size) if kind == "trajectory" else draw(
                result, stem)
            with _atomic(paths[kind]) as (tmp,):
                figure.savefig(tmp, format="png", dpi=100)
            written.append(paths[kind])
    return written


def _unit(result: BehaviourResult) -> str:
    return result.config.length_unit


def _state_runs(times: np.ndarray, states: np.ndarray, dt: float):
    """``(start, end, state)`` of each run of one state (end = last frame + one interval)."""
    runs, start = [], 0
    for i in range(1, len(states) + 1):
        if i == len(states) or states[i] != states[start] or times[i] - times[i - 1] > 1.5 * dt:
            if states[start]:
                runs.append((times[start], times[i - 1] + dt, states[start]))
            start = i
    return runs


def _state_legend(ax) -> None:
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=STATE_COLORS[s], alpha=0.6, label=s) for s in STATES],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def speed_figure(result: BehaviourResult, stem: str):
    """Speed over time per animal, the activity states as bands behind it."""
    from matplotlib.figure import Figure

    groups = list(result.frames.groupby("track", sort=True))
    figure = Figure(figsize=(11, 1.2 + 2.0 * max(len(groups), 1)), layout="constrained")
    axes = figure.subplots(max(len(groups), 1), 1, sharex=True, squeeze=False)[:, 0]
    dt = frame_interval(result.poses.time.values)
    for ax, (_track, rows) in zip(axes, groups):
        t = rows["time_s"].to_numpy(float)
        for start, end, state in _state_runs(t, rows["state"].to_numpy(), dt):
            ax.axvspan(start, end, color=STATE_COLORS[state], alpha=0.25, lw=0)
        speed = rows["speed"].to_numpy(float)
        ax.plot(t, speed, "-", color="black", lw=1)
        ax.set_ylabel(f"{rows['individual'].iloc[0]}\nspeed ({_unit(result)}/s)")
        top = float(np.nanmax(speed)) if np.isfinite(speed).any() else 0.0
        ax.set_ylim(0, top * 1.1 or 1.0)
    axes[0].set_title(f"{stem}: speed of the body centre; bands = activity state "
                      f"(rest < {result.config.rest_below:g}, run >= "
                      f"{result.config.run_above:g} body lengths/s)\ncorrected, smoothed "
                      "coordinates; gaps = low confidence", fontsize=10)
    _state_legend(axes[0])
    axes[-1].set_xlabel("time (s)")
    return figure


def trajectory_figure(result: BehaviourResult, stem: str, video_size=None):
    """Every animal's body-centre path, coloured by speed (image orientation)."""
    import matplotlib
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 7), layout="constrained")
    ax = figure.subplots()
    frames = result.frames
    speed = frames["speed"].to_numpy(float)
    norm = Normalize(0, float(np.nanpercentile(speed, 99)) if np.isfinite(speed).any() else 1)
    cmap = matplotlib.colormaps["viridis"]
    for _track, rows in frames.groupby("track", sort=True):
        xy = rows[["centre_x", "centre_y"]].to_numpy(float)
        segments = np.stack([xy[:-1], xy[1:]], axis=1)  # (S, 2, 2); NaN ends are not drawn
        s = rows["speed"].to_numpy(float)
        lines = LineCollection(segments, cmap=cmap, norm=norm, linewidths=2)
        pair = np.stack([s[:-1], s[1:]])  # a segment's colour: the mean of its ends' speeds
        count = np.isfinite(pair).sum(0)
        lines.set_array(np.where(count > 0, np.nansum(pair, 0) / np.maximum(count, 1), np.nan))
        ax.add_collection(lines)
        finite = np.isfinite(xy).all(1)
        if finite.any():  # a dot where the path starts, the name where it ends
            ax.plot(*xy[finite][0], "o", ms=4, color="black")
            ax.annotate(rows["individual"].iloc[0], xy[finite][-1], fontsize=8)
    unit = _unit(result)
    if video_size and unit == "px":
        ax.set_xlim(0, video_size[0])
        ax.set_ylim(video_size[1], 0)
    else:
        ax.autoscale()
        ax.invert_yaxis()  # image rows grow downwards
    ax.set_aspect("equal")
    ax.set_xlabel(f"x ({unit})")
    ax.set_ylabel(f"y ({unit})")
    figure.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax,
                    label=f"speed ({unit}/s)")
    ax.set_title(f"{stem}: body-centre trajectories coloured by speed\n(corrected, smoothed "
                 "coordinates; breaks = low confidence)", fontsize=10)
    return figure


def ethogram_figure(result: BehaviourResult, stem: str):
    """One bar per animal: its activity state over time (blank where unknown)."""
    from matplotlib.figure import Figure

    groups = list(result.frames.groupby("track", sort=True))
    figure = Figure(figsize=(11, 1.5 + 0.5 * max(len(groups), 1)), layout="constrained")
    ax = figure.subplots()
    dt = frame_interval(result.poses.time.values)
    for row, (_track, rows) in enumerate(groups):
        runs = _state_runs(rows["time_s"].to_numpy(float), rows["state"].to_numpy(), dt)
        for state in STATES:
            bars = [(start, end - start) for start, end, s in runs if s == state]
            ax.broken_barh(bars, (row - 0.4, 0.8), color=STATE_COLORS[state])
    ax.set_yticks(range(len(groups)), [rows["individual"].iloc[0] for _, rows in groups])
    ax.set_ylim(max(len(groups), 1) - 0.5, -0.5)
    ax.set_xlabel("time (s)")
    ax.set_title(f"{stem}: ethogram (blank = not visible or low confidence)")
    _state_legend(ax)
    return figure


# ============================================================================================
# Batch


def batch_behaviour(stores, config: BehaviourConfig) -> dict[str, object]:
    """Measure and write the behaviour of each finished video of a batch.

    Each store's CSVs and plots are written beside it, as ``clamp-track behaviour`` writes
    them. A store whose measures fail (e.g. movement is missing) gets its one-line error.

    Args:
        stores: Paths of complete result stores.
        config: The measures' settings.

    Returns:
        ``str(store)`` -> its per-animal summary (DataFrame) or the error message (str).
    """
    from clamp_track.errors import ClampTrackError
    from clamp_track.io.store import ResultStore

    out: dict[str, object] = {}
    for store in stores:
        try:
            with ResultStore.open(store, readonly=True) as s:
                video = s.video_info
            result = compute_behaviour(store, config)
            write_behaviour(result, Path(video.path).stem, Path(store).parent,
                            video_size=(video.width, video.height))
            out[str(store)] = result.summary
        except ClampTrackError as exc:
            out[str(store)] = " ".join(str(exc).split())
    return out


def merge_batch_summary(table, behaviour: dict[str, object]):
    """Add the per-animal summaries to the batch's per-video table (one row per animal).

    Args:
        table: The batch summary, one row per video, with a ``store`` column.
        behaviour: From :func:`batch_behaviour`.

    Returns:
        One row per video and animal, the video's columns repeated, then
        :data:`SUMMARY_COLUMNS` and ``behaviour_error``; a video without animals or without
        measures keeps one row with those columns empty.
    """
    import pandas as pd

    rows = []
    for _, video in table.iterrows():
        measures = behaviour.get(str(video["store"]))
        animals = measures if isinstance(measures, pd.DataFrame) else None
        if animals is None or animals.empty:
            error = measures if isinstance(measures, str) else ""
            rows.append(pd.DataFrame([{**video.to_dict(), "behaviour_error": error}]))
            continue
        part = animals.copy()
        for column, value in reversed(list(video.items())):
            part.insert(0, column, [value] * len(part))
        part["behaviour_error"] = ""
        rows.append(part)
    columns = [*table.columns, *SUMMARY_COLUMNS, "behaviour_error"]
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.concat(rows, ignore_index=True).reindex(columns=columns)
