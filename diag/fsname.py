"""A file's name as diag writes it down: text for people, exact bytes for finding the file again.

Linux allows any bytes but NUL in a file name, and Python hands a name that is not valid UTF-8
over as a str with lone surrogates ('vllm-\\udcff.log' for the byte 0xff). Such a str opens the
file, but every place diag writes text refuses it: UTF-8 JSON, SQLite, an HTML page, a metrics
label, an alert, a terminal whose encoding is strict. A name may also hold control characters (ESC,
CR, LF, BEL; C1's CSI U+009B): printed as they are, a file named by whoever can write in a log
directory would drive the terminal of whoever runs `diag scan` or `diag status`. So the name crosses
into all of those as its *display* form: the name's bytes as UTF-8 text, with each byte that is not
part of a printable character (undecodable, a control character) spelled `\\xHH`, and a backslash
doubled, as `ls --quoting-style=escape` shows names. `\\xHH` always means the byte HH, so the form
is unambiguous: two names never display the same (the byte 0xff is `\\xff`, a name spelling the
four characters backslash, x, f, f is `\\\\xff`), and within one run a display name can key what is
kept per file. A name that is valid UTF-8 without control characters or backslashes, almost every
name, is its own display form: nothing changes for it, and stores written before keep matching.

What must find the file again uses the exact bytes: the daemon's stored per-source state keeps them
beside the display name (`stored`/`restored`), and a text key (`ident`) spells them in hex.

The pipeline names a source by `display(path)` where it opens it (`Pipeline.scan_path`, the
daemon's follower), so traces, findings, facts and alerts carry text only; the real name stays
with whatever opens the file. `text` is the gentler form for free text that quotes names or
command lines (doctor's lines, an argument echoed back): only what a terminal would act on or a
strict encoder refuses is escaped.
"""

from __future__ import annotations

import os
import re
from typing import Union

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
_HEX_PREFIX = "fsbytes:"  # never the start of an absolute path, "-" (stdin) or a valid name's ident


# What a name's display form spells out: control characters (C0, DEL, C1), bidirectional controls
# (U+202A-U+202E, U+2066-U+2069: they reorder what follows them on a terminal or a page, so a
# name `vllm-<RLO>gol.txt` shows as `vllm-txt.log`: diag.parsing.base.BIDI_CONTROLS), the backslash
# that starts every escape, and surrogates (undecodable bytes as os.fsdecode gives them; others
# from JSON).
_SPECIAL = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\\\\\ud800-\\udfff]")
# In free text (`text`): the same less the backslash, which is no escape there (it keys nothing).
_TEXT_SPECIAL = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\ud800-\\udfff]")


def _spell(m: "re.Match[str]") -> str:
    c = m.group()
    o = ord(c)
    if c == "\\":
        return "\\\\"
    if 0xDC80 <= o <= 0xDCFF:  # an undecodable byte (surrogateescape)
        return f"\\x{o - 0xDC00:02x}"
    if o >= 0xD800:  # a surrogate no file system produced (e.g. from JSON): spelled as Python does
        return f"\\u{o:04x}"
    return "".join(f"\\x{b:02x}" for b in c.encode("utf-8"))  # a control character: its bytes


def display(path: PathLike) -> str:
    """The name as text to show and to key by within a run: itself unless it holds an undecodable
    byte, a control character or a backslash; those spelled `\\xHH` (a byte) and `\\\\`."""
    p = os.fspath(path)
    if isinstance(p, bytes):
        p = p.decode("utf-8", "surrogateescape")
    return _SPECIAL.sub(_spell, p) if _SPECIAL.search(p) else p


def text(s: str) -> str:
    """Free text that may quote a name or a command line, one line safe for a terminal and any UTF-8
    sink: undecodable bytes and control characters spelled as in `display`, a backslash as itself."""
    return _TEXT_SPECIAL.sub(_spell, s) if _TEXT_SPECIAL.search(s) else s


def stored(path: str) -> tuple[str, bytes | None]:
    """(display name, the name's bytes when the display name is not the name itself)."""
    name = display(path)
    return name, (None if name == path else _bytes(path))


def restored(name: str, raw: bytes | None) -> str:
    """The real name back from `stored`'s pair."""
    return name if raw is None else os.fsdecode(raw)


def file_key(st: os.stat_result) -> str:
    """A file's identity, whatever names it (a symlink, `./a.log` beside `a.log`, a glob and a name):
    its device and inode."""
    return f"{st.st_dev}:{st.st_ino}"


def ident(path: str) -> str:
    """A text key that tells any two names apart: the name when it is valid UTF-8, else its bytes in hex."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return _HEX_PREFIX + _bytes(path).hex()


def _bytes(path: str) -> bytes:
    try:
        return os.fsencode(path)
    except UnicodeEncodeError:  # not a name the file system gave: still some bytes, never an exception
        return path.encode("utf-8", "surrogatepass")
