"""Where ferry keeps its state on disk."""

from __future__ import annotations

import os
from pathlib import Path

from ferry.errors import StateError


def ferry_home() -> Path:
    """The state directory: ``$FERRY_HOME`` or ``./.ferry``; created on first use."""
    configured = os.environ.get("FERRY_HOME")
    home = Path(configured or ".ferry").expanduser().resolve()
    where = f"FERRY_HOME={configured}" if configured else f"the state directory {home} (set FERRY_HOME to move it)"
    try:
        home.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StateError(f"{where}: a file is in the way, not a directory") from None
    except OSError as exc:
        raise StateError(f"{where}: cannot create it: {exc.strerror or exc}") from None
    if not home.is_dir():
        raise StateError(f"{where}: not a directory")
    if not os.access(home, os.W_OK | os.X_OK):
        raise StateError(f"{where}: not writable by this user")
    return home
