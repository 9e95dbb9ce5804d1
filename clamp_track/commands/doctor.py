"""``clamp-track doctor``: what this installation can do, checked by doing it.

One line per check, ``ok`` / ``--`` (optional part missing) / ``FAIL``: versions, the devices
torch sees, a pose self-test on each (a small random-weight CLAMP through the pipeline's own
:class:`~clamp_track.pipelines.pose.PoseEstimator`, on GPUs with fp16 and compared with the
CPU result, with crops/s), decoding a generated H.264 clip, the optional extras, whether Qt's
platform plugin loads (else the apt/dnf line for its missing libraries) and the weights cache.
Exit status 1 if a required check fails, so it can gate a cluster job.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import tempfile
import time
from pathlib import Path

#: Optional extras: (module, extra, what needs it).
OPTIONAL = (("PyQt6.QtWidgets", "gui", "review GUI"), ("sleap_io", "sleap", "SLEAP export"),
            ("dask.distributed", "dask", "batch --dask"), ("decord", "", "--decoder decord"),
            ("mmdet.apis", "mmdet", "--detector mmdet"),
            ("movement.kinematics", "behaviour", "clamp-track behaviour"),
            ("onnxruntime", "onnx", "--backend onnxruntime: a faster pose forward on the CPU"),
            ("onnxscript", "onnx", "--backend onnxruntime: exporting its graph"))


def add_parser(sub) -> None:
    """Register ``doctor``."""
    p = sub.add_parser("doctor", help="check the installation, devices and decoders",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--device", action="append", metavar="DEVICE",
                   help="device(s) to self-test (default: cpu and every CUDA device)")
    p.set_defaults(func=run)


class _Report:
    def __init__(self):
        self.failed = False

    def line(self, status: str, what: str, detail: str) -> None:
        if status == "FAIL":
            self.failed = True
        print(f"{status:>4}  {what:<22} {detail}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Run every check; 1 if a required one failed."""
    from clamp_track import __version__

    r = _Report()
    r.line("ok", "clamp-track", f"{__version__}, Python {platform.python_version()}, "
           f"{platform.system()} {platform.machine()}")
    try:
        import torch
    except ImportError as exc:
        r.line("FAIL", "torch", f"not importable ({exc}); reinstall clamp-track")
        return 1
    cuda = torch.cuda.is_available()
    r.line("ok", "torch", f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'}), "
           f"{torch.get_num_threads()} CPU threads")
    for i in range(torch.cuda.device_count() if cuda else 0):
        props = torch.cuda.get_device_properties(i)
        r.line("ok", f"cuda:{i}", f"{props.name}, {props.total_memory / 2**30:.1f} GiB")
    if not cuda:
        r.line("--", "GPU", "no CUDA device: pose runs on the CPU (slower)")
    devices = args.device or ["cpu", *(f"cuda:{i}" for i in range(
        torch.cuda.device_count() if cuda else 0))]
    _self_test(r, devices)
    _decode_test(r)
    import cv2  # noqa: F401 - before decord, whose old zlib breaks OpenCV's PNG otherwise

    for module, extra, purpose in OPTIONAL:
        try:
            importlib.import_module(module)
            version = (importlib.import_module("PyQt6.QtCore").PYQT_VERSION_STR
                       if module.startswith("PyQt6")
                       else getattr(sys.modules[module.split(".")[0]], "__version__", ""))
            r.line("ok", module.split(".")[0], f"{version} ({purpose})".strip())
        except Exception as exc:  # noqa: BLE001 - a broken optional install is reported
            hint = f"pip install 'clamp-track[{extra}]'" if extra else "pip install decord"
            r.line("--", module.split(".")[0], f"not available for {purpose} "
                   f"({type(exc).__name__}); {hint}")
    if "PyQt6" in sys.modules:
        _qt_platform(r)
    _weights(r)
    return 1 if r.failed else 0


# Starts a QApplication on the platform plugin the review GUI would use; Qt aborts the process
# (exit 134) when the plugin cannot load, hence a child process.
_QT_PROBE = ("from PyQt6.QtWidgets import QApplication; app = QApplication(['clamp-track']); "
             "print(app.platformName())")
# Debian package -> Fedora/RHEL package, for the libraries Qt's xcb plugin needs.
_DNF = {"libxcb-cursor0": "xcb-util-cursor", "libxcb-icccm4": "xcb-util-wm",
        "libxcb-keysyms1": "xcb-util-keysyms", "libxcb-image0": "xcb-util-image",
        "libxcb-render-util0": "xcb-util-renderutil", "libxkbcommon-x11-0": "libxkbcommon-x11",
        "libxkbcommon0": "libxkbcommon", "libxcb-xinerama0": "libxcb",
        "libxcb-shape0": "libxcb", "libxcb-xkb1": "libxcb", "libegl1": "libglvnd-egl",
        "libgl1": "libglvnd-glx", "libfontconfig1": "fontconfig", "libdbus-1-3": "dbus-libs"}


def debian_package(soname: str) -> str:
    """The Debian/Ubuntu package of a shared library, e.g. ``libxcb-icccm4``.

    ``libxcb-icccm.so.4`` -> ``libxcb-icccm4``; a ``-`` goes before the version when the name
    ends in a digit: ``libxkbcommon-x11.so.0`` -> ``libxkbcommon-x11-0``.
    """
    name, _, version = soname.partition(".so.")
    major = version.split(".")[0]
    return name + ("-" if name[-1:].isdigit() else "") + major


def missing_qt_packages(stderr: str, ldd: str) -> list[str]:
    """Debian packages Qt's xcb plugin lacks, from Qt's message and ``ldd`` of the plugin."""
    import re

    found = [debian_package(m) for m in re.findall(r"^\s*(\S+\.so\.[\d.]+) => not found",
                                                   ldd, re.MULTILINE)]
    if "libxcb-cursor0 is needed" in stderr:
        found.insert(0, "libxcb-cursor0")
    return list(dict.fromkeys(found))


def install_lines(packages: list[str]) -> list[str]:
    """The apt and dnf commands that install ``packages``."""
    dnf = list(dict.fromkeys(_DNF.get(p, p) for p in packages))
    return [f"sudo apt-get install {' '.join(packages)}   (Debian/Ubuntu)",
            f"sudo dnf install {' '.join(dnf)}   (Fedora/RHEL)"]


def _qt_platform(r: _Report) -> None:
    """Whether the review GUI can open a window here: Qt's platform plugin must load."""
    import os
    import subprocess

    if sys.platform != "linux":
        return
    wanted = os.environ.get("QT_QPA_PLATFORM") or (
        "wayland" if os.environ.get("WAYLAND_DISPLAY") else "xcb")
    env = {**os.environ, "QT_QPA_PLATFORM": wanted}
    try:
        done = subprocess.run([sys.executable, "-c", _QT_PROBE], env=env, capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        r.line("--", "Qt platform", f"the {wanted} plugin did not start within 60 s")
        return
    if done.returncode == 0:
        r.line("ok", "Qt platform", f"{done.stdout.strip() or wanted} plugin loads (review "
               "opens a window)")
        return
    missing = missing_qt_packages(done.stderr, _ldd_of_plugin(wanted))
    if missing:
        r.line("--", "Qt platform", f"the {wanted} plugin cannot load: missing "
               f"{', '.join(missing)}; `clamp-track review` aborts until they are installed:")
        for line in install_lines(missing):
            print(f"{'':28}{line}", flush=True)
    elif wanted == "xcb" and not os.environ.get("DISPLAY"):
        r.line("--", "Qt platform", "no display (DISPLAY is not set): review opens no window "
               "here; `clamp-track review --screenshot OUT.png` renders offscreen")
    else:
        reason = next((ln for ln in done.stderr.splitlines() if ln.strip()), "no reason given")
        r.line("--", "Qt platform", f"the {wanted} plugin does not start ({reason.strip()})")


def _ldd_of_plugin(platform_name: str) -> str:
    """``ldd`` output of Qt's platform plugin (empty if unavailable)."""
    import shutil
    import subprocess

    try:
        from PyQt6.QtCore import QLibraryInfo
    except ImportError:
        return ""
    folder = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms"
    plugin = folder / f"libq{platform_name}.so"
    if not plugin.is_file() or not shutil.which("ldd"):
        return ""
    try:
        return subprocess.run(["ldd", str(plugin)], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _self_test(r: _Report, devices: list[str]) -> None:
    import numpy as np
    import torch

    from clamp_track.models import create_model
    from clamp_track.pipelines.pose import PoseConfig, PoseEstimator
    from clamp_track.types import Detections

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (480, 640, 3), np.uint8)
    boxes = np.array([[40, 60, 300, 400], [320, 100, 600, 420]] * 4, np.float32)
    dets = Detections(boxes, np.full(len(boxes), 0.9, np.float32),
                      track_ids=np.arange(1, len(boxes) + 1))
    torch.manual_seed(0)
    model = create_model("clamp_tiny_rn50")
    reference = None
    for name in devices:
        try:
            pose = PoseEstimator(model, PoseConfig(device=name, batch_size=8))
            pose.predict([image], [dets], [0])  # warm-up
            start = time.perf_counter()
            out = pose.predict([image], [dets], [0])[0]
            rate = len(boxes) / (time.perf_counter() - start)
            if not np.isfinite(out.keypoints).all():
                raise RuntimeError("non-finite keypoints")
            note = ""
            if reference is None:
                reference = out.keypoints
            else:  # another device must agree with the first (fp16: to a few pixels)
                diff = float(np.abs(out.keypoints - reference).max())
                if diff > 8.0:
                    raise RuntimeError(f"keypoints differ from {devices[0]}'s by {diff:.1f} px")
                note = f", within {diff:.2f} px of {devices[0]}"
            r.line("ok", f"pose on {name}", f"{rate:.0f} crops/s (tiny test model, flip test"
                   f"{', fp16' if pose.device.type == 'cuda' else ''}){note}")
        except Exception as exc:  # noqa: BLE001 - what fails is the finding
            r.line("FAIL", f"pose on {name}", f"{type(exc).__name__}: {exc}".splitlines()[0])


def _decode_test(r: _Report) -> None:
    import numpy as np

    from clamp_track.io.video import VideoReader, VideoWriter

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "check.mp4"
            with VideoWriter(path, 25.0, (64, 48)) as writer:
                for i in range(10):
                    writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
            with VideoReader(path) as reader:
                frames = [f.index for f in reader]
            if frames != list(range(10)):
                raise RuntimeError(f"read back frames {frames}")
        r.line("ok", "video", "H.264 written and read back frame-exact (PyAV)")
    except Exception as exc:  # noqa: BLE001
        r.line("FAIL", "video", f"{type(exc).__name__}: {exc}".splitlines()[0])


def _weights(r: _Report) -> None:
    from clamp_track.weights import cache_dir, cached_pose_weights

    cached = cached_pose_weights()
    if cached:
        r.line("ok", "pose weights", f"{len(cached)} in {cache_dir()}: "
               f"{', '.join(sorted(cached))}")
    else:
        r.line("--", "pose weights", f"none cached in {cache_dir()}; `clamp-track weights fetch "
               "clamp-official` (online) or --pose-weights FILE")
