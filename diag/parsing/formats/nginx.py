"""nginx `combined` access lines and error-log lines (upstream refused, timed out, closed)."""

from __future__ import annotations

import re

from diag.parsing import events as E
from diag.parsing.clock import month_number
from diag.parsing.events import Event
from diag.parsing.base import Ctx, Parsed, to_int
from diag.parsing.formats.uvicorn import access_fields

NAME = "nginx"

ACCESS = re.compile(
    r'(\S+) - (\S+) \[(\d\d)/(\w{3})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\] "([^"]*)" (\d{3}) (\d+|-)(?: "([^"]*)" "([^"]*)")?(.*)\Z'
)
ERROR = re.compile(r"(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d) \[(\w+)\] (\d+)#(\d+): (?:\*(\d+) )?(.*)\Z", re.S)
# The same line as users often paste it: from the level on, the date cut off (no time then).
ERROR_UNDATED = re.compile(r"\[(emerg|alert|crit|error|warn|notice|info|debug)\] (\d+)#(\d+): (?:\*(\d+) )?(.*)\Z", re.S)
_LEVELS = {"emerg": "CRITICAL", "alert": "CRITICAL", "crit": "CRITICAL", "error": "ERROR", "warn": "WARNING",
           "notice": "INFO", "info": "INFO", "debug": "DEBUG"}
_CTX = re.compile(r', client: ([^,]+), server: [^,]*(?:, request: "([A-Z]+) (\S+) [^"]*")?(?:, upstream: "([^"]*)")?')


def _error(ctx: Ctx, ts: float | None, lvl: str, pid: str, cid: str | None, msg: str) -> Event:
    ev = Event(ctx.path, 0, NAME, E.LOG, _LEVELS.get(lvl, "INFO"), ts, msg, "nginx", to_int(pid))
    cm = _CTX.search(msg)
    if cm:
        ev.fields.update(client=cm.group(1), method=cm.group(2), path=cm.group(3), upstream=cm.group(4))
    if cid:
        ev.fields["connection"] = to_int(cid)
    return ev


def parse(text: str, ctx: Ctx) -> Parsed | None:
    c = text[:1]
    if c.isdigit() and text[4:5] == "/":
        m = ERROR.match(text)
        if m:
            y, mo, d, hh, mi, ss, lvl, pid, _tid, cid, msg = m.groups()
            ts = ctx.clock.local(int(y), int(mo), int(d), int(hh), int(mi), int(ss))
            return _error(ctx, ts, lvl, pid, cid, msg), None
    elif c == "[":
        m = ERROR_UNDATED.match(text)
        if m:
            lvl, pid, _tid, cid, msg = m.groups()
            return _error(ctx, None, lvl, pid, cid, msg), None
    if " - " not in text[:60]:
        return None
    m = ACCESS.match(text)
    if m is None:
        return None
    addr, _user, d, mon, y, hh, mi, ss, sign, oh, om, request, status, nbytes = m.groups()[:14]
    off = (int(oh) * 3600 + int(om) * 60) * (1 if sign == "+" else -1)
    ts = ctx.clock.utc(int(y), month_number(mon), int(d), int(hh), int(mi), int(ss), off)
    st = int(status)
    ev = Event(ctx.path, 0, NAME, E.ACCESS, "ERROR" if st >= 500 else "INFO", ts, text, "nginx", None)
    parts = request.split(" ")
    access_fields(ev, addr, parts[0] if parts else "-", parts[1] if len(parts) > 1 else "-", st)
    ev.fields["bytes"] = to_int(nbytes)
    ev.text = f'{addr} "{request[:300]}" {status} {nbytes}'  # the user agent and referer are not needed
    return ev, None
