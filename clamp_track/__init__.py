"""clamp-track: tracked, smoothed animal poses from wildlife footage with CLAMP.

Importing the package is cheap: it imports neither torch nor Qt. Use the sub-packages
(``clamp_track.models``, ``clamp_track.pipelines``, ...) for the real work.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
