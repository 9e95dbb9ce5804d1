"""The review GUI (PyQt6): views, review state, undo commands and workers.

Start it with ``clamp-track review VIDEO`` or :func:`clamp_track.gui.app.launch`. Importing this
package imports nothing from Qt; the modules under it do.
"""
