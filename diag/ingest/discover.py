"""`diag scan DIR`: the logs in a directory, as a post-mortem finds them.

A support bundle, once unpacked, is a directory tree: `var/log/vllm/vllm.log`, its rotations
(`vllm.log.1`, `vllm.log.2.gz`), a proxy's and nginx's logs, and whatever else was collected
(a config, a screenshot, a core file, a copy of the store). Each regular file below the
directory is scanned as its own source, in the order of its path, so the document is the same
on every run. What can never be a log is left out, with one line saying how many files and
which one first: a file whose first bytes hold a NUL (other than the runs of them a log can hold,
`is_binary`) and that no decoder takes (gzip, bzip2, xz,
UTF-16, a container runtime's file, a tar or zip bundle, whose members are read in turn), a file
whose name says it is code or a config (`NOT_LOGS`), and the tool's own files (names starting with `.`: `.git`,
editors' swap files, `.DS_Store`). Symbolic links to files are read (once: `diag scan` reads a
file reached twice once); links to directories are not followed, so a link loop cannot make a
scan endless.
"""

from __future__ import annotations

import os
import re

from diag.fsname import display
from diag.ingest.containerlog import container_format
from diag.ingest.reader import ZSTD, bundle_kind, decompressor
from diag.ingest.utf16 import utf16_encoding

HEAD = 8192  # bytes looked at to tell a log from a binary file
# A log's NULs come in runs: the hole a writer without O_APPEND (`vllm serve … > vllm.log`) leaves at
# a file's start after logrotate's copytruncate, the blocks a crash leaves unwritten at its end (and
# in its middle once a restart appends after them). A binary file's are among its other bytes.
_NUL_RUN = re.compile(rb"\x00{256,}")


def is_binary(head: bytes) -> bool:
    """Is a file that begins with `head` certainly no log: a NUL in it outside the runs a log can
    hold (at either end of `head`, or 256 and more), and no decoder of ours (compressed text, a
    bundle, UTF-16, a container runtime's file) takes it?"""
    if b"\x00" not in head:
        return False
    if (decompressor(head) is not None or bundle_kind(head) is not None or utf16_encoding(head) is not None
            or container_format(head) is not None or head.startswith(ZSTD)):  # (zstd: scan says how to read it)
        return False
    return b"\x00" in _NUL_RUN.sub(b"", head.strip(b"\x00"))


# What a file's name says is no log: code, scripts, web pages, configs, notes. The proxy's directory
# holds proxy_server.py and chat.html beside proxy.log, a bundle its start script and nginx.conf: their
# lines quote what logs say (`logging.error(f"Upstream not reachable: {e}")`), and read as log lines
# they raised findings and made up startup facts.
NOT_LOGS = frozenset((
    ".py", ".pyi", ".ipynb", ".sh", ".bash", ".zsh", ".ps1", ".bat", ".cmd", ".js", ".mjs", ".ts", ".css",
    ".html", ".htm", ".md", ".rst", ".c", ".h", ".cc", ".cpp", ".cu", ".go", ".rs", ".java", ".jinja", ".j2",
    ".toml", ".yaml", ".yml", ".ini", ".cfg", ".conf", ".service",
))
BINARY, SOURCE = "binary", "source or config"  # why a file is left out, as `diag scan` says it


def left_out(name: str, head: bytes) -> str | None:
    """Why the file `name` that begins with `head` is no log to scan (BINARY, SOURCE), or None."""
    if os.path.splitext(name)[1].lower() in NOT_LOGS:
        return SOURCE
    return BINARY if is_binary(head) else None


def files_under(top: str) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """(the files under directory `top` to scan, in path order; those left out, by why (`left_out`);
    the directories below it that could not be listed, each with why)."""
    found: list[str] = []
    left: dict[str, list[str]] = {}
    unlisted: list[str] = []

    def onerror(exc: OSError) -> None:
        unlisted.append(f"{display(exc.filename or top)}: {exc.strerror or exc}")

    for root, dirs, files in os.walk(top, onerror=onerror, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = os.path.join(root, name)
            if not os.path.isfile(path):  # a socket, a fifo, a device, a dangling link
                continue
            try:
                with open(path, "rb") as f:
                    head = f.read(HEAD)
            except OSError:
                found.append(path)  # opening it again says what is wrong, in the report
                continue
            why = left_out(name, head)
            if why is None:
                found.append(path)
            else:
                left.setdefault(why, []).append(path)
    found.sort()
    return found, left, unlisted
