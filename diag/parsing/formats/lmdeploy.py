"""LMDeploy's api_server: the `lmdeploy` Python logger, TurboMind `[TM][LEVEL]` lines, stats lines.

Requests are integer sessions (`session 5`), so traces are keyed `session-<N>`; TurboMind's
`ID 5` is the same number.
"""

from __future__ import annotations

import re

from diag.parsing import events as E
from diag.parsing import usercontent
from diag.parsing.events import Event
from diag.parsing.base import Ctx, Parsed, to_float, to_int

NAME = "lmdeploy"

PY = re.compile(
    r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d),(\d{3}) - (\S+) - ([A-Z]+) - (?:\[pid=(\d+) ppid=\d+\] - )?(?:([^:\s]+:\d+) - )?(.*)\Z",
    re.S,
)
TM = re.compile(r"\[TM\]\[(TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL)\](?:\[(\d\d)(\d\d)\.(\d\d):(\d\d):(\d\d)\.(\d{6})\])?(?:\[([^:\]]+:\d+)\])?(?:\[\d+\])? ?(.*)\Z", re.S)
STATS = re.compile(r"\[(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) DP(\d+)\] (.*)\Z", re.S)
_LEVEL = {"TRACE": "DEBUG", "WARN": "WARNING", "FATAL": "CRITICAL", "REQUEST": "DEBUG"}

# `session_id=` before 0.5 (`session_id=290, history_tokens=0, input_tokens=1543, max_new_tokens=1024, …`)
_SESSION_IN = re.compile(r"session(?:_id)?=(\d+), (?:history_tokens=\d+, )?input_tokens=(\d+), max_new_tokens=(\d+)")
_SESSION_ID = re.compile(r"session(?:_id)?=(?:Session\(id=)?(\d+)")
_INPUT_TOKENS = re.compile(r", input_tokens=(\d+), ")
# What introduces the user's text in `log_inputs` / `log_prompt` / `log_response` lines (stop words
# in the generation config, the prompt, the response), in the order they are printed.
_USER_TEXT = ("gen_config=", "prompt=", "response=")
_PARSE_FAILED = "Failed to parse "
_START = re.compile(r"\[async_stream_infer\] session (\d+) start")
_FINISHED = re.compile(r'session (\d+) finished, reason "(\w+)", input_tokens (\d+), output_tokens (\d+)')
_FAILED = re.compile(r'session (\d+) finished, (?:(\S+), )?reason "error"')
_CANCELLED = re.compile(r"\[(?:safe_run|generate)\] session (\d+) (?:cancelled|got aborted)")
_TM_ID = re.compile(r"\bID (\d+):")
_STATS = re.compile(r"Engine \(running/waiting\): (\d+) / (\d+), KV cache: ([\d.]+)%")
_STATS_OLD = re.compile(r"Running: (\d+) reqs, Waiting: (\d+) reqs, GPU KV cache usage: ([\d.]+)%")


def parse(text: str, ctx: Ctx) -> Parsed | None:
    c = text[:1]
    if c.isdigit():
        m = PY.match(text)
        if m is None:
            return None
        y, mo, d, hh, mi, ss, ms, logger, level, pid, src, msg = m.groups()
        if src is None and not logger.startswith("lmdeploy"):
            return None  # LMDeploy before 0.5 wrote no `file.py:line`: without it, only its own logger is its
        ts = ctx.clock.local(int(y), int(mo), int(d), int(hh), int(mi), int(ss))
        if ts is not None:
            ts += int(ms) / 1000
        ev = Event(ctx.path, 0, NAME, E.LOG, _LEVEL.get(level, level), ts, msg, ctx.proc, to_int(pid) if pid else ctx.pid, src)
        if msg.startswith(_PARSE_FAILED):
            # `logger.error(f'Failed to parse {text}. Exception: {e}.')` (api_server.py 0.7+): the
            # model's output its tool-call parser could not read, raw, on as many lines as it has
            # (first: the output may say `session 5 finished`)
            ev.text = usercontent.mask(ev.text, len(_PARSE_FAILED), None, "output", ev.fields)
            ev.fields["user_tail"] = True
        elif level == "DEBUG" and src is not None and "_parser.py:" in src:
            # a tool parser's DEBUG lines (`got arguments diff: %s`): the model's output
            ev.text = usercontent.mask(ev.text, msg.find(": ") + 2 if ": " in msg[:40] else 0, None, "output", ev.fields)
            ev.fields["user_tail"] = True
        elif "session" in msg or msg.startswith("prompt="):
            classify(ev, msg)
        return ev, None
    if c != "[":
        return None
    if text.startswith("[TM]"):
        m = TM.match(text)
        if m is None:
            return None
        lv, mo, d, hh, mi, ss, us, src, msg = m.groups()
        ts = ctx.clock.yearless(int(mo), int(d), int(hh), int(mi), int(ss)) if mo else None
        if ts is not None:
            ts += int(us) / 1e6
        ev = Event(ctx.path, 0, NAME, E.LOG, _LEVEL.get(lv, lv), ts, msg, "TurboMind", ctx.pid, src)
        t = _TM_ID.search(msg)
        if t:
            ev.fields["session"] = to_int(t.group(1))
        return ev, None
    m = STATS.match(text)
    if m is None:
        return None
    y, mo, d, hh, mi, ss, dp, msg = m.groups()
    ts = ctx.clock.local(int(y), int(mo), int(d), int(hh), int(mi), int(ss))
    ev = Event(ctx.path, 0, NAME, E.STATS, "INFO", ts, msg, f"DP{dp}", ctx.pid)
    s = _STATS.search(msg) or _STATS_OLD.search(msg)
    if s:
        ev.fields.update(running=to_int(s.group(1)), waiting=to_int(s.group(2)), kv_usage=to_float(s.group(3)))
    return ev, None


def classify(ev: Event, msg: str) -> None:
    """The request's part of a message naming a session. The patterns are anchored at the
    message's start: a message that logs the user's text is recognised first, and only its
    session and sizes are read, so a prompt or response quoting `session 5 finished, …` (users
    paste logs into these models) neither moves a request nor reaches the rules."""
    f = ev.fields
    if msg.startswith("prompt="):  # before 0.5: the prompt on a line of its own, no session named
        ev.text = usercontent.mask(ev.text, 0, None, "request", f)
        return
    if msg.startswith("session") and _user_text(ev, msg, f):
        return
    m = _SESSION_IN.match(msg)
    if m:
        ev.kind = E.RECEIVED
        f["request_id"] = f"session-{m.group(1)}"
        f["prompt_tokens"] = to_int(m.group(2))
        f["max_tokens"] = to_int(m.group(3))
        return
    m = _START.match(msg)
    if m:
        ev.kind = E.STARTED
        f["request_id"] = f"session-{m.group(1)}"
        return
    m = _FINISHED.match(msg)
    if m:
        ev.kind = E.ABORTED if m.group(2) == "abort" else E.FINISHED
        f["request_id"] = f"session-{m.group(1)}"
        f["finish_reason"] = m.group(2)
        f["prompt_tokens"] = to_int(m.group(3))
        f["output_tokens"] = to_int(m.group(4))
        return
    m = _FAILED.match(msg)
    if m:
        ev.kind = E.FAILED
        f["request_id"] = f"session-{m.group(1)}"
        f["reason"] = usercontent.clean((m.group(2) or "error").replace("ResponseType.", ""), 200)
        return
    m = _CANCELLED.match(msg)
    if m:
        ev.kind = E.ABORTED
        f["request_id"] = f"session-{m.group(1)}"


def _user_text(ev: Event, msg: str, f: dict) -> bool:
    """`session=N, …, prompt='…'` (and `response=`): the session, the prompt's size, the text
    masked from the first marker on (the machine-written part before it has none, so a marker
    quoted in the text comes later). False: the message has no user text."""
    found = [i for i in (msg.find(k) for k in _USER_TEXT) if i >= 0]
    m = _SESSION_ID.match(msg)
    if not found or m is None:
        return False
    start = min(found)
    f["request_id"] = f"session-{m.group(1)}"
    if not msg.startswith("response=", start):
        ev.kind = E.RECEIVED
        f["detail"] = True
        t = _INPUT_TOKENS.search(msg, 0, start)
        if t:
            f["prompt_tokens"] = to_int(t.group(1))
        p = msg.find("prompt=", start)
        if p >= 0:
            f["prompt_chars"] = max(0, len(msg) - p - 9)  # less the quotes
    ev.text = usercontent.mask(ev.text, start, None, "response" if msg.startswith("response=", start) else "request", f)
    return True
