"""uvicorn's default formatters, as vLLM and LMDeploy run them: `LEVEL:     message`.

uvicorn lines carry no time (the source parser lends them the previous line's) and the access
line carries no request id; it is written when the response *starts*.
"""

from __future__ import annotations

import re

from diag.parsing import events as E
from diag.parsing import usercontent
from diag.parsing.events import Event
from diag.parsing.usercontent import endpoint
from diag.parsing.base import Ctx, Parsed

NAME = "uvicorn"

RX = re.compile(r"(INFO|WARNING|ERROR|CRITICAL|DEBUG|TRACE):\s+(.*)\Z", re.S)
ACCESS = re.compile(r'(\S*)(?: \d+)? - "([A-Z]+) (\S+) HTTP/([\d.]+)" (\d{3})(?: (.*))?\Z')  # a pid after the client: KServe's format
# the same with a client that is not one word: the last ` - "METHOD path HTTP/x" NNN` is uvicorn's
# an IPv6 client as uvicorn writes it (`::1:58413`, `fdbd:dc03::81:33816`: no brackets), which the
# first pattern is not tried on: hex digits and colons only, so it is kept as the client
_IPV6_CLIENT = re.compile(r"[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*:\d{1,5}\Z")
# h11 (plain uvicorn, as LMDeploy installs it) takes any token as a method and logs it: the client's word
_ACCESS_ANY_METHOD = re.compile(r'(\S*) - "([!#$%&\'*+.^_`|~0-9A-Za-z-]{1,256}) (\S+) HTTP/([\d.]+)" (\d{3})(?: (.*))?\Z')
_ACCESS_ANY_CLIENT = re.compile(r'(.*) - "([A-Z]+) (\S+) HTTP/([\d.]+)" (\d{3})(?: [A-Za-z\' -]*)?\Z', re.S)


def parse(text: str, ctx: Ctx) -> Parsed | None:
    if ":" not in text[:9]:
        return None
    m = RX.match(text)
    if m is None:
        return None
    level, msg = m.groups()
    ev = Event(ctx.path, 0, NAME, E.LOG, "DEBUG" if level == "TRACE" else level, None, msg, ctx.proc, ctx.pid)
    a = ACCESS.match(msg) if msg[:1].isdigit() or msg.startswith("[") or msg.startswith(" -") else None
    if a:
        access_fields(ev, a.group(1), a.group(2), a.group(3), int(a.group(5)))
    elif ' - "' in msg:
        a = _ACCESS_ANY_CLIENT.match(msg)
        if a and len(a.group(1)) < 64 and _IPV6_CLIENT.match(a.group(1)):
            access_fields(ev, a.group(1), a.group(2), a.group(3), int(a.group(5)))
        elif a:  # behind a proxy, uvicorn logs the client X-Forwarded-For names: any text, spaces included
            access_fields(ev, None, a.group(2), a.group(3), int(a.group(5)))
            ev.text = usercontent.mask(msg, 0, a.end(1), "client", ev.fields)
        else:
            a = _ACCESS_ANY_METHOD.match(msg)
            if a:  # a method no server defines (answered 405 or 400): the client's, not the rules'
                access_fields(ev, a.group(1) or None, "-", a.group(3), int(a.group(5)))
                ev.text = usercontent.mask(msg, a.start(2), a.end(2), "method", ev.fields)
    return ev, None


def access_path(path: str) -> str:
    """A request path as an access record keeps it: the endpoint only (no query, no user id in it), bounded."""
    return endpoint(path)[:512]


def access_fields(ev: Event, client: str, method: str, path: str, status: int) -> None:
    """The shape every access-line parser (uvicorn, nginx, http.server, llama.cpp) fills in."""
    ev.kind = E.ACCESS
    f = ev.fields
    f["client"] = client or None
    f["method"] = method
    f["path"] = access_path(path)
    f["status"] = status
