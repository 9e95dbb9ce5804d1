"""``clamp-track doctor`` checks that Qt's platform plugin loads (issue 11.7): where Qt's xcb
libraries are missing, ``review`` aborts (exit 134), so doctor names them with the install line."""

from __future__ import annotations

import pytest

from clamp_track.commands.doctor import (
    _qt_platform,
    _Report,
    debian_package,
    install_lines,
    missing_qt_packages,
)

# What Qt 6.5+ prints and what ldd says on a Debian box without the libraries (seen here).
QT_STDERR = ("qt.qpa.plugin: From 6.5.0, xcb-cursor0 or libxcb-cursor0 is needed to load the Qt "
             "xcb platform plugin.\nqt.qpa.plugin: Could not load the Qt platform plugin \"xcb\" "
             "in \"\" even though it was found.\n")
LDD = ("\tlibQt6XcbQpa.so.6 => /venv/PyQt6/Qt6/lib/libQt6XcbQpa.so.6 (0x00007f)\n"
       "\tlibxcb-icccm.so.4 => not found\n\tlibxcb-keysyms.so.1 => not found\n"
       "\tlibxkbcommon-x11.so.0 => not found\n\tlibxcb-icccm.so.4 => not found\n")


@pytest.mark.parametrize("soname, package", [("libxcb-icccm.so.4", "libxcb-icccm4"),
                                              ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
                                              ("libxcb-render-util.so.0.0.0",
                                               "libxcb-render-util0")])
def test_debian_package_of_a_library(soname, package):
    assert debian_package(soname) == package


def test_missing_libraries_become_one_apt_and_one_dnf_line():
    missing = missing_qt_packages(QT_STDERR, LDD)
    assert missing == ["libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1",
                       "libxkbcommon-x11-0"]
    apt, dnf = install_lines(missing)
    assert apt.startswith("sudo apt-get install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 "
                          "libxkbcommon-x11-0")
    assert dnf.startswith("sudo dnf install xcb-util-cursor xcb-util-wm xcb-util-keysyms "
                          "libxkbcommon-x11")


def test_a_plugin_that_cannot_start_is_reported_not_a_crash(monkeypatch, capsys):
    pytest.importorskip("PyQt6.QtWidgets")
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.delenv("DISPLAY", raising=False)  # no X server: xcb cannot start, ever
    report = _Report()
    _qt_platform(report)
    out = capsys.readouterr().out
    assert "--  Qt platform" in out and not report.failed
    assert "sudo apt-get install" in out or "no display (DISPLAY is not set)" in out


def test_the_offscreen_plugin_loads(monkeypatch, capsys):
    pytest.importorskip("PyQt6.QtWidgets")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    _qt_platform(_Report())
    assert "ok  Qt platform            offscreen plugin loads" in capsys.readouterr().out
