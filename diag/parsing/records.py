"""Multi-line records: which lines continue the record being assembled, and how it grows.

vLLM's repeated-prefix messages, raw Python tracebacks, llama.cpp's classic timing block and
LMDeploy's engine config are each one event made of several lines. The source parser
(`diag.parsing.source`) builds on this: it starts a record with each line of a known format
(`begin`) and asks here whether the next lines belong to it (`continues`, `may_continue`) and
appends them (`append`). A record is bounded in lines and characters. A traceback's code frames
are not part of its text: their locations are kept in `Event.frames` (`diag.parsing.frames`),
the physical lines left out are counted in `Event.gaps`.
"""

from __future__ import annotations

import re

from diag.ingest.reader import Line
from diag.parsing import events as E
from diag.parsing import frames, usercontent
from diag.parsing.events import Event
from diag.parsing.formats import llamacpp

MAX_EVENT_LINES = 400
MAX_EVENT_CHARS = 256 * 1024

_EXC_LINE = re.compile(r"[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Warning|Failure|Fault|Timeout|Iteration)\b")
# The last line of a traceback: a dotted name at column 0, then `: message` or nothing.
_EXC_ANY = re.compile(r"[A-Za-z_][\w.]*(?::(?: |\Z)|\Z)")
_TB_CHAIN = ("During handling", "The above exception", "Traceback")
_TIMING_CONT = re.compile(r"\s*(?:prompt eval time|eval time|total time|draft acceptance)")

_FRAME_START = frozenset(' \tF')  # what a frame line can start with (a cheap test before the regex)

# Traceback state of the pending event.
_TB_NONE, _TB_BODY, _TB_AFTER = 0, 1, 2


class RecordAssembler:
    """The record being assembled from one source's lines (`pending`), and what it has taken so far."""

    __slots__ = ('_chars', '_lines', '_tb', 'cr', 'dropped', 'pending', 'pending_key')

    def __init__(self) -> None:
        self.pending: Event | None = None
        self.pending_key: object = None  # what a line that continues it repeats (its parser's key), or None
        self.cr = False  # its last line ended in \r (vLLM: more lines follow)
        self.dropped = False  # the last line appended to it was a frame left out of its text
        self._tb = _TB_NONE
        self._lines = 0
        self._chars = 0

    def begin(self, ev: Event, key: object, cr: bool) -> None:
        """A new record: `ev`, from a line that continues none (`key`: see `pending_key`; `cr`: its
        line ended in \r)."""
        self.pending, self.pending_key, self.cr = ev, key, cr
        self.dropped = False
        self._lines, self._chars = 1, len(ev.text)
        self._tb = _TB_BODY if ev.text.startswith("Traceback (most recent call last)") else _TB_NONE
        loc = frames.location(ev.text) if ev.text[:1] in _FRAME_START else None
        if loc is not None:
            ev.frames = (loc,)  # a traceback pasted from its middle: its header was cut off
            self._tb = _TB_BODY

    def take(self) -> Event | None:
        """The record, complete (None when none is being assembled): the next line starts anew."""
        ev, self.pending = self.pending, None
        self.pending_key = None
        self._tb = _TB_NONE
        return ev

    def may_continue(self) -> bool:
        """Can the next line still belong to the record being assembled?

        vLLM ends every line of a multi-line record but the last with \r; a traceback, an ERROR
        line (a raw traceback may follow), a line ending in ':', llama.cpp's classic timing
        header and a message whose user text runs to its end (`user_tail`: raw, it may go on on
        lines of its own; `user_rest`: on lines with its own prefix, which a file whose every line
        ends in \r\n cannot mark with vLLM's \r) announce more. Anything else is complete, and is emitted at once instead of waiting
        for the next line.
        """
        pend = self.pending
        if pend is None:
            return False
        if (self.cr or self._tb != _TB_NONE or pend.level in ("ERROR", "CRITICAL") or "user_tail" in pend.fields
                or "user_rest" in pend.fields):
            return True
        t = pend.text
        if self._lines == 1 and pend.kind != E.TIMING and not t.endswith((":", ": ", ":\t")):
            return False  # the common case: a complete one-line record
        last = t[t.rfind("\n") + 1:].rstrip()
        if last.endswith(":"):
            return True
        if pend.kind == E.TIMING and pend.fmt == "llamacpp" and "total time" not in pend.text and (last.endswith("|") or self._lines > 1):
            return True  # the classic 4-line timing record
        return self._lines < 4 and pend.text.split("\n", 1)[0].rstrip().endswith(":")

    def room(self) -> bool:
        return self._lines < MAX_EVENT_LINES and self._chars < MAX_EVENT_CHARS

    def append(self, ev: Event, text: str, line: Line, last: int) -> None:
        skipped = line.lineno - max(ev.end_lineno, ev.lineno) - 1  # blank and `...` lines inside the record
        if skipped > 0:
            self.gap(ev, skipped)
        ev.end_lineno = last
        joined = last - line.lineno  # physical lines beyond the first that a hard wrap made of this one
        self.cr = line.cr
        if line.truncated:
            ev.fields["truncated"] = True
        loc = frames.location(text) if text[:1] in _FRAME_START else None
        if loc is not None:
            # A frame: its location is kept (rules may match where the traceback went); its line and
            # the code under it are left out of the text. A frame with no header before it (a paste
            # that starts mid-traceback) begins the traceback's body all the same.
            ev.frames = frames.add(ev.frames, loc)
            self._tb = _TB_BODY
            self.gap(ev, 1 + joined)
            self.dropped = True
            return
        if text.startswith("Traceback (most recent call last)"):
            self._tb = _TB_BODY
        elif self._tb == _TB_BODY:
            if _is_exception_line(text):
                self._tb = _TB_AFTER
            elif text[:1] in (" ", "\t", "^") or text.startswith("File \""):
                # A frame: file, line and quoted source code. Rules see the traceback's header and its
                # exception lines, never the code it passed through (which quotes error messages), and
                # a deep stack cannot push the exception out of the record's bounds.
                self.gap(ev, 1 + joined)
                self.dropped = True
                return
        self.dropped = False
        if self.room():
            ev.text = f"{ev.text}\n{text}"
            self._lines += 1
            self._chars += len(text) + 1
            if joined:
                self.gap(ev, joined)
        else:
            ev.fields["cut_lines"] = ev.fields.get("cut_lines", 0) + 1
            self.dropped = True
        if ev.kind == E.TIMING and ev.fmt == "llamacpp":
            llamacpp.reclassify(ev)

    def join_padded(self, ev: Event, text: str, line: Line) -> None:
        """The rest of the record's last line, wrapped by the terminal and padded to its width.

        `text` is already scrubbed, but on its own: when the line it continues had user content
        masked (a prompt, a body), the rest is most likely more of it and is left out, not appended.
        """
        ev.end_lineno = line.lineno
        self.cr = line.cr
        if not self.dropped and usercontent.OPEN not in ev.text[ev.text.rfind("\n") + 1:]:
            rest = text.rstrip(" ")
            ev.text += rest
            self._chars += len(rest)
        self.gap(ev, 1)  # a physical line that adds no line to the text

    @staticmethod
    def gap(ev: Event, n: int) -> None:
        """Record `n` physical lines left out of the record's text at its current end."""
        gaps = ev.gaps if ev.gaps is not None else []
        at = len(ev.text)
        if gaps and gaps[-1][0] == at:
            gaps[-1] = (at, gaps[-1][1] + n)
        else:
            gaps.append((at, n))
        ev.gaps = gaps

    def continues(self, text: str) -> bool:
        """Does an unrecognised line belong to the record being assembled?"""
        pend = self.pending
        if pend is None or not self.room():
            return False
        if self._tb == _TB_BODY:
            return True  # inside a traceback everything up to the exception line belongs to it
        if self._tb == _TB_AFTER:
            return (not text or text[0] in " \t" or text.startswith(_TB_CHAIN)
                    or (text and _EXC_LINE.match(text) is not None and self._lines < 50))
        if text.startswith("Traceback (most recent call last)"):
            return pend.severe or pend.text.rstrip().endswith(":") or pend.kind == E.RAW
        last = pend.text.rsplit("\n", 1)[-1]
        if pend.kind == E.TIMING and pend.fmt == "llamacpp":
            return _TIMING_CONT.match(text) is not None
        if last.rstrip().endswith(":") and self._lines < 4 and pend.fmt != "vllm":
            return True  # "turbomind engine config:" + blank + values
        if not last.strip() and self._lines < 4 and pend.text.split("\n", 1)[0].rstrip().endswith(":"):
            return True
        return False


def looks_continued(msg: str) -> bool:
    """A repeated-prefix line whose \\r was lost (docker, journald) is still part of a record
    when it reads like the inside of one."""
    return (not msg or msg[0] in " \t" or msg.startswith(("Traceback (most recent", "File \"", "During handling", "The above exception"))
            or _EXC_LINE.match(msg) is not None)


_KEYWORDS = frozenset(("pass", "break", "continue", "return", "else:", "try:", "finally:", "raise", "yield"))


def _is_exception_line(text: str) -> bool:
    """The exception line that ends a traceback's frames: at column 0 (frames are indented), a
    dotted name alone or followed by `: message` (`KeyError: 'qwen2_5_vl'`, `KeyboardInterrupt`),
    or a line naming an error (a pasted traceback may have lost its indentation)."""
    if not text or text[0] in " \t":
        return False
    if _EXC_LINE.match(text) is not None:
        return True
    return _EXC_ANY.match(text) is not None and text.split(None, 1)[0] not in _KEYWORDS
