"""A journal exported as JSON (`journalctl -u vllm -o json > vllm.json`), read by `diag scan` as
the lines the server wrote.

An export is what a post-mortem often gets from a host whose server logs to journald: JSON keeps
every field and every byte, so it is what people are asked for. Read as it is, each line was one
JSON object: no line of any format, nothing found, nothing said. Each entry is turned into the
line `journalctl -o short-iso-precise` would print for it (`diag.ingest.journalline`, the daemon's
own way of reading a journal), so scanning the JSON export finds what scanning the text export, or
following the journal, finds. An entry without MESSAGE prints no line in journalctl and gives none
here; a line that is not an entry (an export cut in the middle, something appended) is passed on as
it is: nothing is lost.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, BinaryIO, Callable

from diag.ingest.decoded import DecodedSource
from diag.ingest.journalline import ShortLines, message_bytes, parse_entry

if TYPE_CHECKING:
    from diag.daemon.config import JournalSpec

MAX_CARRY = 8 << 20  # a line of the export longer than this is passed on as it is, unread (the splitter cuts it)
HEAD_CUT = 4096  # a first line at least this long without its end in `head`: judged by its first field
_FIELD = re.compile(rb'\{"[A-Z_][A-Z0-9_]*":')  # journal field names: capitals, digits, underscores


def journal_export(head: bytes) -> bool:
    """Is a file whose first bytes are `head` a `journalctl -o json` export? Its first line is an
    object with the cursor and the time journalctl gives every entry, in no fixed order (systemd 252
    puts the entry's own fields first). A first line longer than `head` (`--all` and a first
    MESSAGE that long) may hold them past it: then its first field's name is enough, a journal
    field's (capitals, digits, `_`). A wrong guess costs nothing: a line that is no entry is read as
    it is (`JournalExportSource`)."""
    nl = head.find(b"\n")
    if nl < 0 and len(head) >= HEAD_CUT:
        return _FIELD.match(head) is not None
    first = head if nl < 0 else head[:nl]
    return first.startswith(b'{"') and b'"__CURSOR":"' in first and b'"__REALTIME_TIMESTAMP":"' in first


class JournalExportSource(DecodedSource):
    """The export's entries as journalctl's short-iso-precise lines (see the module doc)."""

    def __init__(self, raw: BinaryIO):
        super().__init__(raw)
        self._lines = ShortLines()
        self._carry = b""

    def _decode(self, data: bytes, final: bool) -> bytes:
        if final:
            out, self._carry = (self._line(self._carry) if self._carry else b""), b""
            return out
        buf = self._carry + data if self._carry else data
        last = buf.rfind(b"\n")
        if last < 0:
            if len(buf) > MAX_CARRY:
                self._carry = b""
                return buf
            self._carry = buf
            return b""
        self._carry = buf[last + 1:]
        return b"".join(map(self._line, buf[:last].split(b"\n")))

    def _line(self, raw: bytes) -> bytes:
        parsed = parse_entry(raw)
        if parsed is None:
            return raw + b"\n"
        e, us = parsed
        msg = message_bytes(e.get("MESSAGE"))
        return b"" if msg is None else self._lines.build(us, e, msg)


def read_recent(spec: "JournalSpec", since: float, most: int, read: Callable[[BinaryIO], object],
                journalctl: str = "journalctl") -> str | None:
    """A unit's journal since `since` (epoch seconds), its newest `most` entries at most, handed to
    `read` as the lines journalctl prints (`diag doctor`'s logs check: the part of the journal a file's
    tail would be). Streamed: a busy server's half hour is read with bounded memory. Returns None, or
    what went wrong, in one line (journalctl missing, failing, or the journal not the user's to read)."""
    import subprocess

    from diag.ingest.journal import NO_PERMISSION

    cmd = [journalctl, "-o", "json", "--all", "--no-pager", "-u", spec.unit, f"--since=@{int(since)}", f"--lines={most}"]
    if spec.directory:
        cmd.append(f"--directory={spec.directory}")
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        return f"{journalctl} could not be run ({exc.strerror or exc}): is systemd's journalctl installed?"
    assert proc.stdout is not None and proc.stderr is not None
    try:
        read(JournalExportSource(proc.stdout))
    finally:
        proc.stdout.close()
        try:
            err = proc.stderr.read(1 << 16).decode("utf-8", "replace")
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc, err = proc.wait(), "no end after 30 s"
        proc.stderr.close()
    last = next((ln.strip() for ln in reversed(err.splitlines()) if ln.strip()), "")
    if any(s in err for s in NO_PERMISSION):
        return (f"the journal is not readable by this user ({last[:160]}): run as root or as a member of the "
                "systemd-journal group")
    if rc != 0:
        return f"journalctl failed (exit status {rc}): {last[:200]}"
    return None
