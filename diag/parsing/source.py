"""Lines → events for one source: wrappers, terminal wraps, format detection, multi-line records.

Formats are detected per line with the most recently successful parser tried first, so a file
written by one server costs one regex per line, and a container log that multiplexes vLLM,
uvicorn and a proxy still gets every line parsed by the right parser. A line a terminal wrapped
is joined again first. Multi-line records (vLLM's repeated-prefix messages, raw Python
tracebacks, llama.cpp's classic timing block, LMDeploy's engine config) are joined into one
event by the record assembly this parser builds on (`diag.parsing.records`).
"""

from __future__ import annotations

import re
import time
from types import ModuleType

from diag.parsing import events as E
from diag.parsing import usercontent
from diag.parsing.clock import Clock
from diag.parsing.events import Event
from diag.parsing import paste, wrappers
from diag.parsing.formats import llamacpp, lmdeploy, nginx, proxy, uvicorn, vllm
from diag.parsing.base import Ctx
from diag.parsing.records import RecordAssembler, looks_continued
from diag.ingest.reader import Line

PARSERS: dict[str, ModuleType] = {m.NAME: m for m in (vllm, llamacpp, lmdeploy, uvicorn, nginx, proxy)}
FORMATS = tuple(PARSERS)

_GENERIC_LEVEL = re.compile(r"(?:Fatal Python error|Traceback|Segmentation fault|Killed|Aborted)")


class SourceParser(RecordAssembler):
    """Stateful parser of one source (a file, stdin, a followed log)."""

    __slots__ = ('_held', '_last_text', '_pending_lineno', '_pending_start', '_prev_end', '_prev_lineno', '_scratch', '_unwrap', 'counts',
                 'ctx', 'forced', 'last_ts', 'order', 'path', 'stamp_now', 'user_chars', 'user_lines')

    def __init__(self, path: str, mtime: float | None = None, fmt: str | None = None, stamp_now: bool = False):
        if fmt is not None and fmt not in PARSERS:
            raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
        super().__init__()
        self.path = path
        self.ctx = Ctx(path, Clock(mtime))
        self.order: list[ModuleType] = list(PARSERS.values())
        if fmt:
            self.order.remove(PARSERS[fmt])
            self.order.insert(0, PARSERS[fmt])
        self.forced = fmt
        self.counts: dict[str, int] = {}
        self.stamp_now = stamp_now
        self.last_ts: float | None = None
        self._prev_end = 0  # byte offset just past the last line fed
        self._prev_lineno = 0
        self._pending_start = 0  # where the record being assembled began (for safe read offsets)
        self._pending_lineno = 0
        self.user_lines = 0  # lines that were user content as a whole (a llama-server -v prompt dump), only counted
        self.user_chars = 0
        # A line as wide as the terminal, held until the next line says whether it was wrapped:
        # (first physical line, joined text, segments, last line number, last `Line`).
        self._unwrap = paste.Unwrap()
        self._held: tuple[Line, str, int, int, Line] | None = None
        self._last_text: str | bytes = ""  # the previous physical line, paste marks off (to learn wrap widths)
        self._scratch = Ctx(path, Clock(mtime))  # for prefix checks that must not touch self.ctx

    def start_at(self, offset: int, lineno: int) -> None:
        """A follower resuming a file: byte offset and line number of the first line it will feed."""
        self._prev_end, self._prev_lineno = offset, lineno

    @property
    def safe_offset(self) -> tuple[int, int]:
        """(byte offset, line number) up to which every line has been turned into events.

        A record still being assembled is not applied yet, so a restart must read its lines
        again: the daemon commits this position, not the end of what it has read.
        """
        if self.pending is not None:
            return self._pending_start, self._pending_lineno
        return self._prev_end, self._prev_lineno

    @property
    def detected(self) -> str:
        """The format that wrote most of this source (uvicorn only if nothing else did)."""
        if self.forced:
            return self.forced
        for fmt, _n in sorted(self.counts.items(), key=lambda kv: -kv[1]):
            if fmt != "uvicorn":
                return fmt
        return "uvicorn" if self.counts else "unknown"

    def feed(self, line: Line) -> list[Event]:
        text, mark = paste.clean(line.text)
        held = self._held
        if held is not None:
            first, joined, segments, _last, last_line = held
            if mark == paste.LOG and self._wrapped_onto(first, last_line, text):
                joined += text
                segments += 1
                if (self._unwrap.full(text) and not line.truncated and segments < paste.MAX_SEGMENTS
                        and len(joined) < paste.MAX_CHARS):
                    self._held = (first, joined, segments, line.lineno, line)
                    return []  # the terminal wrapped this segment too
                self._held = None
                joined = joined.rstrip(" ")  # the terminal's padding after the last piece
                whole = Line(first.lineno, joined, line.cr, first.truncated or line.truncated, line.end_offset)
                return self._feed_one(whole, joined, mark, line.lineno)
            out = self._release()
            out.extend(self.feed(line))
            return out
        if len(text) in self._unwrap.widths and mark == paste.LOG and not line.truncated:
            self._held = (line, text, 1, line.lineno, line)
            return []  # it may go on in the next physical line
        return self._feed_one(line, text, mark, line.lineno)

    def _release(self) -> list[Event]:
        """The held line was not wrapped after all (or input ended): parse it as it is."""
        held, self._held = self._held, None
        if held is None:
            return []
        first, joined, _segments, last, last_line = held
        if last == first.lineno:
            return self._feed_one(first, joined, paste.LOG, last)
        return self._feed_one(Line(first.lineno, joined, last_line.cr, first.truncated, last_line.end_offset), joined, paste.LOG, last)

    def _wrapped_onto(self, first: Line, segment: Line, text: str) -> bool:
        """Is this physical line the rest of the held one (from `first` to `segment`)?
        Only if its shape says so and it starts no record of its own: no wrapper or server prefix."""
        if not self._unwrap.joins(paste.clean(first.text)[0], paste.clean(segment.text)[0], text):
            return False
        scratch = self._scratch
        inner, _ = wrappers.strip(text, scratch)
        if inner != text:
            return False
        return all(mod.parse(text, scratch) is None for mod in self.order)

    def _feed_one(self, line: Line, text: str, mark: int, last: int) -> list[Event]:
        """One logical line (physical, or joined from a hard wrap ending at line `last`)."""
        start, start_lineno = self._prev_end, self._prev_lineno
        self._prev_end, self._prev_lineno = line.end_offset, last
        ctx = self.ctx
        prev_text, self._last_text = self._last_text, text
        if prev_text.__class__ is bytes:  # a line the fast path took (an ASCII prefix, the rest as it decoded)
            prev_text = prev_text.decode("utf-8", "replace")
        if mark != paste.LOG:
            if mark == paste.PROMPT:
                return self.flush()  # what the user typed ends the record before it and is no log text
            return []  # an elided stretch (`...`): the record around it goes on
        bare = text
        text, repeated = wrappers.strip(text, ctx)
        unwrapped = text is bare  # no wrapper prefix of any kind (to learn wrap widths)
        asked = usercontent.model_asked(text)  # a model's name a client asked for: a field (scrub masks it)
        text = usercontent.scrub(text)  # URLs, data URIs, query strings and bodies: never past this point
        parsed = None
        st = ctx.state
        if st.get("user_dump"):
            # Inside a prompt dump (llama-server -v prints prompts on lines of their own): only a line
            # of the server's own format ends it; anything else is the user's text, whatever it looks like.
            st["user_dump"] = False
            parsed = llamacpp.parse(text, ctx)
            if parsed is None:
                st["user_dump"] = True
                self.user_lines += 1
                self.user_chars += len(text)
                self.cr = line.cr
                return []
        else:
            order = self.order
            for i, mod in enumerate(order):
                parsed = mod.parse(text, ctx)
                if parsed is not None:
                    if i:
                        order.insert(0, order.pop(i))
                    break
        out: list[Event] = []
        pend = self.pending
        if parsed is None:
            if pend is not None and "user_tail" in pend.fields:
                # The rest of a message whose user text runs to its end (a model's output its parser
                # logged raw): the user's, whatever it looks like, up to the server's next prefixed line.
                self._skip_user_line(pend, len(text), line, last)
                return out if self.may_continue() else self.flush()
            if unwrapped and last == line.lineno:
                if (pend is not None and pend.end_lineno == line.lineno - 1 and self.room()
                        and self._unwrap.padded(prev_text, text)):
                    self.join_padded(pend, text, line)
                    _asked(pend, asked)
                    return out if self.may_continue() else self.flush()
                self._unwrap.observe(prev_text, text)  # no prefix of any kind: was the line before wrapped?
            if pend is not None and self.continues(text):
                self.append(pend, text, line, last)
                _asked(pend, asked)
                return out if self.may_continue() else self.flush()
            if not text.strip():
                self.cr = line.cr
                return out  # blank lines outside a record carry nothing
            # An unprefixed line is in no format: which format wrote most lines so far must not decide
            # which rules it meets (the same traceback would be found or missed by where it sits).
            ev = Event(self.path, line.lineno, self.forced or "unknown", E.RAW, _guess_level(text), None, text, ctx.proc, ctx.pid)
            key = None
        else:
            ev, key = parsed
            if (pend is not None and key is not None and key == self.pending_key
                    and (self.cr or "user_rest" in pend.fields or looks_continued(ev.text)) and self.room()):
                if "user_chars" in pend.fields:
                    # The rest of a message its parser found user text in (a raw newline in a client's
                    # request id, in a JSON body it logs as sent): the user's too, whatever it looks like.
                    self._skip_user_line(pend, len(text), line, last)
                else:
                    self.append(pend, ev.text, line, last)
                    _asked(pend, asked)
                return out if self.may_continue() else self.flush()
            ev.lineno = line.lineno
            counts = self.counts
            counts[ev.fmt] = counts.get(ev.fmt, 0) + 1
        _asked(ev, asked)
        if ctx.wrap_ts is not None and ev.ts is None:
            ev.ts = ctx.wrap_ts
        self._date(ev, self._stamped(ev.ts))
        if line.truncated:
            ev.fields["truncated"] = True
        ev.repeated = repeated
        ev.end_lineno = last
        if last > line.lineno:
            self.gap(ev, last - line.lineno)  # one line of text from several physical lines
        if pend is not None:
            out.append(pend)
        self.begin(ev, key, line.cr)
        self._pending_start, self._pending_lineno = start, start_lineno
        if not self.may_continue():
            out.extend(self.flush())  # nothing can follow it: hand it over now (a follower's latency)
        return out

    def between_records(self) -> bool:
        """Would the next complete line of a known format be parsed on its own? No record is being
        assembled that could take it. `diag.ingest.fastpath` builds events itself only while this holds:
        any state that changes how `feed` reads a line belongs in this test (a line held because a
        terminal may have wrapped it; inside a llama-server prompt dump every line is user text).
        `holds(n)`: a line of `n` characters would be held itself, as a possible wrap."""
        return self.pending is None and self._held is None and not self.ctx.state.get("user_dump")

    @staticmethod
    def _date(ev: Event, ts: float | None) -> None:
        """An untimed event takes the time `_stamped` gave its line."""
        if ev.ts is None:
            ev.ts = ts
            ev.ts_inferred = ts is not None

    def _stamped(self, ts: float | None) -> float | None:
        """A line's time: its own, kept for the untimed lines after it (uvicorn, llama.cpp), or for
        an untimed line the one before it; a live follower with nothing better stamps it on arrival.
        One place for `feed` and the fast path."""
        if ts is None:
            return self.last_ts if self.last_ts is not None else (time.time() if self.stamp_now else None)
        self.last_ts = ts
        return ts

    def holds(self, n: int) -> bool:
        return n in self._unwrap.widths

    def took(self, ev: Event, end_offset: int, raw: bytes) -> None:
        """`diag.ingest.fastpath` turned one complete line into `ev` by itself: the bookkeeping `feed`
        does for such a line (position, format counts and order, time of untimed lines).

        Only for a line `feed` would have parsed into the same event and handed over at once:
        `between_records`, and no parser tried before `ev`'s own one could have taken the line.
        """
        self._date(ev, self.took_line(ev.fmt, ev.lineno, ev.proc, ev.pid, ev.ts, end_offset, raw))
        ev.end_lineno = ev.lineno

    def took_line(self, fmt: str, lineno: int, proc: str | None, pid: int | None, ts: float | None, end_offset: int,
                  raw: bytes) -> float | None:
        """`took` for a line the fast path applied without an event (`TraceAssembler.apply_*`):
        returns the line's time, its own or, for an untimed line, the one `feed` would give it."""
        self._prev_end, self._prev_lineno = end_offset, lineno
        self._last_text = raw  # the physical line, decoded only if a wrap learner looks at it (`_feed_one`)
        mod = PARSERS[fmt]
        order = self.order
        if order[0] is not mod:
            if order[1] is mod:  # two formats taking turns (vLLM and its access lines): a swap
                order[1] = order[0]
                order[0] = mod
            else:
                order.remove(mod)
                order.insert(0, mod)
        counts = self.counts
        counts[fmt] = counts.get(fmt, 0) + 1
        ctx = self.ctx
        ctx.proc, ctx.pid, ctx.wrap_ts = proc, pid, None
        self.cr = False
        self.dropped = False
        return self._stamped(ts)

    def flush(self) -> list[Event]:
        """Hand over the record still being assembled (EOF, or the follower went idle)."""
        out = self._release() if self._held is not None else []
        ev = self.take()
        if ev is not None:
            out.append(ev)
        return out

    @property
    def has_pending(self) -> bool:
        return self.pending is not None or self._held is not None

    def _skip_user_line(self, ev: Event, n: int, line: Line, last: int) -> None:
        """A continuation line of user text: counted (its `n` characters), left out of the record's text."""
        ev.end_lineno = last
        self.cr = line.cr
        self.user_lines += 1
        self.user_chars += n
        usercontent.count(ev.fields, n)
        self.gap(ev, 1 + last - line.lineno)


def _guess_level(text: str) -> str | None:
    if _GENERIC_LEVEL.match(text):
        return "ERROR"
    return None


def parse_text(text: str, fmt: str | None = None, path: str = "<text>") -> list[Event]:
    """All events of an in-memory text (rule examples, tests)."""
    from diag.ingest.reader import iter_text_lines

    sp = SourceParser(path, fmt=fmt)
    out: list[Event] = []
    for line in iter_text_lines(text):
        out.extend(sp.feed(line))
    out.extend(sp.flush())
    return out


def _asked(ev: Event, asked: tuple[str | None, int] | None) -> None:
    """The model a line's `The model `NAME` does not exist` names (`usercontent.model_asked`), onto
    the event its text went to: the name when it is a model's (the `unknown-model` rule reports it,
    `from_event`), and its characters counted as user text, which the text holds a placeholder for."""
    if asked is None:
        return
    name, n = asked
    f = ev.fields
    if name is not None and "model_requested" not in f:
        f["model_requested"] = usercontent.clean(name)
    usercontent.count(f, n)
