"""A traceback's code frames, as code locations only: `package/module.py:function`.

Rules never see the code a traceback passed through: the quoted source lines under each frame
repeat error messages and string literals, and would make rules fire on code instead of on what
happened. But *where* a traceback went says what failed even when its exception line was cut off
in a paste (vLLM V0's engine loop: `vllm/engine/async_llm_engine.py:run_engine_loop`). So the
record assembly keeps, per record, the locations of its `File "…", line N, in func` lines —
normalised (install prefixes and line numbers dropped), bounded in number and length — and a rule
may match them with its `frames` key.

Only a whole line of exactly that shape is a frame: a location quoted inside a message, a prompt
or a body is not (and user content has been masked before this point; a line that carries a mask
gives no frame).
"""

from __future__ import annotations

import re

from diag.parsing import usercontent

MAX_FRAMES = 64  # per record: the first and the last half are kept (outermost calls and the innermost ones)
MAX_PATH = 160  # characters of a normalised path (its end is kept: the module is what matters)
MAX_FUNC = 80

# `  File "/usr/lib/python3.10/asyncio/tasks.py", line 445, in wait_for` (the whole line)
_FRAME = re.compile(r'[ \t]*File "(?P<path>[^"\n]{1,4096})", line \d{1,9}, in (?P<func>[\w.<>]{1,4096})[ \t]*\Z')
# where an installation ends and the package path begins
_SITE = re.compile(r".*/(?:site|dist)-packages/")
_STDLIB = re.compile(r".*/lib/(?:python|pypy)\d[\d.]*/")
_KEEP_PARTS = 4  # of a path outside any installation (a source checkout, an application): its last components


def location(line: str) -> str | None:
    """`package/path.py:function` for a traceback frame line, or None for any other line."""
    if usercontent.OPEN in line:
        return None
    m = _FRAME.match(line)
    if m is None:
        return None
    return f"{normalise(m.group('path'))}:{m.group('func')[:MAX_FUNC]}"


def normalise(path: str) -> str:
    """The part of a source path that names the code, not the machine: what follows `site-packages/`
    or `dist-packages/` (an installed package), `lib/pythonX.Y/` (the standard library), or the last
    few components of any other path (a checkout, an application: no home directories)."""
    p = path.replace("\\", "/")
    if not p.startswith("<"):  # `<frozen runpy>`, `<string>` name themselves
        m = _SITE.match(p) or _STDLIB.match(p)
        if m is not None:
            p = p[m.end():]
        else:
            p = "/".join(p.rstrip("/").split("/")[-_KEEP_PARTS:])
    if len(p) > MAX_PATH:
        p = "…" + p[-(MAX_PATH - 1):]
    return p


def add(frames: tuple[str, ...] | None, loc: str) -> tuple[str, ...]:
    """`frames` with one more location, bounded: past MAX_FRAMES the middle of the stack gives way."""
    if not frames:
        return (loc,)
    if len(frames) < MAX_FRAMES:
        return (*frames, loc)
    half = MAX_FRAMES // 2
    return (*frames[:half], *frames[half + 1:], loc)
