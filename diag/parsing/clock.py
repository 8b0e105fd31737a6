"""Timestamps from logs that were never meant to be compared across files.

vLLM writes `MM-DD HH:MM:SS` (no year, local time); TurboMind `MMDD.HH:MM:SS.us` (no year);
nginx and http.server a day/month/year form; llama.cpp only time since the process started.
A `Clock` belongs to one source: it supplies the year from the file's modification time and
carries a year forward across a December → January roll-over.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_HALF_YEAR = 183 * 86400


# journalctl and syslog write the month with strftime's `%b`, in the host's locale: a German host
# writes `Mai 08 06:59:47`, a Russian one `авг 18 14:15:04`. The three-letter abbreviations of glibc
# locales whose months are not the English ones (de, ru, es, it, pt, nl), lower-cased.
_LOCAL_MONTHS = {
    "mär": 3, "mai": 5, "okt": 10, "dez": 12,  # de (pt: mai, dez)
    "янв": 1, "фев": 2, "мар": 3, "апр": 4, "мая": 5, "май": 5, "июн": 6, "июл": 7, "авг": 8, "сен": 9,
    "окт": 10, "ноя": 11, "дек": 12,  # ru (`мая` in abmon, `май` in ab_alt_mon)
    "ene": 1, "abr": 4, "ago": 8, "dic": 12,  # es (it: ago, dic; pt: abr, ago)
    "gen": 1, "mag": 5, "giu": 6, "lug": 7, "set": 9, "ott": 10,  # it (pt: set)
    "fev": 2, "out": 10,  # pt
    "mrt": 3, "mei": 5,  # nl
}
# The forms a month name takes at the start of a syslog line: as `%b` writes it (capitalised in
# English and German, lower case in the others, which share `feb`, `nov`, … with English).
MONTH_NAMES = frozenset([*_MONTHS, *(m.lower() for m in _MONTHS), *_LOCAL_MONTHS, *(m.title() for m in _LOCAL_MONTHS)])


def month_number(name: str) -> int:
    """1-12 for an English or (see `_LOCAL_MONTHS`) localised month abbreviation; 0: not a month."""
    return _MONTHS.get(name[:3].title()) or _LOCAL_MONTHS.get(name[:3].lower(), 0)


MAX_YEAR = 3000  # a logged year at or past it is garbage, not a time


class Clock:
    """A built package lays it out as a C type (clock.pxd): its fields are struct members and its
    methods C calls, asked once per distinct second of a log."""

    __slots__ = ("ref", "year", "_cache_key", "_cache_val", "_minute", "_minute_base", "_last")

    def __init__(self, mtime: float | None = None):
        self.ref = mtime if mtime is not None else time.time()
        self.year = time.localtime(self.ref).tm_year
        self._cache_key: tuple | None = None
        self._cache_val: float | None = None
        self._minute: tuple | None = None  # (year, month, day, hh, mm) whose seconds are _minute_base + ss
        self._minute_base: float | None = None
        self._last: float | None = None

    def local(self, year: int, month: int, day: int, hh: int, mm: int, ss: int) -> float | None:
        """Epoch seconds of a local wall-clock time, or None if it is not a valid date."""
        key = (year, month, day, hh, mm, ss)
        if key == self._cache_key:
            return self._cache_val
        if not (1 <= month <= 12 and 1 <= day <= 31 and hh < 24 and mm < 60 and ss < 62):
            val = None
        elif 0 <= ss <= 59 and self._minute == key[:5]:
            val = self._minute_base + ss  # type: ignore[operator]
        else:
            val = self._mktime(year, month, day, hh, mm, ss)
            if val is not None and 0 <= ss <= 59:
                # A server that logs a request a second asks for each second of a minute: one
                # mktime per minute, when its seconds are plain offsets from its first (no clock
                # change inside it: its :00 and :59 are 59 s apart)
                base = self._mktime(year, month, day, hh, mm, 0)
                if base is not None and base + ss == val and self._mktime(year, month, day, hh, mm, 59) == base + 59:
                    self._minute, self._minute_base = key[:5], base
        self._cache_key, self._cache_val = key, val
        return val

    @staticmethod
    def _mktime(year: int, month: int, day: int, hh: int, mm: int, ss: int) -> float | None:
        if not 1900 <= year < MAX_YEAR:
            return None  # a date no report can show (iso() of the year 9999 overflows in most zones): unknown
        try:
            return time.mktime((year, month, day, hh, mm, ss, 0, 0, -1))
        except (OverflowError, ValueError):
            return None

    def yearless(self, month: int, day: int, hh: int, mm: int, ss: int) -> float | None:
        """A time without a year: take the file's year, but never land in its future."""
        last = self._last
        if last is not None and 0 <= ss <= 59 and self._minute == (self.year, month, day, hh, mm):
            # a second of the minute `local` saw last, which it found to be plain offsets from its :00:
            # what the code below would compute, unless the year rolls over
            val = self._minute_base + ss
            if val >= last - _HALF_YEAR:
                self._last = val
                return val
        val = self.local(self.year, month, day, hh, mm, ss)
        if val is None:
            return None
        if val > self.ref + 2 * 86400 and self._last is None:
            # Written last year (e.g. a December log read in January).
            self.year -= 1
            val = self.local(self.year, month, day, hh, mm, ss)
        elif self._last is not None and val is not None and val < self._last - _HALF_YEAR:
            self.year += 1  # 12-31 -> 01-01 inside the file
            val = self.local(self.year, month, day, hh, mm, ss)
        if val is not None:
            self._last = val
        return val

    def utc(self, year: int, month: int, day: int, hh: int, mm: int, ss: float, offset_s: int = 0) -> float | None:
        if not 1900 <= year < MAX_YEAR:
            return None
        try:
            return datetime(year, month, day, hh, mm, int(ss), tzinfo=timezone.utc).timestamp() + (ss - int(ss)) - offset_s
        except ValueError:
            return None


_ISO_CACHE: dict[int, tuple[str, str]] = {}
_ISO_TEXT: dict[float, str] = {}


def iso(ts: float | None, utc: bool = False) -> str | None:
    """ISO-8601: local with offset, second precision unless the value has a fraction (for people);
    `utc`: RFC 3339 in UTC with milliseconds and `Z`, as Alertmanager writes it (for machines).

    Local times are cached (a log has many events per second, a report formats hundreds of
    thousands of times): the text per distinct value, the date and time per distinct second. The
    fraction is rounded to microseconds and then cut to milliseconds, as `datetime` does.
    """
    if ts is None:
        return None
    if utc:
        return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    text = _ISO_TEXT.get(ts)
    if text is None:
        if len(_ISO_TEXT) >= 8192:
            _ISO_TEXT.clear()
        text = _ISO_TEXT[ts] = _iso(ts)
    return text


def _iso(ts: float) -> str:
    sec = int(ts)
    us = 0
    if ts != sec:
        us = round((ts - sec) * 1e6)
        if us >= 1000000:
            sec += 1
            us -= 1000000
    parts = _ISO_CACHE.get(sec)
    if parts is None:
        if len(_ISO_CACHE) >= 4096:
            _ISO_CACHE.clear()
        parts = _ISO_CACHE[sec] = _second_parts(sec)
    if ts != int(ts):
        return f"{parts[0]}.{us // 1000:03d}{parts[1]}"
    return parts[0] + parts[1]


def _second_parts(sec: int) -> tuple[str, str]:
    """(date and time, UTC offset) of a local second, from its minute's when that minute is
    uniform (a log that writes a line a second has a new second on nearly every line)."""
    minute = sec // 60
    parts = minute_parts(minute)
    if parts is None:
        text = datetime.fromtimestamp(sec).astimezone().isoformat(timespec="seconds")
        return text[:19], text[19:]
    return f"{parts[0]}{sec - minute * 60:02d}", parts[1]


def minute_parts(minute: int) -> tuple[str, str] | None:
    """("YYYY-MM-DDTHH:MM:", UTC offset) of a local minute (epoch seconds // 60), remembered: a
    second of it is the first part, its two digits, the second (what `iso` writes), or None when
    its seconds cannot be told from it (`_minute_parts`). The trace encoder asks this too."""
    parts = _ISO_MINUTE.get(minute, _UNKNOWN)
    if parts is _UNKNOWN:
        if len(_ISO_MINUTE) >= 4096:
            _ISO_MINUTE.clear()
        parts = _ISO_MINUTE[minute] = _minute_parts(minute * 60)
    return parts


def _minute_parts(start: int) -> tuple[str, str] | None:
    """("YYYY-MM-DDTHH:MM:", offset) of the minute from `start` (a UTC minute), or None when its
    seconds cannot be told from it: the offset changes inside it or is not whole minutes (zones'
    local mean time before 1972), or the time is out of range."""
    try:
        first = datetime.fromtimestamp(start).astimezone()
        last = datetime.fromtimestamp(start + 59).astimezone()
    except (OverflowError, OSError, ValueError):
        return None
    offset = first.utcoffset()
    if offset != last.utcoffset() or offset is None or offset.total_seconds() % 60 or first.second:
        return None
    text = first.isoformat(timespec="seconds")
    return text[:17], text[19:]


_ISO_MINUTE: dict[int, tuple[str, str] | None] = {}
_UNKNOWN = ("", "")


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(text: str) -> float | None:
    """`90s`, `15m`, `2h`, `7d`, `1w`, `1d12h` in seconds; None when `text` is no such duration.
    One reader for every duration a person types (`--since 2h`, `diag silence add --for 1d12h`)."""
    t = text.strip()
    parts = _DURATION_PART.findall(t)
    if not parts or "".join(n + u for n, u in parts) != t.replace(" ", ""):
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def parse_user_time(value: str, now: float | None = None) -> float:
    """`--since`/`--until`: ISO date/time, epoch seconds, or a duration back from now (90s, 15m, 2h, 7d, 1d12h)."""
    v = value.strip()
    now = time.time() if now is None else now
    back = duration_seconds(v)
    if back is not None:
        return now - back
    try:
        return float(v)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cannot read time {value!r}: use ISO 8601 (2026-11-22T18:27:00), epoch seconds or a duration like 15m") from None
    if dt.tzinfo is None:
        return dt.timestamp()  # local time, as the logs write it
    return dt.timestamp()
