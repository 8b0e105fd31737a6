"""Where diag keeps its state, and its configuration file."""

from __future__ import annotations

import os
from pathlib import Path


def default_state_dir() -> Path:
    """systemd's StateDirectory= (STATE_DIRECTORY), else $XDG_STATE_HOME/diag, else ~/.local/state/diag."""
    sd = os.environ.get("STATE_DIRECTORY")
    if sd:
        return Path(sd.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "diag"
