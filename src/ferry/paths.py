"""Where ferry keeps its state on disk."""

from __future__ import annotations

import os
from pathlib import Path


def ferry_home() -> Path:
    """The state directory: ``$FERRY_HOME`` or ``./.ferry``; created on first use."""
    home = Path(os.environ.get("FERRY_HOME", ".ferry")).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home
