"""A small forwarding proxy: Python `logging.basicConfig` lines and `http.server` lines.

This is the `chat.html` + `proxy_server.py` setup in front of vLLM: `LEVEL:logger:message`
on stderr, and BaseHTTPRequestHandler's `addr - - [dd/Mon/YYYY HH:MM:SS] "request" code -`.
"""

from __future__ import annotations

import re

from diag.parsing import events as E
from diag.parsing import usercontent
from diag.parsing.clock import month_number
from diag.parsing.events import Event
from diag.parsing.base import Ctx, Parsed
from diag.parsing.formats.uvicorn import access_fields

NAME = "proxy"

LOGGING = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL):([^:\s]*):(.*)\Z", re.S)
HTTP_SERVER = re.compile(r"(\S+) - - \[(\d\d)/(\w{3})/(\d{4}) (\d\d):(\d\d):(\d\d)\] (.*)\Z", re.S)
REQUEST = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}|-) (\d+|-)\Z')
# http.server logs the request line of a request it cannot parse as it came (`"any text" 400 -`),
# and echoes it in the error message (`code 400, message Bad request version ('…')`)
GARBAGE = re.compile(r'"(.*)" (?:\d{3}|-) (?:\d+|-)\Z', re.S)
_ECHO = re.compile(r"^code \d+, message [^(]*\((.*)\)\Z", re.S)
UPSTREAM_STATUS = re.compile(r"[Uu]pstream (?:response )?status:? (\d{3})")


def parse(text: str, ctx: Ctx) -> Parsed | None:
    c = text[:1]
    if c in "DIWEC":
        m = LOGGING.match(text)
        if m:
            level, logger, msg = m.groups()
            ev = Event(ctx.path, 0, NAME, E.LOG, level, None, msg, ctx.proc, ctx.pid, logger or None)
            u = UPSTREAM_STATUS.search(msg)
            if u:
                ev.fields["upstream_status"] = int(u.group(1))
            return ev, None
    m = HTTP_SERVER.match(text)
    if m is None:
        return None
    addr, day, mon, year, hh, mi, ss, msg = m.groups()
    ts = ctx.clock.local(int(year), month_number(mon), int(day), int(hh), int(mi), int(ss))
    ev = Event(ctx.path, 0, NAME, E.LOG, "INFO", ts, msg, ctx.proc, ctx.pid, "http.server")
    r = REQUEST.match(msg)
    if r:
        status = int(r.group(3)) if r.group(3) != "-" else 0
        access_fields(ev, addr, r.group(1), r.group(2), status)
        if status >= 500:
            ev.level = "ERROR"
    elif msg.startswith("code "):
        ev.level = "WARNING" if msg[5:6] == "4" else "ERROR"
        e = _ECHO.search(msg)
        if e:  # `Bad request syntax ('…')`: what the client sent
            ev.text = usercontent.mask(msg, e.start(1), e.end(1), "request", ev.fields)
    elif msg.startswith('"'):
        g = GARBAGE.match(msg)
        if g:  # a request line that is not `METHOD /path HTTP/x` (answered 400): the client's text
            ev.text = usercontent.mask(msg, 1, g.end(1), "request", ev.fields)
    return ev, None
