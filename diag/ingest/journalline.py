"""An entry of the journal as the line `journalctl -o short-iso-precise --all` prints for it.

The daemon follows a unit's journal as JSON (`diag.ingest.journal`) and turns each entry back into
the line journalctl itself would print, so that the daemon's one pipeline reads it exactly as
`diag scan` reads the exported file (`journalctl -u vllm -o short-iso-precise > f`): the wrappers
take the time (with its microseconds and zone) and the pid from that prefix, as they do there.
What journalctl prints was read off its output (systemd 252, `output_short`), and
tests/test_journal.py holds these lines to journalctl's own for the same journal file.
"""

from __future__ import annotations

import json
import time
from typing import Any


class ShortLines:
    """Builds the lines; keeps the local time of the last seconds seen (a log's lines share theirs)."""

    def __init__(self) -> None:
        self._zones: dict[int, tuple[str, str]] = {}  # epoch second -> its local `YYYY-mm-ddTHH:MM:SS` and zone

    def build(self, us: int, e: dict[str, Any], msg: bytes) -> bytes:
        """The entry as `journalctl -o short-iso-precise --all` prints it: `<local time with µs and
        zone> <host> <identifier>[<pid>]: <message>`, each further line of the message indented
        under the first, a newline at the end."""
        sec, frac = divmod(us, 1_000_000)
        stamp = self._zones.get(sec)
        if stamp is None:
            lt = time.localtime(sec)
            stamp = (time.strftime("%Y-%m-%dT%H:%M:%S", lt), time.strftime("%z", lt))
            if len(self._zones) >= 4096:
                self._zones.clear()
            self._zones[sec] = stamp
        head = f"{stamp[0]}.{frac:06d}{stamp[1]}"
        host = _text(e.get("_HOSTNAME"))
        if host:
            head += " " + host
        ident = _text(e.get("SYSLOG_IDENTIFIER")) or _text(e.get("_COMM"))
        head += " " + (ident if ident is not None else "unknown")
        pid = _text(e.get("_PID"))
        if pid is None:
            pid = _text(e.get("SYSLOG_PID"))
        if pid is not None:
            head += f"[{pid}]"
        prefix = (head + ": ").encode("utf-8", "replace")
        if b"\n" not in msg:
            return prefix + msg + b"\n"
        parts = msg.split(b"\n")
        while len(parts) > 1 and not parts[-1]:
            parts.pop()  # journalctl prints no empty last line for a message's final newline
        indent = b"\n" + b" " * len(prefix.decode("utf-8", "replace"))
        return prefix + indent.join(parts) + b"\n"


def _text(v: Any) -> str | None:
    """A short field (host, identifier, pid) as text; a field given twice is an array: its first value."""
    if isinstance(v, list) and v and not isinstance(v[0], int):
        v = v[0]
    if isinstance(v, list):
        b = message_bytes(v)
        v = None if b is None else b.decode("utf-8", "replace")
    return v[:256] if isinstance(v, str) else None


def message_bytes(v: Any) -> bytes | None:
    """A MESSAGE's bytes: a JSON string (UTF-8), an array of byte values (not UTF-8, or with control
    characters), an array of those (the field given twice: the first); None for null or anything else."""
    if isinstance(v, str):
        return v.encode("utf-8", "replace")
    if isinstance(v, list) and v:
        if isinstance(v[0], (str, list)):
            return message_bytes(v[0])
        try:
            return bytes(v)
        except (TypeError, ValueError):
            return None
    if isinstance(v, list):
        return b""
    return None


def parse_entry(raw: bytes) -> tuple[dict[str, Any], int] | None:
    """One line of `journalctl -o json`: the entry and its time (µs since the epoch), or None when the
    line is no entry (not a JSON object, or without a time journalctl would print)."""
    try:
        e = json.loads(raw)
    except (ValueError, RecursionError):  # (a line nested past the recursion limit)
        return None
    if not isinstance(e, dict):
        return None
    us = e.get("__REALTIME_TIMESTAMP")
    if not isinstance(us, str) or not us.isascii() or not us.isdigit() or len(us) > 19:  # (isdigit alone takes '²')
        return None
    return e, int(us)
