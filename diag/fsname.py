"""A file's name as diag writes it down: text for people, exact bytes for finding the file again.

Linux allows any bytes but NUL in a file name, and Python hands a name that is not valid UTF-8
over as a str with lone surrogates ('vllm-\\udcff.log' for the byte 0xff). Such a str opens the
file, but every place diag writes text refuses it: UTF-8 JSON, SQLite, an HTML page, a metrics
label, an alert, a terminal whose encoding is strict. So the name crosses into those as its
*display* form, the bytes decoded as UTF-8 with each byte that is not spelled `\\xHH` (Python's
`backslashreplace`: what `ls --quoting-style=escape`-like tools show and a user can read back).
A name that is valid UTF-8, almost every name, is its own display form: nothing changes for it,
and stores written before keep matching.

The display form is for people: a name that really contains the four characters `\\xff` looks the
same as one with the byte 0xff. What must find the file again, or must tell two files apart,
uses the exact bytes: the daemon's stored per-source state keeps them beside the display name
(`stored`/`restored`), and a text key (`ident`) spells them in hex.

The pipeline names a source by `display(path)` where it opens it (`Pipeline.scan_path`, the
daemon's follower), so traces, findings, facts and alerts carry text only; the real name stays
with whatever opens the file.
"""

from __future__ import annotations

import os
from typing import Union

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
_HEX_PREFIX = "fsbytes:"  # never the start of an absolute path, "-" (stdin) or a valid name's ident


def display(path: PathLike) -> str:
    """The name as text: itself when it is valid UTF-8, else each undecodable byte as `\\xHH`."""
    p = os.fspath(path)
    if isinstance(p, str):
        try:
            p.encode("utf-8")
            return p
        except UnicodeEncodeError:
            try:
                p = p.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:  # a surrogate no file system produced (e.g. from JSON): spelled as Python does
                return p.encode("utf-8", "backslashreplace").decode("utf-8")
    return p.decode("utf-8", "backslashreplace")


def stored(path: str) -> tuple[str, bytes | None]:
    """(display name, the name's bytes when the display name is not the name itself)."""
    name = display(path)
    return name, (None if name == path else _bytes(path))


def restored(name: str, raw: bytes | None) -> str:
    """The real name back from `stored`'s pair."""
    return name if raw is None else os.fsdecode(raw)


def ident(path: str) -> str:
    """A text key that tells any two names apart: the name when it is valid UTF-8, else its bytes in hex."""
    name = display(path)
    return name if name == path else _HEX_PREFIX + _bytes(path).hex()


def _bytes(path: str) -> bytes:
    try:
        return os.fsencode(path)
    except UnicodeEncodeError:  # not a name the file system gave: still some bytes, never an exception
        return path.encode("utf-8", "surrogatepass")
