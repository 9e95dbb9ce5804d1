"""How responsive is the review GUI on a long 1080p video?

Builds (once) a 10-minute 1920x1080 H.264 video by upscaling the BADJA cows clip, playing it
forwards then backwards (so motion is continuous) and looping that segment with stream copy (no
re-encoding), with a keyframe every ``--gop`` frames; and a synthetic store for it (3 animals in
every frame, 17 keypoints) so overlays, the timeline and the review queue have a realistic load.
Then, in an offscreen main window, it measures:

* opening (store load + review queue), and one edit (store write + queue recomputation);
* scrubbing: a 2 s timeline drag across the whole video (60 seeks, 33 ms apart): the longest
  stall of the GUI thread during it, frames decoded, and the time from the drag's end to the
  exact frame on screen;
* random jumps, stepping forward and backward (each waits for the frame): latency and cache
  hit rate;
* playback at 1x: frames shown per second;
* a scripted proofreading session (``--proofread``, also alone with ``--proofread-only`` on
  the short cows clip): problems planted in a copy of the store (a track broken in three,
  left/right eyes exchanged over 5 frames, a paw thrown off in single frames) are fixed
  through the review queue as a user would (N, then the item's one action: Ctrl+Enter, plus
  one click where a keypoint belongs), counting keystrokes and clicks and timing each item;
  then the same fixes on a second copy the way they are made without the queue's actions (as
  in SLEAP or napari-DeepLabCut: go to the frame, drag each wrong keypoint, select two
  tracks and merge), side by side. Seconds per item are the GUI's own time plus the time a
  user needs for those gestures by the Keystroke-Level Model (Card, Moran & Newell 1980:
  K 0.28 s per key, P 1.1 s to point, B 0.1 s per button press, M 1.35 s to decide, once
  per item).

Run from the repository root::

    python benchmarks/gui_scrubbing.py [--minutes 10] [--gop 60] [--work DIR]
    python benchmarks/gui_scrubbing.py --proofread-only
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "badja-davis" / "derived" / "cows_480p_24fps.mp4"
FPS = 30


def make_video(path: Path, minutes: float, gop: int) -> Path:
    """The looped 1080p video (skipped if it exists)."""
    import av
    import cv2

    if path.exists():
        return path
    with av.open(str(SOURCE)) as src:
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    frames = frames + frames[::-1][1:-1]  # ping-pong: continuous when looped
    segment = path.with_suffix(".segment.mp4")
    with av.open(str(segment), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={
            "crf": "23", "preset": "veryfast", "g": str(gop), "keyint_min": str(gop),
            "sc_threshold": "0"})
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        for i, rgb in enumerate(frames):
            big = cv2.resize(rgb, (1920, 1080), interpolation=cv2.INTER_LINEAR)
            cv2.putText(big, f"{i}", (40, 80), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
            for packet in stream.encode(av.VideoFrame.from_ndarray(big, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    loops = int(np.ceil(minutes * 60 * FPS / len(frames)))
    with av.open(str(segment)) as src, av.open(str(path), "w") as out:
        ins = src.streams.video[0]
        ous = out.add_stream_from_template(ins)
        packets = [p for p in src.demux(ins) if p.size]
        period = round(len(frames) / FPS / ins.time_base)  # segment duration in pts units
        for k in range(loops):
            for p in packets:
                q = av.Packet(bytes(p))
                q.pts, q.dts = p.pts + k * period, p.dts + k * period
                q.is_keyframe, q.time_base, q.stream = p.is_keyframe, ins.time_base, ous
                out.mux(q)
    segment.unlink()
    return path


def make_store(video: Path) -> Path:
    """Three animals walking across the frame in every frame, noisy keypoints (a layout for
    1920x1080, scaled to the video's size)."""
    from clamp_track.io.store import ResultStore, store_path
    from clamp_track.io.video import probe
    from clamp_track.skeleton import AP10K
    from clamp_track.types import PosePredictions

    path = store_path(video)
    if path.exists():
        return path
    info = probe(video)
    rng = np.random.default_rng(0)
    store = ResultStore.create(path, {"keypoints": AP10K.to_dict(), "video": dict(info.__dict__),
                                      "config": {}})
    n, k = info.n_frames, AP10K.num_keypoints
    pattern = rng.uniform(0, 1, (3, k, 2))
    scale = np.array([info.width / 1920, info.height / 1080] * 2)
    for start in range(0, n, 600):
        frames = list(range(start, min(start + 600, n)))
        poses = []
        for f in frames:
            t = f / FPS
            x0 = 200 + 500 * np.arange(3) + 150 * np.sin(t / 3 + np.arange(3))
            boxes = np.stack([x0, np.full(3, 300.0), x0 + 400, np.full(3, 600.0)], 1)
            kp = boxes[:, None, :2] + pattern * 300 + rng.normal(0, 2, (3, k, 2))
            boxes, kp = boxes * scale, kp * scale[:2]  # laid out for 1920x1080
            conf = np.clip(rng.normal(0.7, 0.2, (3, k)), 0, 1)
            poses.append(PosePredictions(f, [1, 2, 3], boxes, kp, conf, np.full(3, 0.9)))
        store.write_chunk([(f, f / FPS, True) for f in frames], poses)
    store.set_meta(status="complete")
    store.close()
    return path


class Heartbeat:
    """A 5 ms timer on the GUI thread; the longest gap between ticks is the longest stall."""

    def __init__(self):
        from PyQt6.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._tick)
        self.last, self.gaps = None, []

    def _tick(self):
        now = time.perf_counter()
        if self.last is not None:
            self.gaps.append(now - self.last)
        self.last = now

    def start(self):
        self.last, self.gaps = None, []
        self.timer.start()

    def stop(self) -> float:
        """The longest stall in ms (beyond the 5 ms interval)."""
        self.timer.stop()
        return max(0.0, 1000 * (max(self.gaps, default=0.0) - 0.005))


def pump(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)


def wait_shown(app, window, timeout: float = 30.0) -> float:
    start = time.perf_counter()
    while window._shown_frame != window.state.frame:
        app.processEvents()
        time.sleep(0.0005)
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"frame {window.state.frame} not shown in {timeout} s")
    return time.perf_counter() - start


def ms(values) -> str:
    values = sorted(values)
    p90 = values[int(0.9 * (len(values) - 1))]
    return f"median {1000 * statistics.median(values):.0f} ms, p90 {1000 * p90:.0f} ms"


# ----------------------------------------------------------------------- proofreading
KLM = {"key": 0.28, "point": 1.1, "button": 0.1, "mental": 1.35}  # seconds (Card et al. 1980)


def plant_problems(store_file: Path) -> dict:
    """Plant fixable problems in a store of :func:`make_store`; returns the truth to restore.

    Animal 2 broken into ids 2, 4, 5 (at 1/3 and 2/3 of the frames); animal 1's eyes
    exchanged on 5 frames, twice; animal 3's left front paw thrown 250 px off in single
    frames, twice.
    """
    from clamp_track.io.store import ResultStore, _blob

    with ResultStore.open(store_file) as store:
        n = len(store.track(1)["frames"])
        left, right = store.keypoints.flip_pairs[0]
        paw = store.keypoints.source_names.index("left_front_paw")
        thirds = (n // 3, 2 * n // 3)
        store.reassign([(f, 2, 4) for f in range(thirds[0], thirds[1])]
                       + [(f, 2, 5) for f in range(thirds[1], n)])
        truth = {"swaps": [], "jumps": [], "breaks": [(4, 2), (5, 2)], "pair": (left, right),
                 "paw": paw}
        one, three = store.track(1), store.track(3)
        rows = []
        for start in (n // 5, 3 * n // 5):
            for f in range(start, start + 5):
                raw = one["raw"][f].copy()
                raw[[left, right]] = raw[[right, left]]
                rows.append((_blob(raw), f, 1))
            truth["swaps"].append((start, start + 4))
        for f in (2 * n // 5, 4 * n // 5):
            raw = three["raw"][f].copy()
            truth["jumps"].append((f, tuple(map(float, raw[paw, :2]))))
            raw[paw, 0] += 250
            rows.append((_blob(raw), f, 3))
        with store._transaction() as db:
            db.executemany("UPDATE instances SET raw = ? WHERE frame = ? AND track = ?", rows)
    return truth


class Gestures:
    """Real key presses and clicks on the window, counted."""

    def __init__(self, app, window):
        self.app, self.window = app, window
        self.keys = self.clicks = self.drags = 0

    def key(self, key, modifiers=None) -> None:
        from PyQt6.QtCore import Qt
        from PyQt6.QtTest import QTest

        QTest.keyClick(self.window.view, key, modifiers or Qt.KeyboardModifier.NoModifier)
        self.keys += 1
        self._settle()

    def click(self, x: float, y: float) -> None:
        from PyQt6.QtCore import QPointF, Qt
        from PyQt6.QtTest import QTest

        view = self.window.view
        QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton,
                         Qt.KeyboardModifier.NoModifier, view.mapFromScene(QPointF(x, y)))
        self.clicks += 1
        self._settle()

    def drag(self, track: int, keypoint: int, x: float, y: float) -> None:
        """Drag a keypoint (the view's drop signal, as :class:`KeypointItem` emits it)."""
        self.window.view.keypointMoved.emit(track, keypoint, x, y)
        self.drags += 1
        self._settle()

    def _settle(self) -> None:
        self.app.processEvents()
        if self.window.loader is not None:
            wait_shown(self.app, self.window)

    def user_seconds(self, items: int) -> float:
        """Keystroke-Level Model time of the gestures: a drag is point + press + point +
        release; a click is point + press/release."""
        k = KLM
        return (self.keys * k["key"] + self.clicks * (k["point"] + 2 * k["button"])
                + self.drags * (2 * k["point"] + 2 * k["button"]) + items * k["mental"])

    @property
    def actions(self) -> int:
        return self.keys + self.clicks + self.drags


def _open_copy(app, store: Path, video: Path | None, name: str):
    """A copy of ``store`` with the problems planted, open in a new window."""
    import shutil

    from clamp_track.gui.main_window import MainWindow

    copy = store.with_name(f"{name}{store.name}")
    for suffix in ("", "-wal", "-shm"):  # no journal of an earlier copy may stay
        Path(str(copy) + suffix).unlink(missing_ok=True)
    shutil.copy(store, copy)
    truth = plant_problems(copy)
    window = MainWindow(interactive=False)
    window.resize(1280, 720)
    window.show()
    window.open_paths(video, copy)
    if window.loader is not None:
        wait_shown(app, window, 60)
    return window, truth


def proofread(app, store: Path, video: Path | None, verbose: bool = False) -> None:
    """The scripted session through the queue, then the same fixes by hand (module doc)."""
    from PyQt6.QtCore import Qt

    from clamp_track.pipelines.qc import Action

    window, truth = _open_copy(app, store, video, "queue-")
    queue = window.state.queue
    print(f"proofreading: {queue.total} items in the queue after planting "
          f"{len(truth['breaks'])} breaks, {len(truth['swaps'])} left/right stretches, "
          f"{len(truth['jumps'])} thrown paws")
    g = Gestures(app, window)
    fixed, per_item, start = 0, [], time.perf_counter()
    key = Qt.Key
    while True:
        t = time.perf_counter()
        g.key(key.Key_N)
        q = window.state.queue
        if not 0 <= q.cursor < len(q):
            break
        item, suggestion = q.items[q.cursor], window.queue_panel.suggestion
        if verbose:
            print(f"  item {item.reason.value} animal {item.track} {item.frame}-{item.end}: "
                  f"{suggestion.label}")
        if suggestion.action is Action.FIX_KEYPOINT:
            g.key(key.Key_Return, Qt.KeyboardModifier.ControlModifier)  # arm placing
            frame = window.state.frame
            where = dict(truth["jumps"]).get(frame)
            if where is None or item.track != 3:  # nothing planted here: it looks right
                g.key(key.Key_Escape)
                g.key(key.Key_Return)
            else:
                g.click(*where)
                fixed += 1
        elif suggestion.action is Action.CHECK:
            g.key(key.Key_Return)
        else:
            g.key(key.Key_Return, Qt.KeyboardModifier.ControlModifier)
            fixed += 1
        per_item.append(time.perf_counter() - t)
    gui_s = time.perf_counter() - start
    q = window.state.queue
    items = len(per_item)
    print(f"proofreading session: {fixed} items fixed, {items} items reviewed "
          f"({q.reviewed} / {q.total} reviewed), {g.keys} keystrokes + {g.clicks} clicks = "
          f"{g.actions / items:.1f} per item; {gui_s / items:.2f} s per item of GUI time, "
          f"{(gui_s + g.user_seconds(items)) / items:.1f} s per item with the user's "
          "gestures (KLM)")
    queue_actions, queue_s = g.actions / items, (gui_s + g.user_seconds(items)) / items
    window.close()

    # the same fixes without the queue's actions: go to each frame and drag, select and merge
    window, truth = _open_copy(app, store, video, "hand-")
    g, start = Gestures(app, window), time.perf_counter()
    state, (left, right) = window.state, truth["pair"]
    for first, last in truth["swaps"]:
        for f in range(first, last + 1):
            state.set_frame(f)  # typing the frame number: K per digit + Enter
            g.keys += len(str(f)) + 1
            g._settle()
            inst = state.data.instance(f, 1)
            g.drag(1, left, *inst.xy[right])
            g.drag(1, right, *inst.xy[left])
    for f, where in truth["jumps"]:
        state.set_frame(f)
        g.keys += len(str(f)) + 1
        g.drag(3, truth["paw"], *where)
    for other, keep in truth["breaks"]:
        state.select([keep, other])  # click one row, Ctrl+click the other
        g.clicks += 2
        g.key(key.Key_M, Qt.KeyboardModifier.ControlModifier)
    hand_s = time.perf_counter() - start
    n = len(truth["swaps"]) + len(truth["jumps"]) + len(truth["breaks"])
    print(f"same fixes by hand (frame by frame, drag each keypoint, select and merge): "
          f"{n} problems, {g.keys} keystrokes + {g.clicks} clicks + {g.drags} drags = "
          f"{g.actions / n:.1f} per problem; {(hand_s + g.user_seconds(n)) / n:.1f} s per "
          "problem with the user's gestures (KLM)")
    hand_actions, hand_s = g.actions / n, (hand_s + g.user_seconds(n)) / n
    print(f"proofreading through the queue: {hand_actions / queue_actions:.1f}x fewer "
          f"gestures, {hand_s / queue_s:.1f}x less time per problem than by hand "
          f"(queue items that looked right included)")
    window.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--gop", type=int, default=60, help="frames between keyframes")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "clamp-scrub"),
                        help="folder for the video (~650 MB) and its store; reused")
    parser.add_argument("--proofread", action="store_true",
                        help="also run the scripted proofreading session")
    parser.add_argument("--verbose", action="store_true", help="list the queue items")
    parser.add_argument("--proofread-only", action="store_true",
                        help="only the proofreading session, on the short cows clip")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from clamp_track.gui.app import application
    from clamp_track.gui.main_window import MainWindow

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.proofread_only:
        import shutil

        app = application(offscreen=True)
        clip = work / SOURCE.name
        if not clip.exists():
            shutil.copy(SOURCE, clip)
        proofread(app, make_store(clip), clip, verbose=args.verbose)
        return
    t = time.perf_counter()
    video = make_video(work / f"long_{args.minutes:g}min_gop{args.gop}.mp4", args.minutes,
                       args.gop)
    store = make_store(video)
    print(f"inputs ready in {time.perf_counter() - t:.0f} s: {video.name} "
          f"({video.stat().st_size / 2**20:.0f} MB); {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")

    app = application(offscreen=True)
    window = MainWindow(interactive=False)
    window.resize(1440, 900)
    window.show()
    t = time.perf_counter()
    window.open_paths(video, store)
    opened = time.perf_counter() - t
    wait_shown(app, window, 60)
    n = window.state.n_frames
    print(f"video {n} frames; open (store + review queue): {opened:.2f} s, "
          f"{len(window.state.queue)} queue items")

    t = time.perf_counter()
    window.view.keypointMoved.emit(1, 0, 500.0, 500.0)
    print(f"one keypoint edit (store write + queue over {n} frames): "
          f"{1000 * (time.perf_counter() - t):.0f} ms")

    beat, loader = Heartbeat(), window.loader
    decoded0 = loader.stats.decoded
    beat.start()
    for frame in np.linspace(0, n - 1, 60).astype(int):  # a 2 s drag over the timeline
        window.state.set_frame(int(frame))
        pump(app, 0.033)
    drag_stall = beat.stop()
    settle = wait_shown(app, window)
    print(f"scrub (60 seeks in 2 s): longest GUI stall {drag_stall:.0f} ms, "
          f"{loader.stats.decoded - decoded0} frames decoded, last frame on screen "
          f"{1000 * settle:.0f} ms after the drag")

    rng = np.random.default_rng(1)
    jumps, beat = [], Heartbeat()
    beat.start()
    for frame in rng.integers(0, n, 20):
        window.state.set_frame(int(frame))
        jumps.append(wait_shown(app, window))
    print(f"random jump: {ms(jumps)}; longest GUI stall {beat.stop():.0f} ms")

    for name, step, count in (("step forward", 1, 100), ("step backward", -1, 60)):
        window.state.set_frame(n // 2)
        wait_shown(app, window)
        pump(app, 0.5)  # let read-ahead finish, as a user pausing would
        hits0, req0 = loader.stats.hits, loader.stats.requests
        waits = []
        for _ in range(count):
            window.step(step)
            waits.append(wait_shown(app, window))
            pump(app, 0.04)  # key repeat ~25/s
        rate = (loader.stats.hits - hits0) / (loader.stats.requests - req0)
        print(f"{name}: {ms(waits)}, cache hits {100 * rate:.0f}%")

    window.state.set_frame(1000)
    wait_shown(app, window)
    window.toggle_play()
    start_frame, t = window.state.frame, time.perf_counter()
    pump(app, 6.0)
    window.stop_playing()
    fps = (window.state.frame - start_frame) / (time.perf_counter() - t)
    st = loader.stats
    print(f"playback at 1x ({window.state.video_info.fps:g} fps video): {fps:.1f} frames/s "
          f"shown; decode {1000 * st.decode_s / st.decoded:.0f} ms/frame on average; "
          f"overall cache hit rate {100 * st.hit_rate:.0f}% of {st.requests} requests")
    window.close()
    if args.proofread:
        proofread(app, store, video)


if __name__ == "__main__":
    main()
