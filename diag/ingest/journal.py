"""The daemon following a systemd unit's journal, for a server that logs to journald and to no file.

Why a `journalctl` child and not the journal files: the files are a binary format with its own
rotation, compression and vacuuming, and the only stable ways to read them are libsystemd (a C
library; the package must work without a compiler or a binding) and `journalctl`, which is on every
systemd host. `journalctl -o json --follow --all -u UNIT` gives one JSON object per line with each
entry's `__CURSOR`, the journal's own durable position: committed in the same transaction as the
traces and findings its lines produced (as a file's offset is), a restart goes on with the entry
after it (`--cursor`, checking the first entry read is that one), so nothing is lost or read twice.

Why the lines are rebuilt as `journalctl -o short-iso-precise` prints them: the daemon has one
pipeline, and a user who exported the journal (`journalctl -u vllm -o short-iso-precise > f`) and
ran `diag scan f` must get what the daemon stored. Each entry becomes exactly the line journalctl
would print (`diag.ingest.journalline`: the entry's time in the host's zone with microseconds, its host,
identifier and pid, continuation lines of a multi-line message indented under its first), and
those bytes go through the line splitter, fast path and wrappers that read the exported file, which
take the time and pid from that prefix. tests/test_journal.py holds those lines to journalctl's
own output for the same journal file.

Why no thread: the main loop already waits in `poll` on its wake-up pipe (and inotify); the
children's stdout descriptors are waited on there too (`fds`), and read without blocking, a
bounded amount per turn, like a file. A child that exits (killed, journal error) is restarted after
a backoff from the last entry fed; a missing `journalctl` or a journal the daemon's user may not
read is said in one line (and in `diag status`) while the other sources go on.

Offsets and line numbers here are those of the rebuilt lines: the parser's safe offset (the start
of a record it still assembles) is turned into the cursor of the last entry that ends at or before
it (`JournalSource.state`). A multi-line message whose record starts on one of its continuation
lines (rare: journald splits a service's stdout at newlines) is committed at the entry before it:
a kill -9 then reads that entry's lines again. No MESSAGE (journalctl prints nothing either) or an
over-large or malformed entry feeds no line and is counted (`skipped`); its cursor still moves on.

Which entries: without a `directory`, this machine's (`unit_args`). `--merge` (to follow across
boots) also opens the journals of other machines kept on this host (/var/log/journal/remote/, where
systemd-journal-remote writes on a log-collecting host), and a unit of the same name there is not
ours: the match `_MACHINE_ID=<this machine's id>` (journald stamps every entry with it), which
journalctl ANDs with `-u`'s matches (tests/test_journal_machine.py, on real files), leaves those out.
With a `directory` the user chose the files, often another machine's: all their entries of the unit.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections import deque
from typing import Any

from diag.daemon.config import JournalSpec
from diag.ingest.journalline import ShortLines, message_bytes, parse_entry
from diag.ingest.reader import LineSplitter
from diag.parsing.source import SourceParser

log = logging.getLogger("diag")
READ_BUDGET = 1 << 20  # JSON bytes taken from one child per turn; more waiting: `behind`
# One read's size: a pipe holds 64 KiB (Linux's default), and asking for more allocates a buffer that
# large for a few new lines at every turn (see diag.ingest.filereader.FOLLOW_READ)
PIPE_READ = 64 << 10
STDERR_KEPT = 4096  # the end of a child's stderr kept for the message when it exits
BACKOFF_MIN, BACKOFF_MAX = 1.0, 30.0  # seconds before a child that exited is started again
MACHINE_ID = "/etc/machine-id"  # this machine's id (machine-id(5)), the one journald writes as each entry's _MACHINE_ID
FIRST_ENTRY_WAIT = 10.0  # seconds `journalctl -n 1` may take at a first start (the unit's newest entry)
# Fields journalctl is asked for: what the short format prints (its cursor and times always come).
OUTPUT_FIELDS = "MESSAGE,_PID,SYSLOG_PID,SYSLOG_IDENTIFIER,_COMM,_HOSTNAME"
# What journalctl says on stderr when the journal is not the user's to read (it runs on, showing nothing)
NO_PERMISSION = ("insufficient permissions", "Permission denied", "No journal files were", "not seeing messages from other users")


class JournalSource:
    """One unit's journal: the journalctl child reading it, and the splitter and parser its rebuilt
    lines go to (the daemon's `_consume` takes it as it takes a file's reader: `parser`,
    `splitter`, `fast`, `consumed`)."""

    def __init__(self, spec: JournalSpec, stored: dict[str, Any] | None, max_line: int, from_beginning: bool,
                 journalctl: str = "journalctl"):
        self.spec = spec
        self.name = spec.name
        self.journalctl = journalctl
        st = stored if isinstance(stored, dict) else {}
        # (a unit seen before with no entries yet: whatever it has now came since, read from its oldest)
        self.from_beginning = from_beginning or st.get("from_oldest") is True
        offset, lineno = _int(st.get("offset")), _int(st.get("lineno"))
        cursor = st.get("cursor") if isinstance(st.get("cursor"), str) else None
        self.parser = SourceParser(self.name, time.time(), spec.format, stamp_now=True)
        self.parser.start_at(offset, lineno)
        self.splitter = LineSplitter(max_line, offset, lineno)
        self.fast: Any = None  # the daemon's fast path state for these bytes (`Daemon._consume`)
        self.consumed = _int(st.get("lines_read"))  # lines fed to the parser
        self.entries = _int(st.get("entries"))  # entries read (with or without a line)
        self.skipped = _int(st.get("skipped"))  # entries that fed no line: no MESSAGE, malformed, over-large
        self.last_line_time = st.get("last_line_time") if isinstance(st.get("last_line_time"), (int, float)) else None
        self.max_json = 8 * max_line + (64 << 10)  # a MESSAGE of max_line bytes as JSON numbers, and its fields
        self.offset, self.lineno = offset, lineno  # where the next rebuilt line starts (the splitter's, ahead of it)
        self.committed = (cursor, offset, lineno)  # the last entry boundary at or before the parser's safe offset
        self.fed_cursor = cursor  # the last entry fed: a restarted child goes on after it
        self.marks: deque[tuple[int, int, str]] = deque()  # (end offset, end line number, cursor) of entries fed
        self.proc: subprocess.Popen | None = None
        self.expect: str | None = None  # the cursor the child's first entry must have (`--cursor`): dropped
        self.behind = False
        self.last_data = time.monotonic()
        self.error: str | None = None  # what `diag status` shows (and alerts on: diag-log-unreadable) until entries come again
        self._said_last: str | None = None  # the problem last logged: a retry that meets it again says nothing
        self._buf = bytearray()
        self._skipping = False  # inside an entry longer than `max_json`
        self._stderr = b""
        self._restart_at = 0.0
        self._backoff = BACKOFF_MIN
        self._said: set[str] = set()  # one-off warnings given
        self.started = False  # a child was started since the daemon last looked (`Journals.read`)
        self._stopping = False  # the daemon is stopping: a child that ends now (the same SIGTERM, a terminal's ^C) is no news
        self._lines = ShortLines()
        self.merge = True  # journalctl takes --merge with --follow (not systemd 250-253 as released: `_exited`)

    # -- the child ------------------------------------------------------------------------
    def argv(self, cursor: str | None, newest: bool = False) -> list[str]:
        """journalctl's arguments: following from `cursor` (inclusive, checked by `expect`), from the
        oldest entry, or (`newest`) the unit's newest entry only."""
        # --merge: since systemd 250 --follow alone implies --boot, the journal's latest boot only (entries
        # after a cursor in an earlier boot skipped, a machine that reboots no longer followed);
        # --merge lifts that (systemd 254, and 252 as Debian 12 and RHEL 9 ship it)
        a = [self.journalctl, "-o", "json", "--no-pager", "--all", *(["--merge"] if self.merge else []), f"--output-fields={OUTPUT_FIELDS}",
             *unit_args(self.spec)]
        if newest:
            return a + ["--lines=1"]
        a += ["--follow", "--no-tail"]  # (--follow alone starts at the newest 10 entries, even from a cursor)
        if cursor:
            a.append(f"--cursor={cursor}")
        return a

    def start(self) -> None:
        """Start the child (when its backoff is over): from the last entry fed, else per
        `from_beginning` (from the oldest entry, or after the unit's newest one: only what comes now)."""
        cursor = self.fed_cursor
        if cursor is None and not self.from_beginning:
            ok, cursor, none = self._newest()
            if not ok:
                return  # said; tried again after the backoff
            if none:
                self.from_beginning = True  # no entries yet: all that come are new, also after a restart (`state`)
            elif not self.marks:
                # committed at once, as a new file's size is: a restart before any entry comes goes on from here
                self.fed_cursor = cursor
                self.committed = (cursor, self.offset, self.lineno)
        try:
            self.proc = subprocess.Popen(self.argv(cursor), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         close_fds=True)
        except OSError as exc:
            self._failed(f"cannot run {self.journalctl}: {exc.strerror or exc} (is systemd's journalctl installed and on PATH?)")
            return
        for f in (self.proc.stdout, self.proc.stderr):
            os.set_blocking(f.fileno(), False)  # type: ignore[union-attr]
        self.expect = cursor  # `--cursor` starts at the entry read last: dropped, unless it is gone
        self._buf.clear()
        self._skipping = False
        self._stderr = b""
        self.started = True
        if self.error is not None and self.error.startswith("journalctl ended"):
            self.error = None  # it runs again (a journal it may not read is said on its stderr: `_read_stderr`)
        # (said again only once it has worked: a child that cannot start is said once, not at each retry)
        log.log(logging.INFO if self._said_last is None else logging.DEBUG, "%s: following the journal%s", self.name,
                f" after entry {_short(cursor)}" if cursor else " from its oldest entry")

    def _newest(self) -> tuple[bool, str | None, bool]:
        """(whether journalctl answered, the cursor of the unit's newest entry: None when it has none yet,
        whether the unit has none for certain: nothing printed, no word of a journal it may not read)."""
        try:
            r = subprocess.run(self.argv(None, newest=True), stdin=subprocess.DEVNULL, capture_output=True, timeout=FIRST_ENTRY_WAIT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._failed(f"cannot run {self.journalctl}: {getattr(exc, 'strerror', None) or exc} "
                         "(is systemd's journalctl installed and on PATH?)")
            return False, None, False
        if r.returncode != 0:
            if not self._permission(r.stderr):
                self._say(f"journalctl failed (exit status {r.returncode}): {last_line(r.stderr)}")
            self._failed(self.error or "")
            return False, None, False
        denied = self._permission(r.stderr)
        for line in r.stdout.splitlines()[-1:]:
            try:
                c = json.loads(line).get("__CURSOR")
            except (ValueError, AttributeError, RecursionError):  # (not an entry: a line nested past the recursion limit too)
                return True, None, False
            return True, c if isinstance(c, str) else None, False
        return True, None, not denied

    def _failed(self, msg: str) -> None:
        self._say(msg)
        self._restart_at = time.monotonic() + self._backoff
        self._backoff = min(BACKOFF_MAX, self._backoff * 2)

    def _say(self, msg: str) -> None:
        """One line per distinct problem (never a message's text: journalctl's own words only)."""
        if msg != self._said_last:
            log.error("%s: %s", self.name, msg)
            self._said_last = msg
        self.error = msg

    def _permission(self, stderr: bytes) -> bool:
        """Whether journalctl said the journal is not this user's to read (then said, with what to do)."""
        if not denied(stderr):
            return False
        self._say(f"journalctl cannot read the journal ({last_line(stderr)}): the daemon's user needs to be in the "
                  "systemd-journal group, or root")
        return True

    def fileno(self) -> int | None:
        """The child's stdout, for the main loop's wait (None: no child now)."""
        return self.proc.stdout.fileno() if self.proc is not None and self.proc.stdout is not None else None

    def wind_down(self) -> None:
        """The daemon stops: what the child wrote is still read, but it is not started again, nor its end reported."""
        self._stopping = True
        self._restart_at = float("inf")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()

    # -- reading --------------------------------------------------------------------------
    def read(self) -> bytes:
        """The lines of the entries that came since the last call, rebuilt (bytes to feed); starts or
        restarts the child when it is due."""
        if self.proc is None:
            if time.monotonic() >= self._restart_at:
                self.start()
            return b""
        self._read_stderr()
        out = bytearray()
        taken, eof = 0, False
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while taken < READ_BUDGET:
            try:
                data = os.read(fd, min(PIPE_READ, READ_BUDGET - taken))
            except BlockingIOError:
                break
            except OSError:
                eof = True
                break
            if not data:
                eof = True
                break
            taken += len(data)
            self._take(data, out)
        self.behind = taken >= READ_BUDGET
        if taken:
            self.last_data = time.monotonic()
        if eof:
            self._exited()
        return bytes(out)

    def _take(self, data: bytes, out: bytearray) -> None:
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                if not self._skipping:
                    self._buf += data[start:]
                    if len(self._buf) > self.max_json:
                        self._buf.clear()
                        self._skipping = True
                return
            if self._skipping:
                self._skipping = False
                self._skip(f"an entry longer than {self.max_json >> 20} MiB of JSON was skipped")
            else:
                self._buf += data[start:nl]
                self._entry(bytes(self._buf), out)
                self._buf.clear()
            start = nl + 1

    def _skip(self, why: str) -> None:
        self.entries += 1
        self.skipped += 1
        if why not in self._said:
            self._said.add(why)
            log.warning("%s: %s (counted in diag status; said once)", self.name, why)

    def _entry(self, raw: bytes, out: bytearray) -> None:
        parsed = parse_entry(raw)
        cursor = parsed[0].get("__CURSOR") if parsed is not None else None
        if parsed is None or not isinstance(cursor, str):
            self._skip("an entry that is not a JSON object with a cursor and a time was skipped")
            return
        e, us = parsed
        if self.expect is not None:
            expected, self.expect = self.expect, None
            if cursor == expected:
                return  # the last entry fed (`--cursor` starts at it)
            self._say(f"the journal no longer has the last entry read ({_short(expected)}: vacuumed or rotated away); "
                      "reading on from the next one there is, entries in between may be missing")
        self.entries += 1
        msg = message_bytes(e.get("MESSAGE"))
        if msg is None:
            if "MESSAGE" in e:
                self._skip("an entry whose MESSAGE is not text or bytes (null: too large) was skipped")
            else:
                self.skipped += 1  # journalctl prints no line for it either
        else:
            ts = us / 1_000_000
            line = self._lines.build(us, e, msg)
            out += line
            self.offset += len(line)
            self.lineno += line.count(b"\n")
            self.last_line_time = ts
        self.fed_cursor = cursor
        self.marks.append((self.offset, self.lineno, cursor))
        self._backoff = BACKOFF_MIN  # reading well: a later exit is retried soon
        if self._said_last is not None and msg is not None:
            self.error = self._said_last = None  # entries come again (what went wrong was said in the daemon's log)

    def _read_stderr(self) -> None:
        err = self.proc.stderr if self.proc is not None else None
        if err is None:
            return
        try:
            data = os.read(err.fileno(), 65536)
        except OSError:
            return
        if data:
            self._stderr = (self._stderr + data)[-STDERR_KEPT:]
            self._permission(data)

    def _exited(self) -> None:
        """The child's stdout ended: say why (its stderr's last line) and start again after the backoff."""
        proc = self.proc
        assert proc is not None
        try:
            status = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait()
        self._read_stderr()
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
        self.proc = None
        self._buf.clear()
        self._skipping = False
        if self._stopping:
            return
        last = last_line(self._stderr)
        how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        if "with --merge is not supported" in last and self.merge:
            self.merge = False  # (systemd 250-253: --follow implies --boot, which refuses --merge)
            log.warning("%s: this journalctl follows the latest boot only (systemd 250-253): entries of an earlier boot after "
                        "the last one read are not read", self.name)
            self._restart_at = time.monotonic()
            return
        if "seek to cursor" in last and self.fed_cursor is not None:
            self._say(f"journalctl cannot find the last entry read ({last}); reading from the oldest entry, lines may be "
                      "missing or read twice")
            self.fed_cursor = None
            self.from_beginning = True
            self._restart_at = time.monotonic()
            return
        if not self._permission(self._stderr):
            self._say(f"journalctl ended ({how}{': ' + last if last else ''}); started again after a backoff, from the last entry read")
        self._failed(self.error or "")

    # -- committing -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What the store keeps (in the same transaction as the traces and findings): the cursor of
        the last entry every line of which the parser has turned into events, and its line's place."""
        safe, _ = self.parser.safe_offset
        marks = self.marks
        while marks and marks[0][0] <= safe:
            off, ln, cur = marks.popleft()
            self.committed = (cur, off, ln)
        cursor, offset, lineno = self.committed
        held = self.lineno - lineno  # lines fed after the committed entry: read again after a crash
        return {"unit": self.spec.unit, "cursor": cursor, "offset": offset, "lineno": lineno, "lines_read": self.consumed - held,
                "entries": self.entries, "skipped": self.skipped, "format": self.parser.detected,
                "last_line_time": self.last_line_time, "directory": self.spec.directory, "from_oldest": self.from_beginning}


def unit_args(spec: JournalSpec) -> list[str]:
    """journalctl's arguments for what of the journal is the unit's (the daemon's follow and its first
    entry, the doctor's `read_recent`): its files with a `directory`, all their entries of the unit;
    else the system's journal, this machine's entries of the unit only (see the module doc). Without
    a machine id to read (a container without /etc/machine-id), the unit's entries of every journal
    journalctl opens, as before there was this match; said once, at debug level only."""
    if spec.directory:
        return ["-u", spec.unit, f"--directory={spec.directory}"]
    machine = this_machine()
    return ["-u", spec.unit, *([f"_MACHINE_ID={machine}"] if machine else [])]


_no_machine_said = False


def this_machine() -> str | None:
    """This machine's id as journald writes it (32 lowercase hex digits), or None when /etc/machine-id
    cannot be read or holds none (empty, `uninitialized`: an image before its first boot)."""
    global _no_machine_said
    try:
        with open(MACHINE_ID, "rb") as f:
            text = f.read(64).decode("ascii", "replace").strip().lower()
    except OSError as exc:
        text, why = "", exc.strerror or str(exc)
    else:
        why = "no machine id in it"
    if len(text) == 32 and all(c in "0123456789abcdef" for c in text) and text.strip("0"):
        return text
    if not _no_machine_said:
        _no_machine_said = True
        log.debug("%s: %s; a unit's journal is read from every journal journalctl opens (other machines' kept here too)",
                  MACHINE_ID, why)
    return None


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def denied(stderr: bytes) -> bool:
    """Did journalctl say (on stderr) that the journal is not this user's to read?"""
    text = stderr.decode("utf-8", "replace")
    return any(s in text for s in NO_PERMISSION)


def last_line(data: bytes) -> str:
    """The last non-empty line journalctl wrote to stderr, bounded (its own words, no entry's text)."""
    for line in reversed(data.decode("utf-8", "replace").splitlines()):
        if line.strip():
            return line.strip()[:300]
    return ""


def _short(cursor: str | None) -> str:
    """A cursor in a message: its sequence number and time (`i=…;t=…`), not the whole string."""
    if not cursor:
        return "none"
    parts = dict(p.split("=", 1) for p in cursor.split(";") if "=" in p)
    return ";".join(f"{k}={parts[k]}" for k in ("i", "t") if k in parts) or cursor[:80]
