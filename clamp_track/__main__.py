"""Allow ``python -m clamp_track``."""

from clamp_track.cli import main

raise SystemExit(main())
