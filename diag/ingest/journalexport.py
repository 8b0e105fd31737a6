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

from diag.ingest.containerlog import ContainerLogSource
from diag.ingest.journalline import ShortLines, message_bytes, parse_entry

if TYPE_CHECKING:
    from diag.daemon.config import JournalSpec

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


class JournalEntries:
    """An export's records, one entry per line of JSON, into the lines journalctl prints for them:
    the per-record part `ContainerRecords` calls (a runtime's records are read the same way, by
    `containerlog.RecordDecoder`). An entry is never cut into pieces, so nothing is held."""

    holding = False

    def __init__(self) -> None:
        self._lines = ShortLines()

    def line(self, raw: bytes) -> bytes:
        parsed = parse_entry(raw)
        if parsed is None:
            return raw + b"\n"
        e, us = parsed
        msg = message_bytes(e.get("MESSAGE"))
        return b"" if msg is None else self._lines.build(us, e, msg)

    def end_pieces(self) -> bytes:
        return b""


class JournalExportSource(ContainerLogSource):
    """The export's entries as journalctl's short-iso-precise lines (see the module doc), read as a
    runtime's file is: a record a read cuts waits for the next, one longer than 8 MiB is passed on."""

    def __init__(self, raw: BinaryIO):
        super().__init__(raw, "journal-json", JournalEntries())


def read_recent(spec: "JournalSpec", since: float, most: int, read: Callable[[BinaryIO], object],
                journalctl: str = "journalctl") -> str | None:
    """A unit's journal since `since` (epoch seconds), its newest `most` entries at most, handed to
    `read` as the lines journalctl prints (`diag doctor`'s logs check: the part of the journal a file's
    tail would be). Streamed: a busy server's half hour is read with bounded memory. Returns None, or
    what went wrong, in one line (journalctl missing, failing, or the journal not the user's to read)."""
    import subprocess

    from diag.ingest.journal import denied, last_line, unit_args

    # (this machine's entries of the unit, or all of the directory's: the daemon's `unit_args`)
    cmd = [journalctl, "-o", "json", "--all", "--no-pager", *unit_args(spec), f"--since=@{int(since)}", f"--lines={most}"]
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
            err = proc.stderr.read(1 << 16)
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc, err = proc.wait(), b"no end after 30 s"
        proc.stderr.close()
    last = last_line(err)
    if denied(err):
        return (f"the journal is not readable by this user ({last[:160]}): run as root or as a member of the "
                "systemd-journal group")
    if rc != 0:
        return f"journalctl failed (exit status {rc}): {last[:200]}"
    return None
