"""Kalman smoothing of keypoint tracks: constant velocity, Rauch–Tung–Striebel, confidence-aware.

Each keypoint of a track is smoothed on its own, its x and y as two independent 1-D
constant-velocity models with the same noise (so they share one covariance, and the variance
returned per keypoint is that of x, equal to that of y).

Model, per axis, state ``s = (position px, velocity px/s)`` and real time steps ``dt`` (seconds,
from the frames' timestamps, so variable frame rates are handled):

* ``s_t = F s_{t-1} + w``, ``F = [[1, dt], [0, 1]]``, ``w ~ N(0, Q)`` with the white-noise
  acceleration model ``Q = q [[dt³/3, dt²/2], [dt²/2, dt]]``, ``q = process_noise²``.
* ``z_t = position + v``, ``v ~ N(0, R)`` with ``R = (measurement_noise / c)²`` for a keypoint of
  confidence ``c``: a point at confidence 0.5 counts with twice the standard deviation (a quarter
  of the weight) of one at 1.0. Points with ``c < min_confidence`` (or NaN) are missing.

The forward Kalman pass coasts over missing points (the variance grows, cubically in the gap
length), and the backward Rauch–Tung–Striebel pass uses the whole track, so a bridged gap is
interpolated by the motion on both sides. Two accepted points more than ``max_gap_s`` apart split
the keypoint's track into segments: nothing is interpolated across such a gap (NaN there), and
nothing is extrapolated before a segment's first or after its last accepted point. A segment
starts at its first point with velocity 0 ± ``initial_velocity_std``.

Two engines compute the same numbers: ``"numpy"`` runs the filter for all keypoints at once with
the 2×2 algebra written out (a 10,000-frame × 17-keypoint track in well under a second here, see
``benchmarks/smoother_speed.py``); ``"filterpy"`` runs filterpy's ``KalmanFilter.batch_filter``
and ``rts_smoother`` per keypoint and segment (a readable reference, ~40× slower).
Units are pixels of the video, so the noise settings depend on the resolution.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class SmootherConfig:
    """Settings of the keypoint smoother.

    Attributes:
        process_noise: Square root of the white-noise acceleration spectral density, in
            px/s^1.5. Larger follows fast motion more closely and smooths less. At 30 fps the
            default lets a point's velocity change by about 90 px/s per frame (one sigma).
        measurement_noise: Standard deviation of a keypoint at confidence 1, in px.
        min_confidence: Points below this confidence are treated as missing.
        max_gap_s: Longest time (s) between two accepted points that is bridged; longer gaps
            split the track (NaN in between).
        initial_velocity_std: Prior standard deviation of the velocity at a segment's start,
            px/s.
        engine: ``"numpy"`` (vectorised over keypoints) or ``"filterpy"`` (reference, slow).
    """

    process_noise: float = 500.0
    measurement_noise: float = 3.0
    min_confidence: float = 0.3
    max_gap_s: float = 0.5
    initial_velocity_std: float = 500.0
    engine: Literal["numpy", "filterpy"] = "numpy"

    def __post_init__(self):
        if min(self.process_noise, self.measurement_noise, self.initial_velocity_std) <= 0:
            raise ValueError("process_noise, measurement_noise and initial_velocity_std must be "
                             "positive")
        if not 0 < self.min_confidence <= 1 or self.max_gap_s < 0:
            raise ValueError("min_confidence must be in (0, 1] and max_gap_s >= 0")
        if self.engine not in ("numpy", "filterpy"):
            raise ValueError(f"engine must be 'numpy' or 'filterpy', got {self.engine!r}")


def stored_config(store) -> SmootherConfig:
    """The smoother settings a result store's run used (defaults where it names none).

    Raises:
        InputError: The stored settings are not valid ones.
    """
    from clamp_track.config import from_dict

    settings = (store.meta("config") or {}).get("smoother") or {}
    return from_dict(SmootherConfig, settings, source=str(store.path))


def smooth_track(times_s: np.ndarray, xy: np.ndarray, conf: np.ndarray,
                 cfg: SmootherConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Smooth the keypoints of one track.

    Args:
        times_s: (T,) strictly increasing frame times in seconds.
        xy: (T, K, 2) keypoint positions in px; NaN where missing.
        conf: (T, K) keypoint confidences in [0, 1]; NaN counts as missing.
        cfg: Noise model and gap handling; defaults to ``SmootherConfig()``.

    Returns:
        ``(xy_smooth, var)``: (T, K, 2) float64 smoothed positions in px and (T, K) float64
        smoothed position variance in px² (per axis). Both NaN outside the segments (long gaps,
        before a keypoint's first and after its last accepted point).
    """
    cfg = cfg or SmootherConfig()
    t, z, c = _validate(times_s, xy, conf)
    measured = np.isfinite(z).all(-1) & (c >= cfg.min_confidence)  # (T, K)
    r = (cfg.measurement_noise / np.clip(np.nan_to_num(c, nan=1.0), cfg.min_confidence,
                                         1.0)) ** 2  # (T, K) px²
    starts, covered = _segments(t, measured, cfg.max_gap_s)
    if cfg.engine == "filterpy":
        out, var = _filterpy(t, z, r, measured, starts, covered, cfg)
    else:
        out, var = _rts(t, *_forward(t, z, r, measured, starts, cfg), covered, starts)
    out[~covered] = np.nan
    var[~covered] = np.nan
    return out, var


#: Most cells (frames x keypoints) :func:`smooth_tracks` smooths in one pass.
BATCH_CELLS = 200_000


def smooth_tracks(tracks: Iterable[tuple[object, np.ndarray, np.ndarray, np.ndarray]],
                  cfg: SmootherConfig | None = None
                  ) -> Iterator[tuple[object, np.ndarray, np.ndarray]]:
    """:func:`smooth_track` of many tracks, several in one pass where they overlap in time.

    The filter's cost is a Python loop over frames, so ten animals sharing the same frames
    take one loop instead of ten. Tracks of a batch are laid side by side on the union of
    their frame times; a track has no point (missing) at the others' frames. The
    constant-velocity model predicts over two steps exactly as over their sum, and smoothing
    is unchanged by time points without measurements, so the numbers equal the track-by-track
    ones up to rounding (``tests/pipelines/test_smoother.py``). A batch holds at most
    :data:`BATCH_CELLS` cells and at most half padding; a track alone is smoothed as it is.

    Args:
        tracks: ``(key, times_s, xy, conf)`` per track, as :func:`smooth_track` takes them;
            read one at a time (memory stays that of a batch).
        cfg: As :func:`smooth_track`.

    Yields:
        ``(key, xy_smooth, var)`` per track, in the order given.
    """
    cfg = cfg or SmootherConfig()
    group, union, frames = [], np.empty(0), 0
    for item in tracks:
        times = np.asarray(item[1], dtype=np.float64)
        grown = np.union1d(union, times)
        keypoints = sum(np.shape(g[2])[1] for g in group) + np.shape(item[2])[1]
        if group and (cfg.engine != "numpy" or len(grown) * keypoints > BATCH_CELLS
                      or len(grown) * (len(group) + 1) > 2 * (frames + len(times))):
            yield from _smooth_group(group, union, cfg)
            group, grown, frames = [], times, 0
        group.append(item)
        union, frames = grown, frames + len(times)
    if group:
        yield from _smooth_group(group, union, cfg)


def _smooth_group(group, union: np.ndarray, cfg: SmootherConfig):
    if len(group) == 1:
        key, times, xy, conf = group[0]
        yield (key, *smooth_track(times, xy, conf, cfg))
        return
    total = sum(np.shape(xy)[1] for _, _, xy, _ in group)
    z = np.full((len(union), total, 2), np.nan)
    c = np.full((len(union), total), np.nan)
    spans, start = [], 0
    for _, times, xy, conf in group:
        rows = np.searchsorted(union, np.asarray(times, dtype=np.float64))
        cols = slice(start, start + np.shape(xy)[1])
        z[rows, cols], c[rows, cols] = xy, conf
        spans.append((rows, cols))
        start = cols.stop
    out, var = smooth_track(union, z, c, cfg)
    for (key, *_), (rows, cols) in zip(group, spans):
        yield key, out[rows, cols], var[rows, cols]


def _validate(times_s, xy, conf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.asarray(times_s, dtype=np.float64)
    z = np.asarray(xy, dtype=np.float64)
    c = np.asarray(conf, dtype=np.float64)
    if t.ndim != 1 or z.shape[:1] != t.shape or z.ndim != 3 or z.shape[2] != 2:
        raise ValueError(f"expected times (T,) and xy (T, K, 2), got {t.shape} and {z.shape}")
    if c.shape != z.shape[:2]:
        raise ValueError(f"expected conf of shape {z.shape[:2]}, got {c.shape}")
    if len(t) > 1 and not np.all(np.diff(t) > 0):
        raise ValueError("times_s must be strictly increasing")
    return t, z, c


def _segments(t: np.ndarray, measured: np.ndarray, max_gap_s: float):
    """Where segments start, and which frames lie inside one.

    Args:
        t: (T,) times in s.
        measured: (T, K) accepted points.
        max_gap_s: Longest bridged gap.

    Returns:
        ``starts`` (T, K) bool: accepted points that begin a segment; ``covered`` (T, K) bool:
        frames from a segment's first to its last accepted point.
    """
    n, k = measured.shape
    frame = np.arange(n)[:, None]  # (T, 1)
    last = np.where(measured, frame, -1)
    last = np.maximum.accumulate(last, axis=0)  # (T, K) latest accepted frame at or before t
    nxt = np.where(measured, frame, n)
    nxt = np.minimum.accumulate(nxt[::-1], axis=0)[::-1]  # (T, K) next accepted at or after t
    prev = np.vstack([np.full((1, k), -1), last[:-1]])  # (T, K) latest accepted strictly before
    times = np.append(t, np.inf)
    gap = t[:, None] - np.where(prev >= 0, t[np.maximum(prev, 0)], -np.inf)  # (T, K)
    starts = measured & (gap > max_gap_s)
    span = times[nxt] - np.where(last >= 0, t[np.maximum(last, 0)], -np.inf)  # (T, K)
    covered = (last >= 0) & (nxt < n) & (span <= max_gap_s)
    return starts, covered | measured


def _forward(t, z, r, measured, starts, cfg: SmootherConfig):
    """Kalman filter over all keypoints at once.

    Returns:
        Filtered position (T, K, 2), velocity (T, K, 2) and covariance entries ``a, b, c``
        (T, K) (``P = [[a, b], [b, c]]``), then the same for the one-step predictions.
    """
    n, k = measured.shape
    q = cfg.process_noise ** 2
    v0 = cfg.initial_velocity_std ** 2
    pos, vel = np.zeros((n, k, 2)), np.zeros((n, k, 2))
    cov = np.zeros((3, n, k))  # a, b, c
    pos_p, cov_p = np.zeros((n, k, 2)), np.zeros((3, n, k))
    p, v = np.zeros((k, 2)), np.zeros((k, 2))
    a, b, c = np.full(k, v0), np.zeros(k), np.full(k, v0)
    for i in range(n):
        if i:  # predict: s = F s, P = F P F' + Q
            dt = t[i] - t[i - 1]
            p = p + dt * v
            a, b, c = (a + 2 * dt * b + dt * dt * c + q * dt ** 3 / 3,
                       b + dt * c + q * dt * dt / 2, c + q * dt)
        pos_p[i], cov_p[:, i] = p, (a, b, c)
        m, s = measured[i], starts[i]
        if m.any():  # update the measured points (H = [1, 0], stable form of (I - KH) P)
            ri = r[i]
            innov = np.where(m[:, None], z[i] - p, 0.0)  # (K, 2)
            den = a + ri
            p = p + (a / den)[:, None] * innov
            v = v + (b / den)[:, None] * innov
            a, b, c = (np.where(m, ri * a / den, a), np.where(m, ri * b / den, b),
                       np.where(m, c - b * b / den, c))
        if s.any():  # a segment starts: forget the past
            p = np.where(s[:, None], z[i], p)
            v = np.where(s[:, None], 0.0, v)
            a, b, c = np.where(s, r[i], a), np.where(s, 0.0, b), np.where(s, v0, c)
        pos[i], vel[i], cov[:, i] = p, v, (a, b, c)
    return pos, vel, cov, pos_p, cov_p


def _rts(t, pos, vel, cov, pos_p, cov_p, covered, starts):
    """Rauch–Tung–Striebel backward pass; links only frames within one segment.

    Returns:
        Smoothed positions (T, K, 2) and position variances (T, K).
    """
    n = len(t)
    ps, vs = pos.copy(), vel.copy()
    a_s, b_s, c_s = cov.copy()
    for i in range(n - 2, -1, -1):
        dt = t[i + 1] - t[i]
        a, b, c = cov[:, i]
        ap, bp, cp = cov_p[:, i + 1]
        det = ap * cp - bp * bp
        link = covered[i] & covered[i + 1] & ~starts[i + 1] & (det > 0)
        det = np.where(link, det, 1.0)
        m00, m01, m10, m11 = a + dt * b, b, b + dt * c, c  # P F'
        g00 = np.where(link, (m00 * cp - m01 * bp) / det, 0.0)  # gain G = P F' Pp^-1
        g01 = np.where(link, (m01 * ap - m00 * bp) / det, 0.0)
        g10 = np.where(link, (m10 * cp - m11 * bp) / det, 0.0)
        g11 = np.where(link, (m11 * ap - m10 * bp) / det, 0.0)
        dp = ps[i + 1] - pos_p[i + 1]  # (K, 2)
        dv = vs[i + 1] - vel[i]  # predicted velocity = filtered velocity
        ps[i] = pos[i] + g00[:, None] * dp + g01[:, None] * dv
        vs[i] = vel[i] + g10[:, None] * dp + g11[:, None] * dv
        d0, d1, d2 = a_s[i + 1] - ap, b_s[i + 1] - bp, c_s[i + 1] - cp  # Ps - Pp
        a_s[i] = a + g00 * g00 * d0 + 2 * g00 * g01 * d1 + g01 * g01 * d2
        b_s[i] = b + g00 * g10 * d0 + (g00 * g11 + g01 * g10) * d1 + g01 * g11 * d2
        c_s[i] = c + g10 * g10 * d0 + 2 * g10 * g11 * d1 + g11 * g11 * d2
    return ps, a_s


def _filterpy(t, z, r, measured, starts, covered, cfg: SmootherConfig):
    """The same model with filterpy, per keypoint and segment (4-D state x, vx, y, vy)."""
    n, k = measured.shape
    out, var = np.full((n, k, 2), np.nan), np.full((n, k), np.nan)
    for j in range(k):
        for first, end in _segment_ranges(starts[:, j], covered[:, j]):
            frames = np.arange(first, end)
            xs, ps = _filterpy_segment(t[frames], z[frames, j], r[frames, j],
                                       measured[frames, j], cfg)
            out[frames, j] = xs[:, [0, 2]]
            var[frames, j] = ps[:, 0, 0]
    return out, var


def _segment_ranges(starts: np.ndarray, covered: np.ndarray) -> list[tuple[int, int]]:
    """``[first, end)`` frame ranges of one keypoint's segments, from (T,) start/cover flags."""
    n, ranges = len(starts), []
    for first in np.flatnonzero(starts):
        uncovered = np.flatnonzero(~covered[first:])
        later = np.flatnonzero(starts[first + 1:])
        end = min(first + uncovered[0] if len(uncovered) else n,
                  first + 1 + later[0] if len(later) else n)
        ranges.append((int(first), int(end)))
    return ranges


def _filterpy_segment(t, z, r, measured, cfg: SmootherConfig):
    """Run filterpy's batch filter and RTS smoother on one segment (starting with a point)."""
    from filterpy.kalman import KalmanFilter

    q, v0 = cfg.process_noise ** 2, cfg.initial_velocity_std ** 2
    kf = KalmanFilter(dim_x=4, dim_z=2)
    kf.H = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0]])
    kf.x = np.array([z[0, 0], 0.0, z[0, 1], 0.0])
    kf.P = np.diag([r[0], v0, r[0], v0])
    fs, qs = [np.eye(4)], [np.zeros((4, 4))]
    for dt in np.diff(t):
        f1 = np.array([[1.0, dt], [0.0, 1.0]])
        q1 = q * np.array([[dt ** 3 / 3, dt ** 2 / 2], [dt ** 2 / 2, dt]])
        fs.append(np.kron(np.eye(2), f1))
        qs.append(np.kron(np.eye(2), q1))
    zs = [zi if m else None for zi, m in zip(z, measured)]
    rs = [np.eye(2) * ri for ri in r]
    x0, p0 = kf.x.copy(), kf.P.copy()
    if len(t) > 1:
        means, covs, _, _ = kf.batch_filter(zs[1:], Fs=fs[1:], Qs=qs[1:], Rs=rs[1:])
        xs, ps = np.vstack([x0[None], means]), np.concatenate([p0[None], covs])
        xs, ps, _, _ = kf.rts_smoother(xs, ps, Fs=fs, Qs=qs)
    else:
        xs, ps = x0[None], p0[None]
    return xs, ps
