"""PyQt6 desktop GUI (views only; install with ``pip install 'clamp-track[gui]'``)."""
