from __future__ import annotations

import numpy as np
import pytest

from clamp_track.pipelines.smoother import SmootherConfig, smooth_track

FPS = 30.0


def trajectory(times: np.ndarray, k: int = 4) -> np.ndarray:
    """(T, K, 2) smooth paths in px: a few px/s to ~150 px/s, like a walking animal's joints."""
    phase = np.arange(k)[None, :]
    x = 320 + 120 * np.sin(0.9 * times[:, None] + phase) + 15 * np.sin(4 * times[:, None])
    y = 240 + 90 * np.cos(0.7 * times[:, None] + 2 * phase)
    return np.stack([x, y], axis=-1)


def noisy(truth: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    return truth + np.random.default_rng(seed).normal(0, sigma, truth.shape)


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_smoothing_reduces_the_error_to_the_truth():
    times = np.arange(300) / FPS
    truth = trajectory(times)
    xy = noisy(truth, 3.0)
    conf = np.ones(xy.shape[:2])
    smooth, var = smooth_track(times, xy, conf, SmootherConfig(process_noise=200.0))
    assert smooth.shape == xy.shape and var.shape == xy.shape[:2]
    assert np.isfinite(smooth).all() and (var > 0).all()
    raw_error, smooth_error = rmse(xy, truth), rmse(smooth, truth)
    assert raw_error == pytest.approx(3.0, rel=0.05)
    assert smooth_error < 0.5 * raw_error
    assert rmse(smooth_track(times, xy, conf)[0], truth) < 0.7 * raw_error  # defaults
    # the reported variance is of the right size: the mean squared error per axis
    assert np.mean(var[10:-10]) == pytest.approx(smooth_error ** 2, rel=0.5)


def test_confidence_weights_the_measurements():
    times = np.arange(300) / FPS
    truth = trajectory(times)
    conf = np.random.default_rng(1).uniform(0.3, 1.0, truth.shape[:2])
    xy = truth + np.random.default_rng(2).normal(0, 1, truth.shape) * (3.0 / conf)[..., None]
    weighted, _ = smooth_track(times, xy, conf)
    unweighted, _ = smooth_track(times, xy, np.ones_like(conf))
    assert rmse(weighted, truth) < 0.85 * rmse(unweighted, truth)


def test_low_confidence_outliers_are_rejected():
    times = np.arange(200) / FPS
    truth = trajectory(times)
    xy, conf = noisy(truth, 2.0), np.full(truth.shape[:2], 0.9)
    bad = np.zeros(truth.shape[:2], bool)
    bad[5::7, :] = True
    xy_out = xy.copy()
    xy_out[bad] += 80.0  # a paw detected on the wrong animal
    conf_out = np.where(bad, 0.1, conf)
    cfg = SmootherConfig(min_confidence=0.3)
    with_outliers, _ = smooth_track(times, xy_out, conf_out, cfg)
    xy_missing = np.where(bad[..., None], np.nan, xy)
    without, _ = smooth_track(times, xy_missing, conf, cfg)
    np.testing.assert_allclose(with_outliers, without)  # ignored, exactly
    assert np.abs(with_outliers - truth)[bad].max() < 6.0


def test_short_gaps_are_bridged_with_growing_variance():
    times = np.arange(200) / FPS
    truth = trajectory(times, k=2)
    xy = noisy(truth, 2.0)
    gap = slice(100, 112)  # 0.4 s, below max_gap_s = 0.5
    xy[gap, 0] = np.nan
    smooth, var = smooth_track(times, xy, np.ones(xy.shape[:2]), SmootherConfig(max_gap_s=0.5))
    assert np.isfinite(smooth[gap, 0]).all()
    assert np.abs(smooth[gap, 0] - truth[gap, 0]).max() < 8.0
    inside, outside = var[gap, 0], var[60:90, 0]
    assert inside.min() > outside.max()
    assert np.argmax(inside) in (5, 6)  # most uncertain mid-gap
    np.testing.assert_array_less(var[90:100, 1] * 0.5, var[90:100, 0] + 1e-9)


def test_long_gaps_split_the_track_and_are_not_interpolated():
    times = np.arange(200) / FPS
    truth = trajectory(times, k=2)
    xy = noisy(truth, 2.0)
    xy[80:120, 1] = np.nan  # 1.37 s between accepted points
    xy[:10, 0] = np.nan  # nothing before the first point
    xy[190:, 0] = np.nan  # nor after the last
    smooth, var = smooth_track(times, xy, np.ones(xy.shape[:2]), SmootherConfig(max_gap_s=0.5))
    assert np.isnan(smooth[80:120, 1]).all() and np.isnan(var[80:120, 1]).all()
    assert np.isfinite(smooth[:80, 1]).all() and np.isfinite(smooth[120:, 1]).all()
    assert np.isnan(smooth[:10, 0]).all() and np.isnan(smooth[190:, 0]).all()
    assert np.isfinite(smooth[10:190, 0]).all()
    # the new segment starts afresh: its first point is not pulled towards the old segment
    assert abs(smooth[120, 1, 0] - truth[120, 1, 0]) < 6.0


def test_real_time_steps_for_variable_frame_rate():
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.choice([1 / 60, 1 / 30, 1 / 10], 300))
    truth = trajectory(times)
    xy = noisy(truth, 3.0)
    conf = np.ones(xy.shape[:2])
    cfg = SmootherConfig(process_noise=100.0)
    smooth, _ = smooth_track(times, xy, conf, cfg)
    as_if_constant, _ = smooth_track(np.arange(300) / 30, xy, conf, cfg)
    assert rmse(smooth, truth) < 0.5 * rmse(xy, truth)
    assert rmse(smooth, truth) < 0.7 * rmse(as_if_constant, truth)


def test_numpy_engine_equals_filterpy_reference():
    rng = np.random.default_rng(4)
    times = np.cumsum(rng.uniform(0.01, 0.06, 150))
    truth = trajectory(times, k=3)
    xy = noisy(truth, 3.0)
    conf = rng.uniform(0.0, 1.0, xy.shape[:2])
    xy[40:60, 0] = np.nan  # bridged or split depending on the random steps
    xy[90:91, 2] = np.nan
    for max_gap in (0.2, 0.5):
        base = dict(max_gap_s=max_gap, min_confidence=0.25)
        fast, fast_var = smooth_track(times, xy, conf, SmootherConfig(**base))
        ref, ref_var = smooth_track(times, xy, conf, SmootherConfig(engine="filterpy", **base))
        np.testing.assert_array_equal(np.isnan(fast), np.isnan(ref))
        np.testing.assert_allclose(fast, ref, rtol=1e-9, atol=1e-8)
        np.testing.assert_allclose(fast_var, ref_var, rtol=1e-9)


def test_bad_inputs_are_refused():
    times = np.arange(5) / FPS
    with pytest.raises(ValueError, match="increasing"):
        smooth_track(times[::-1], np.zeros((5, 1, 2)), np.ones((5, 1)))
    with pytest.raises(ValueError, match="conf"):
        smooth_track(times, np.zeros((5, 1, 2)), np.ones((5, 2)))
    with pytest.raises(ValueError, match="xy"):
        smooth_track(times, np.zeros((5, 2)), np.ones((5, 1)))
    with pytest.raises(ValueError, match="positive"):
        SmootherConfig(measurement_noise=0)
    single, var = smooth_track(times[:1], np.ones((1, 1, 2)), np.ones((1, 1)))
    assert single.tolist() == [[[1.0, 1.0]]] and var[0, 0] == pytest.approx(9.0)


def test_tracks_smoothed_together_equal_each_smoothed_alone(monkeypatch):
    """Animals sharing frames go through the filter in one pass; the numbers are the same."""
    import clamp_track.pipelines.smoother as smoother

    rng = np.random.default_rng(3)
    fps = 30.0
    cfg = SmootherConfig(max_gap_s=0.2)
    tracks = []
    for key, (first, last) in enumerate([(0, 120), (10, 120), (0, 90), (30, 110), (200, 260)]):
        frames = np.arange(first, last)
        frames = frames[rng.random(len(frames)) > 0.15]  # the tracker lost it now and then
        times = frames / fps
        xy = noisy(trajectory(times, k=3), 2.0, seed=key)
        conf = rng.uniform(0.1, 1.0, (len(frames), 3))  # some below min_confidence
        conf[20:32, 1] = 0.0  # a gap longer than max_gap_s: two segments
        xy[5, 2] = np.nan
        tracks.append((key, times, xy, conf))
    passes = []
    alone = smoother.smooth_track
    monkeypatch.setattr(smoother, "smooth_track",
                        lambda t, *a, **k: passes.append(len(t)) or alone(t, *a, **k))
    together = list(smoother.smooth_tracks(iter(tracks), cfg))
    # the four overlapping tracks in one pass; the last, far later, alone
    assert len(passes) == 2 and passes[1] == len(tracks[-1][1])
    assert [key for key, _, _ in together] == [0, 1, 2, 3, 4]
    for (_, times, xy, conf), (_, xy_s, var) in zip(tracks, together):
        xy_1, var_1 = alone(times, xy, conf, cfg)
        np.testing.assert_array_equal(np.isnan(xy_s), np.isnan(xy_1))
        assert np.isnan(xy_1).any() and not np.isnan(xy_1).all()
        np.testing.assert_allclose(xy_s, xy_1, atol=1e-6, rtol=0, equal_nan=True)
        assert var.shape == (len(times), 3)
        np.testing.assert_allclose(var, var_1, rtol=1e-6, equal_nan=True)
