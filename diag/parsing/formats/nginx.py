"""nginx `combined` access lines and error-log lines (upstream refused, timed out, closed)."""

from __future__ import annotations

import re

from diag.parsing import events as E
from diag.parsing import usercontent
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
_METHOD = re.compile(r"[A-Z][A-Z_-]{0,19}\Z")  # what nginx takes as a method
# The client is nginx's address text ($remote_addr: IPv4, IPv6 or `unix:`; `10.xxx.x.x` as users redact
# it), never other text: a decoded path nginx quotes before the context may hold `, client: ` and then
# the client's own text.
_CLIENT = r"(?:[0-9A-Fa-fxX*.:]{2,45}|unix:)"
# nginx's own context shape, each value as nginx makes it or free of spaces and quotes: kept as it is
_PLAIN_CTX = re.compile(r', client: ' + _CLIENT + r', server: [^,"]*(?:, request: "[A-Z][A-Z_-]* \S+ HTTP/[\d.]+")?'
                        r'(?:, subrequest: "[^"\s]*")?(?:, upstream: "[^"\s]*")?(?:, host: "[^"\s]*")?\Z')
_CTX = re.compile(r', client: (' + _CLIENT + r'), server: [^,]*(?:, request: "([A-Z]+) (\S+) [^"]*")?(?:, upstream: "([^"]*)")?')


def _error(ctx: Ctx, ts: float | None, lvl: str, pid: str, cid: str | None, msg: str) -> Event:
    """An error log line from its level on (dated or as pasted without its date); what the client
    wrote into it (a quoted path, a request line nginx did not take) masked."""
    ev = Event(ctx.path, 0, NAME, E.LOG, _LEVELS.get(lvl, "INFO"), ts, msg, "nginx", to_int(pid))
    i = msg.find(", client: ")
    cm = _CTX.match(msg, i) if i >= 0 else None
    if cm:
        ev.fields.update(client=cm.group(1), method=cm.group(2), path=cm.group(3), upstream=cm.group(4))
    if i >= 0:
        q = msg.find('"', 0, i)
        if q >= 0 or _PLAIN_CTX.match(msg, i) is None:
            head = msg[:i]
            if q >= 0:  # a path nginx quotes (`open() "…" failed`, `"…" is not found`): the client's URI, decoded
                r = head.rfind('"')
                head = usercontent.mask(head, q, r + 1 if r > q else i, "path", ev.fields)
            ev.text = head + (msg[i:] if _PLAIN_CTX.match(msg, i) else _context(cm, len(msg) - i))
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
    method, path, shown = _request(request)
    access_fields(ev, addr, method, path, st)
    ev.fields["bytes"] = to_int(nbytes)
    ev.text = f'{addr} "{shown[:300]}" {status} {nbytes}'  # the user agent and referer are not needed
    return ev, None


def _context(cm: re.Match | None, n: int) -> str:
    """An error line's context (`, client: …`) when it holds more than nginx's own shape: the
    request line as the client wrote it (spaces and quotes taken, not escaped in this log), the
    Host and Referer headers. What was parsed out of it, and a placeholder for the rest."""
    if cm is None:
        return usercontent.placeholder("request", n)
    out = f", client: {cm.group(1)}"
    if cm.group(2):
        out += f', request: "{cm.group(2)} {cm.group(3)}"'
    if cm.group(4):
        out += f', upstream: "{cm.group(4)}"'
    return out + ", " + usercontent.placeholder("request", n)


def _request(request: str) -> tuple[str, str, str]:
    """Method, path and the request line as the rules may see it. nginx logs the client's request
    line as it came: a path with spaces (nginx takes them), or any text at all in a line it
    answers 400. Only the method, the path (scrubbed already) and the protocol are kept; anything
    else is the client's text and leaves a placeholder."""
    parts = request.split(" ")
    if len(parts) < 2 or _METHOD.match(parts[0]) is None:
        return "-", "-", usercontent.placeholder("request", len(request)) if request and request != "-" else request
    proto = parts[-1] if len(parts) > 2 and parts[-1].startswith("HTTP/") else None
    if len(parts) == (3 if proto else 2):
        return parts[0], parts[1], request
    rest = " ".join(parts[2:-1] if proto else parts[2:])
    return parts[0], parts[1], f"{parts[0]} {parts[1]} {usercontent.placeholder('request', len(rest))}" + (f" {proto}" if proto else "")
