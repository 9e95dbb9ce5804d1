from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from clamp_track.errors import InputError
from clamp_track.io import video
from clamp_track.io.video import VideoReader, VideoWriter, probe

COWS = "badja-davis/derived/cows_480p_24fps.mp4"
DOG = "deeplabcut-live/check_install/dog_clip.avi"
OPENFIELD = "deeplabcut-examples/openfield-Pranav-2018-10-30/videos/m3v1mp4.mp4"
BACKENDS = ["decord", "pyav"]


def pyav_frames(path, start=0, stop=None):
    """Reference: (index, seconds from stream start, RGB image) decoded by PyAV from the start."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = stream.start_time or 0
        out = []
        for i, frame in enumerate(container.decode(stream)):
            if stop is not None and i >= stop:
                break
            if i >= start:
                out.append((i, float((frame.pts - origin) * stream.time_base),
                            frame.to_ndarray(format="rgb24")))
        return out


def write_synthetic(path: Path, times_ms, size=(64, 48), faststart=False):
    """An H.264 mp4 whose frame i shows a bright square at x = 2 i and has pts = times_ms[i]."""
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            image = np.full((size[1], size[0], 3), 40, np.uint8)
            x = (2 * i) % (size[0] - 8)
            image[10:18, x:x + 8] = 250
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = int(t), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# ---------------------------------------------------------------------------------- bad input


def test_missing_directory_and_text_file_are_one_line_errors(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    cases = [tmp_path / "absent.mp4", tmp_path, text]
    for path in cases:
        with pytest.raises(InputError) as err:
            VideoReader(path)
        message = str(err.value)
        assert str(path) in message and "\n" not in message
    with pytest.raises(InputError, match="not found"):
        probe(tmp_path / "absent.mp4")


def test_truncated_mp4_without_its_index_is_a_clear_error(shared_data, tmp_path):
    cut = tmp_path / "cut.mp4"  # the BADJA mp4 keeps its index (moov) at the end
    cut.write_bytes((shared_data / COWS).read_bytes()[:2_000_000])
    with pytest.raises(InputError, match="truncated"):
        VideoReader(cut)


@pytest.mark.parametrize("backend", ["auto", "pyav"])  # decord refuses this file: PyAV reads it
def test_truncated_mp4_yields_the_frames_it_has_and_warns(tmp_path, caplog, backend):
    full = write_synthetic(tmp_path / "full.mp4", [33 * i for i in range(90)], faststart=True)
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    with caplog.at_level(logging.WARNING, logger="clamp_track.io.video"):
        with VideoReader(cut, backend=backend) as reader:
            frames = list(reader)
    assert 0 < len(frames) < 90
    assert [f.index for f in frames] == list(range(len(frames)))
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "90 frames" in warning and str(reader.info.n_frames) in warning
    reference = pyav_frames(full, stop=len(frames))
    assert all(np.array_equal(f.image, r[2]) for f, r in zip(frames, reference))


# ------------------------------------------------------------------- agreement with PyAV


@pytest.mark.parametrize("name", [COWS, DOG])
@pytest.mark.parametrize("backend", BACKENDS)
def test_all_frames_and_timestamps_agree_with_pyav(shared_data, name, backend):
    reference = pyav_frames(shared_data / name)
    with VideoReader(shared_data / name, backend=backend) as reader:
        frames = list(reader)
        assert reader.backend == backend and reader.info.n_frames == len(reference)
    assert [f.index for f in frames] == [r[0] for r in reference]
    np.testing.assert_allclose([f.time_s for f in frames], [r[1] for r in reference], atol=1e-9)
    assert all(np.array_equal(f.image, r[2]) for f, r in zip(frames, reference))


def test_probe_matches_the_shared_video_table(shared_data):
    dog = probe(shared_data / DOG)
    assert (dog.width, dog.height, dog.fps, dog.n_frames, dog.codec) == (350, 370, 30.0, 296,
                                                                         "mpeg4")
    openfield = probe(shared_data / OPENFIELD)
    assert (openfield.width, openfield.height, openfield.n_frames) == (640, 480, 2330)
    assert openfield.fps == pytest.approx(30.0003, abs=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_range_of_the_long_openfield_video(shared_data, backend, caplog):
    # This H.264 4:4:4 file's keyframes decode to noise after a seek (decord and PyAV alike):
    # the reader notices and decodes ranges and random access from frame 0.
    start, end = 400, 440  # past the keyframe at 366
    reference = pyav_frames(shared_data / OPENFIELD, start, end)
    with caplog.at_level(logging.INFO, logger="clamp_track.io.video"), \
            VideoReader(shared_data / OPENFIELD, start=start, end=end, backend=backend) as reader:
        assert len(reader) == end - start
        frames = list(reader)
        assert np.array_equal(reader.read(420).image, frames[20].image)
        assert np.array_equal(reader.read(403).image, frames[3].image)  # going back
    assert "keyframes do not decode on their own" in caplog.text
    assert [f.index for f in frames] == list(range(start, end))
    np.testing.assert_allclose([f.time_s for f in frames], [r[1] for r in reference], atol=1e-9)
    assert frames[0].time_s == pytest.approx(400 * 0.033333)  # pts step 33333 us
    assert all(np.array_equal(f.image, r[2]) for f, r in zip(frames, reference))


@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate_timestamps_are_the_container_ones(tmp_path, backend):
    steps = np.random.default_rng(1).choice([20, 33, 50, 120], 40)
    times_ms = np.concatenate([[0], np.cumsum(steps)[:-1]]) + 500  # stream starts at 0.5 s
    path = write_synthetic(tmp_path / "vfr.mp4", times_ms)
    with VideoReader(path, backend=backend) as reader:
        frames = list(reader)
    np.testing.assert_allclose([f.time_s for f in frames], (times_ms - times_ms[0]) / 1000,
                               atol=1e-6)
    uniform = np.arange(40) / reader.info.fps
    assert np.abs(np.array([f.time_s for f in frames]) - uniform).max() > 0.1  # not index / fps


# ---------------------------------------------------------------- ranges and random access


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_access_equals_sequential_decoding(shared_data, backend):
    with VideoReader(shared_data / COWS, backend=backend) as reader:
        sequential = {f.index: f for f in reader}
        for i in [57, 3, 103, 0, 58, 59, 70, 12]:  # backwards, forwards, decode-through
            frame = reader.read(i)
            assert frame.index == i and frame.time_s == sequential[i].time_s
            assert np.array_equal(frame.image, sequential[i].image)
        with pytest.raises(IndexError):
            reader.read(104)


def test_ranges_are_clipped_and_empty_ones_refused(shared_data):
    with VideoReader(shared_data / DOG, start=290, end=1000, prefetch=0) as reader:
        assert len(reader) == 6 and [f.index for f in reader] == list(range(290, 296))
        assert [f.index for f in reader] == list(range(290, 296))  # a second pass
    for start, end in [(10, 10), (296, 300), (-1, 5)]:
        with pytest.raises(InputError, match="range"):
            VideoReader(shared_data / DOG, start=start, end=end)


def test_without_prefetch_gives_the_same_frames(shared_data):
    with VideoReader(shared_data / DOG, end=40, prefetch=0) as a, \
            VideoReader(shared_data / DOG, end=40, prefetch=4, batch=3) as b:
        pairs = list(zip(a, b, strict=True))
    assert all(x.index == y.index and np.array_equal(x.image, y.image) for x, y in pairs)


# ------------------------------------------------------------------------ background thread


def decode_threads(path: Path) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"decode:{path.name}"]


def test_prefetch_thread_stops_when_the_consumer_breaks(shared_data):
    path = shared_data / OPENFIELD
    with VideoReader(path, prefetch=4, batch=2) as reader:
        for frame in reader:
            assert len(decode_threads(path)) == 1
            if frame.index == 5:
                break
        assert decode_threads(path) == []
        iterator = iter(reader)  # a pass left suspended is stopped by close()
        next(iterator)
        assert len(decode_threads(path)) == 1
    assert decode_threads(path) == []


def test_decoder_errors_reach_the_consumer(shared_data, monkeypatch):
    def broken(self, start, end, lock):
        yield start, np.zeros((370, 350, 3), np.uint8)
        raise OSError("disk went away")

    monkeypatch.setattr(video._DecordBackend, "frames", broken)
    with VideoReader(shared_data / DOG, backend="decord") as reader:
        frames = []
        with pytest.raises(OSError, match="disk went away"):
            for frame in reader:
                frames.append(frame)
    assert len(frames) == 1 and decode_threads(shared_data / DOG) == []


def test_a_stalled_decoder_is_an_error_not_a_hang(shared_data, monkeypatch):
    def stuck(self, start, end, lock):
        yield start, np.zeros((370, 350, 3), np.uint8)
        time.sleep(2.0)  # stands in for a decoder spinning in native code
        yield start + 1, np.zeros((370, 350, 3), np.uint8)

    monkeypatch.setattr(video, "_STALL_TIMEOUT_S", 0.5)
    monkeypatch.setattr(video._DecordBackend, "frames", stuck)
    with VideoReader(shared_data / DOG, backend="decord") as reader:
        with pytest.raises(InputError, match="stalled"):
            list(reader)


# --------------------------------------------------------------------------------- writing


def test_writer_round_trip_with_odd_size(tmp_path):
    path = tmp_path / "out.mp4"
    with VideoWriter(path, 30000 / 1001, (65, 47)) as writer:
        for i in range(20):
            writer.write(np.full((47, 65, 3), 10 * i, np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    info = probe(path)
    assert (info.width, info.height, info.n_frames, info.codec) == (66, 48, 20, "h264")
    assert info.fps == pytest.approx(29.97, abs=0.01)
    with VideoReader(path) as reader:
        means = [f.image.mean() for f in reader]
    np.testing.assert_allclose(means, 10 * np.arange(20), atol=2)


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(path, 25, (64, 48)) as writer:
            writer.write(np.zeros((48, 64, 3), np.uint8))
            assert path.exists() is False and len(list(tmp_path.iterdir())) == 1
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="does not exist"):
        VideoWriter(tmp_path / "missing" / "out.mp4", 25, (64, 48))
    writer = VideoWriter(path, 25, (64, 48))
    with pytest.raises(ValueError, match="uint8"):
        writer.write(np.zeros((48, 64, 3), np.float32))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_opencv_still_reads_png_after_decord_is_used(shared_data):
    """decord's bundled old zlib must not break OpenCV's PNG reader (import order)."""
    import subprocess
    import sys

    png = shared_data / "badja-davis" / "DAVIS" / "Annotations" / "480p" / "cows" / "00000.png"
    code = (
        "from clamp_track.io.video import VideoReader\n"
        f"r = VideoReader({str(shared_data / COWS)!r}, backend='decord'); r.read(3); r.close()\n"
        "import cv2\n"
        f"print(cv2.imread({str(png)!r}) is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_a_file_is_scanned_once_until_it_is_written_again(tmp_path, monkeypatch):
    path = write_synthetic(tmp_path / "clip.mp4", [i * 33 for i in range(6)])
    scans = []
    real = video._scan_file
    monkeypatch.setattr(video, "_scan_file", lambda p: scans.append(p) or real(p))
    assert probe(path).n_frames == 6
    with VideoReader(path) as reader:  # a run probes its video, then reads it
        assert len(reader) == 6 and len(list(reader)) == 6
        with pytest.raises(ValueError):  # the shared index cannot be changed through a reader
            reader.times_s[0] = 1.0
    assert len(scans) == 1
    # the same path holding another video (size and modification time change) is scanned anew
    write_synthetic(tmp_path / "other.mp4", [i * 33 for i in range(9)]).replace(path)
    assert probe(path).n_frames == 9 and len(scans) == 2
    with VideoReader(path) as reader:
        assert len(list(reader)) == 9
