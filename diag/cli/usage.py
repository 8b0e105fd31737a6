"""How a command answers its caller: `UsageError` (exit status 2 and a one-line reason) and the
consoles it prints through (no colour under NO_COLOR; long lines, not wrapping, into a pipe)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported by the commands that print through it: `diag scan --json` never loads it
    from rich.console import Console


class UsageError(Exception):
    """Bad arguments or unreadable input: exit status 2 with a one-line reason."""


def console(stderr: bool = False) -> "Console":
    from rich.console import Console

    no_color = bool(os.environ.get("NO_COLOR"))
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 160  # a pipe or file gets long lines, not 80-column wrapping
    return Console(stderr=stderr, no_color=no_color, highlight=False, soft_wrap=False, width=width)
