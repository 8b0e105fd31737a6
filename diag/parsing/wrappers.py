"""Prefixes that other programs put in front of a server's own line.

Containers multiplex streams and collectors add their own prefix: docker compose
(`vllm-1  | `), `docker logs --timestamps` (RFC 3339 first), `kubectl logs --prefix`
(`[pod/vllm-0/vllm] `), journald (`Nov 22 18:27:00 host unit[pid]: `, the month in the host's
locale; journalctl's `-o short-precise`, `short-iso`, `short-full`, `short-unix` and
`short-monotonic` too), vLLM's and Ray's process tags (`(APIServer pid=1) `, `(WorkerDict pid=7,
ip=10.0.0.2) `) and Ray's de-duplication suffix. They are peeled off, outermost first, before
the format parsers see the line; what they tell (a time, a process) is kept.
"""

from __future__ import annotations

import re
from datetime import datetime

from diag.parsing.clock import MONTH_NAMES, month_number
from diag.parsing.base import Ctx, to_int

COMPOSE = re.compile(r"[A-Za-z0-9][\w.-]*\s+\| ")
DOCKER_TS = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?) ")
# journalctl's `short` (and `short-precise`, with microseconds): `Nov 22 18:27:00[.123456] host unit[pid]: `
JOURNAL = re.compile(r"([^\W\d_]{3}) ([ \d]\d) (\d\d):(\d\d):(\d\d)(?P<frac>\.\d+)? (\S+) ([^\s\[:]+)(?:\[(?P<pid>\d+)\])?: ")
# journalctl -o short-full: `Sun 2026-11-22 18:27:00 UTC host unit[pid]: ` (the zone as the host names it)
JOURNAL_FULL = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?P<frac>\.\d+)? (?P<zone>\S+) \S+ [^\s\[:]+(?:\[(?P<pid>\d+)\])?: ")
# journalctl -o short-unix: `1732299000.123456 host unit[pid]: ` (-o short-monotonic's `[ 1234.567890] ` is a BRACKET_STAMP)
UNIX_STAMP = re.compile(r"(\d{9,11}\.\d+) ")
JOURNAL_ISO_TAIL = re.compile(r"(\S+) ([^\s\[:]+)\[(\d+)\]: ")
PROC = re.compile(r"\(([A-Za-z_][^()]*?) pid=(\d+)(?:, ip=[^)]*)?\) ")
RAY_REPEAT = re.compile(r" \[repeated (\d+)x across cluster\]\Z")
# A time some other program put first: a process manager or log viewer (`2024-05-09 07:00:03 `,
# FastChat's `2024-04-27 10:13:05 | ERROR | stderr | `), dmesg (`[ 1836.276684] `, `[Sun Mar 30
# 08:24:00 2025] `, `--time-format iso` with a comma), CI runners (`[2026-04-22 21:34:20] `).
STAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?:? (?:\| [A-Z]+ +\| [\w.-]+ +\| )?(?!- )")
BRACKET_STAMP = re.compile(r"\[(?: *\d+\.\d+|[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}|\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?)\] ")
# KServe's logging config after its `%Y-%m-%d %H:%M:%S.mmm ` stamp: `[PID ]LOGGER ` (kserve/logging.py). Its
# `kserve.trace` logger writes vLLM's request logger's messages without vLLM's prefix (the vllm parser
# takes them on that logger's word), `uvicorn.access` an access line with the pid after the client.
KSERVE = re.compile(r"(?:(\d+) )?(kserve\.trace|kserve|uvicorn\.access|uvicorn\.error) ")
# torch.distributed's rank tag: `[rank0]: `
RANK = re.compile(r"\[rank\d+\]: ?")
# `kubectl logs --prefix` (several pods or containers at once): `[pod/<pod>/<container>] `.
KUBECTL = re.compile(r"\[pod/[^/\]\s]+/[^\]\s]+\] ")
# A number in brackets before a server's own line: llama-server in router mode (several models, one
# child server each) passes on each child's lines behind the child's port (`[42751] 107.50.424.958 I
# srv …`, after `proxying request to model … on port 42751`); launchers put a worker's pid there
# (`[80746] [rank0]:[E321 …`).
ROUTER_CHILD = re.compile(r"\[\d{1,5}\] ")
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# What is left of vLLM's prefix when a user cut the level and time: `[serving_chat.py:885] msg`.
SRC_ONLY = re.compile(r"\[[\w./-]+\.py:\d+\] ")


def strip(text: str, ctx: Ctx) -> tuple[str, int]:
    """Remove wrappers; set ctx.proc/pid/wrap_ts. Returns the inner text and Ray's repeat count."""
    ctx.proc = ctx.pid = ctx.wrap_ts = None
    c = text[:1]
    if c == " " and ctx.state.get("wrap_indent") and text.startswith(" " * ctx.state["wrap_indent"]):
        # journalctl indents a multi-line message's continuation lines to the message's column
        text = text[ctx.state["wrap_indent"]:]
        c = text[:1]
    if c == "[" and text[-1:] != "]" and ".py:" in text[:80]:
        m = SRC_ONLY.match(text)
        if m:
            text = text[m.end():]
            c = text[:1]
    if c != "(" and c != "[" and not c.isdigit() and text[3:4] != " " and "| " not in text[:48]:
        # the common case: no wrapper at all
        if text.endswith("cluster]"):
            m = RAY_REPEAT.search(text)
            if m:
                return text[: m.start()], to_int(m.group(1)) or 1
        return text, 1
    repeated = 1
    for _ in range(4):  # wrappers nest (compose + timestamps + process tag), never deeply
        c = text[:1]
        if c == "(":
            m = PROC.match(text)
            if m:
                ctx.proc, ctx.pid = m.group(1), to_int(m.group(2))
                text = text[m.end():]
                continue
            break
        if c.isdigit():
            m = DOCKER_TS.match(text)
            if m:
                ctx.wrap_ts = rfc3339(m.group(1))
            elif (m := UNIX_STAMP.match(text)) is not None:
                ctx.wrap_ts = float(m.group(1))
            else:
                m = STAMP.match(text)  # a time we do not take: its zone and format are the writer's
            if m:
                stamp, text = m.group(0), text[m.end():]
                k = KSERVE.match(text) if len(stamp) == 24 and stamp[19] == "." else None
                if k is not None:
                    ctx.proc, ctx.pid = k.group(2), to_int(k.group(1))
                    ctx.wrap_ts = ctx.clock.local(int(stamp[:4]), int(stamp[5:7]), int(stamp[8:10]), int(stamp[11:13]),
                                                  int(stamp[14:16]), int(stamp[17:19]))
                    if ctx.wrap_ts is not None:
                        ctx.wrap_ts += int(stamp[20:23]) / 1000
                    text = text[k.end():]
                    break
                text = _journal_tail(ctx, text)
                continue
            break
        if c == "[":
            m = BRACKET_STAMP.match(text) or RANK.match(text) or ROUTER_CHILD.match(text) or KUBECTL.match(text)
            if m:
                text = text[m.end():]
                if m.re is BRACKET_STAMP:  # journalctl -o short-monotonic: the host and unit follow
                    text = _journal_tail(ctx, text)
                continue
            break
        if text[3:4] == " " and text[:3] in MONTH_NAMES:  # the host's locale names the month
            m = JOURNAL.match(text)
            if m:
                mon, day, hh, mi, ss = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5))
                _journal(ctx, m, ctx.clock.yearless(month_number(mon), day, hh, mi, ss))
                text = text[m.end():]
                continue
            break
        if text[3:4] == " " and text[:3] in _WEEKDAYS:
            m = JOURNAL_FULL.match(text)
            if m:
                y, mo, d, hh, mi, ss = (int(m.group(i)) for i in range(1, 7))
                _journal(ctx, m, ctx.clock.utc(y, mo, d, hh, mi, ss) if m.group("zone") == "UTC" else ctx.clock.local(y, mo, d, hh, mi, ss))
                text = text[m.end():]
                continue
            break
        if "| " in text[:48]:
            m = COMPOSE.match(text)
            if m:
                text = text[m.end():]
                continue
        break
    if text[:1] == "[" and ".py:" in text[:80]:
        m = SRC_ONLY.match(text)
        if m:
            text = text[m.end():]
    if text.endswith("cluster]"):
        m = RAY_REPEAT.search(text)
        if m:
            repeated = to_int(m.group(1)) or 1
            text = text[: m.start()]
    return text, repeated


def _journal(ctx: Ctx, m: re.Match, ts: float | None) -> None:
    """What a journald prefix `m` tells (JOURNAL, JOURNAL_FULL): the time `ts` with its fraction of
    a second, the pid, and its width, by which journalctl indents a message's continuation lines."""
    if ts is not None and m.group("frac"):
        ts += float(m.group("frac"))
    ctx.wrap_ts = ts
    if m.group("pid"):
        ctx.pid = to_int(m.group("pid"))
    ctx.state["wrap_indent"] = m.end()


def _journal_tail(ctx: Ctx, text: str) -> str:
    """`text` after a time journalctl wrote (-o short-iso, short-monotonic): without the host and
    `unit[pid]: ` that follow it, when they do (the pid kept)."""
    j = JOURNAL_ISO_TAIL.match(text)
    if j and not text.startswith(("INFO", "WARN", "ERROR", "DEBUG")):
        ctx.pid = to_int(j.group(3))
        return text[j.end():]
    return text


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?\Z")
_SECONDS: dict[str, int] = {}  # "date T time zone" -> its epoch second (a log's lines share their second)


def rfc3339(s: str) -> float | None:
    """Epoch seconds of a container runtime's time (`docker logs --timestamps`, CRI): RFC 3339 with
    nanoseconds, in UTC (`Z`) or at an offset; without a zone, local time. Microseconds are kept
    (the rest cut), and the value is the one `datetime.timestamp()` gives for that instant
    (`tests/test_container_logs.py` holds it to that); None for a time that is no date.

    The zone is the writer's: a `Z` time read as local time was hours off on a server whose clock
    is not UTC (most of our users'), and its access lines then came hours before the vLLM lines
    around them."""
    m = _RFC3339.match(s)
    if m is None:
        return None
    sec, frac, zone = m.groups()
    us = int(frac[:6].ljust(6, "0")) if frac else 0
    try:
        if zone is None:
            return datetime.fromisoformat(sec).replace(microsecond=us).timestamp()
        key = sec + zone
        base = _SECONDS.get(key)
        if base is None:
            z = "+00:00" if zone == "Z" else zone if ":" in zone else f"{zone[:3]}:{zone[3:]}"
            base = int(datetime.fromisoformat(sec + z).timestamp())
            if len(_SECONDS) >= 4096:
                _SECONDS.clear()
            _SECONDS[key] = base
    except ValueError:  # (a month 13, an hour 25, a digit no datetime reads)
        return None
    return (base * 1_000_000 + us) / 1_000_000  # as timedelta.total_seconds(): exact to the microsecond
