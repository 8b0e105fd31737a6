"""llama.cpp's llama-server: the `M.SS.mmm.uuu L` prefix, prefix-less `srv`/`slot` lines, JSON lines.

A request is a task on a slot (`slot launch_slot_: id  3 | task 0 | processing task`); the
OpenAI id is never logged, so traces are keyed `task-<N>`. Times are relative to the start of
the process; only durations (print_timing) are real.
"""

from __future__ import annotations

import json
import re

from diag.parsing import events as E
from diag.parsing import usercontent
from diag.parsing.formats import llamacpp_plain
from diag.parsing.events import Event
from diag.parsing.base import Ctx, Parsed, json_text, to_float, to_int

NAME = "llamacpp"

PREFIX = re.compile(r"(\d+)\.(\d\d)\.(\d{3})\.(\d{3}) ([IWEDT]) (.*)\Z", re.S)
SLOT = re.compile(r"slot (.{12}): id +(\d+) \| task (-?\d+) \| ?(.*)\Z", re.S)
SRV = re.compile(r"(srv|cmn|que|res) {1,2}(.{12}): (.*)\Z", re.S)
_LEVEL = {"I": "INFO", "W": "WARNING", "E": "ERROR", "D": "DEBUG", "T": "DEBUG",
          "info": "INFO", "warn": "WARNING", "error": "ERROR", "debug": "DEBUG"}

_PROMPT_EVAL = re.compile(r"prompt eval time = +([\d.]+) ms / +(\d+) tokens")
_EVAL = re.compile(r"(?<!prompt )eval time = +([\d.]+) ms / +(\d+) tokens")
_TOTAL = re.compile(r"total time = +([\d.]+) ms / +(\d+) tokens")
_RELEASE = re.compile(r"stop processing: n_(?:tokens|past) = (\d+), truncated = (\d+)")  # n_past: builds of late 2024 to mid 2025
_SEND_ERROR = re.compile(r"task id = (\d+), error: (.*)\Z", re.S)
_CANCEL = re.compile(r"cancel task, id_task = (\d+)")
_HTTP = re.compile(r"(?:done )?request: ([A-Z]+) (\S.*?) (\S+) (\d{3})\Z", re.S)
_LAST_READ = "last read: '"  # nlohmann::json's parse error
_EXC_CODE = re.compile(r'got exception: \{"error":\{"code":(\d{3})')
# `new prompt, n_ctx_slot = 8192, n_keep = 0, task.n_tokens = 9317` (n_prompt_tokens before late 2025)
_NEW_PROMPT = re.compile(r"new prompt, n_ctx_slot = (\d+), n_keep = -?\d+, (?:task\.n_tokens|n_prompt_tokens) = (\d+)")
_PROMPTS_KEPT = 16  # tasks whose prompt size a source's parser remembers (one per busy slot is enough)


def parse(text: str, ctx: Ctx) -> Parsed | None:
    rel = None
    level = None
    body = text
    c = text[:1]
    if c.isdigit():
        m = PREFIX.match(text)
        if m is None:
            return None
        mi, ss, ms, us, lv, body = m.groups()
        rel = (to_int(mi) or 0) * 60 + int(ss) + int(ms) / 1e3 + int(us) / 1e6
        level = _LEVEL[lv]
    elif c == "{":
        if not text.startswith('{"type":'):
            return _old_json(text, ctx) if '"timestamp":' in text and '"function":' in text else None
        try:
            obj = json.loads(text)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
        body = json_text(obj.get("msg", "")).rstrip("\n")
        level = _LEVEL.get(str(obj.get("level", "")), None)
        t = obj.get("time")
        try:
            rel = t / 1e6 if isinstance(t, (int, float)) else None
        except OverflowError:  # an integer past a float's range: no time, not a lost line
            rel = None
        if obj.get("type") != "log":
            ev = Event(ctx.path, 0, NAME, E.LOG, level, None, json_text(obj.get("type")), ctx.proc, ctx.pid)
            return ev, None
    ev = Event(ctx.path, 0, NAME, E.LOG, level, None, body, ctx.proc, ctx.pid)
    if rel is not None:
        ev.fields["t_rel"] = rel
    if _DUMP_HINT in body or "'" in body:
        _mask_user(ev, ctx)
    b = body[:1]
    if b == "s":
        m = SLOT.match(body)
        if m:
            func, slot, task, msg = m.groups()
            ev.src = "slot " + func.strip()
            ev.proc = "slot"
            ev.fields["slot"] = to_int(slot)
            tid = to_int(task)
            if tid is not None and tid >= 0:
                ev.fields["task"] = tid
            classify_slot(ev, func.strip(), msg)
            if tid is not None and msg.startswith("new prompt, "):
                _remember_prompt(ctx, tid, msg)
            return ev, None
        m = SRV.match(body)
        if m:
            mod, func, msg = m.groups()
            ev.src = f"{mod} {func.strip()}"
            ev.proc = mod
            classify_srv(ev, func.strip(), msg)
            if ev.kind == E.FAILED and "prompts" in ctx.state:
                _prompt_of_failed(ev, ctx)
            return ev, None
    elif b in "cqr":
        m = SRV.match(body)
        if m:
            ev.src = f"{m.group(1)} {m.group(2).strip()}"
            ev.proc = m.group(1)
            return ev, None
        if b == "r" and body.startswith("request: ") and _access(ev, body):  # builds of late 2024: without srv's prefix
            return ev, None
    if rel is None:
        t = text.lstrip(" ") if c == " " else text  # `%4s` pads ERR; a paste may indent more
        if " [" in t[3:9] and " | " in t:
            return _old_text(t, ctx)
        if b == "s" or b == "p" or b == "a" or b == "l":
            return llamacpp_plain.parse(body, ctx)
        return None  # an unprefixed line of some other program
    if body.startswith("image decoded") or body.startswith("processing image"):
        ev.fields["image_event"] = True
    return ev, None


# Where llama-server -v writes user content: the prompt pieces of a multimodal request (`add_text:`),
# the chat template's example and generation prompt, the generated parser. What follows such a line
# on lines without a prefix belongs to it (`SourceParser` keeps those lines out as a whole).
_DUMP_HINT = "_"  # cheap guard: every marker below contains an underscore or a quote
# Builds of 2025 also write, at -v, the model's output as it grows (`update_chat_: Parsing chat message: %s`,
# raw) and the request's grammar or JSON schema (`params_from_: Grammar: %s`, `JSON schema: %s` dumped
# with indent, `Converted grammar: %s`), each on as many lines as it has.
_DUMP_START = re.compile(r"add_text: |generation_prompt='|example_format: '|generated parser:|formatted_chat|prompt_text"
                         r"|_: Parsing chat message: |params_from_: (?:Grammar|JSON schema|Converted grammar): ")


def _mask_user(ev: Event, ctx: Ctx) -> None:
    m = _DUMP_START.search(ev.text)
    if m is None:
        return
    t = ev.text
    start = m.end()
    q = t[start - 1] if t[start - 1] == "'" else None
    end = None
    if q is not None:
        close = t.find("'", start)
        end = close if close >= 0 else None
    ev.text = usercontent.mask(t, start, end, "prompt", ev.fields)
    if end is None:
        ctx.state["user_dump"] = True  # the dump goes on on the next, unprefixed lines


def _remember_prompt(ctx: Ctx, task: int, msg: str) -> None:
    """A task's prompt size and its slot's context (`new prompt, …`): builds of 2025 say them here
    and not in the error that rejects the task (`the request exceeds the available context size`),
    which `_prompt_of_failed` completes with them."""
    m = _NEW_PROMPT.match(msg)
    if m is None:
        return
    kept = ctx.state.setdefault("prompts", {})
    kept.pop(task, None)
    if len(kept) >= _PROMPTS_KEPT:
        del kept[next(iter(kept))]  # the oldest: a task that ended without an error
    kept[task] = (to_int(m.group(1)), to_int(m.group(2)))


def _prompt_of_failed(ev: Event, ctx: Ctx) -> None:
    """A failed task's prompt size and slot context, from its `new prompt` line (`_remember_prompt`):
    the event's `prompt_tokens` and `n_ctx_slot`."""
    rid = ev.fields.get("request_id", "")
    task = to_int(rid[5:]) if rid.startswith("task-") else None
    got = ctx.state["prompts"].pop(task, None) if task is not None else None
    if got is not None:
        ev.fields["n_ctx_slot"], ev.fields["prompt_tokens"] = got


def classify_slot(ev: Event, func: str, msg: str) -> None:
    f = ev.fields
    task = f.get("task")
    if task is None:
        return
    f["request_id"] = f"task-{task}"
    if func == "launch_slot_" and msg.startswith("processing task"):
        ev.kind = E.STARTED
    elif func == "print_timing":
        ev.kind = E.TIMING
        reclassify(ev)
    elif func == "release":
        m = _RELEASE.search(msg)
        if m:
            ev.kind = E.FINISHED
            f["released"] = True
            f["n_tokens"] = to_int(m.group(1))
            f["truncated"] = m.group(2) != "0"
            # what the slot's cache holds after the task, in the builds whose meaning was checked (`traces._whole_prompt`)
            f["slot_tokens"] = f["n_tokens"]


def reclassify(ev: Event) -> None:
    """Timings: one line each in new builds, one 4-line record in classic ones (merged)."""
    if ev.kind != E.TIMING:
        return
    f = ev.fields
    t = ev.text
    m = _PROMPT_EVAL.search(t)
    if m:
        f["prompt_ms"], f["prompt_tokens"] = to_float(m.group(1)), to_int(m.group(2))
    m = _EVAL.search(t)
    if m:
        f["eval_ms"], f["output_tokens"] = to_float(m.group(1)), to_int(m.group(2))
    m = _TOTAL.search(t)
    if m:
        f["total_ms"] = to_float(m.group(1))


def classify_srv(ev: Event, func: str, msg: str) -> None:
    f = ev.fields
    if func == "send_error":
        m = _SEND_ERROR.match(msg)
        if m:
            ev.kind = E.FAILED
            f["request_id"] = f"task-{m.group(1)}"
            reason = m.group(2)
            f["reason"] = usercontent.clean(reason, 200)
            f["http_status"] = 400 if "exceeds the available context size" in reason or "larger than the max context" in reason else 500
            if f["http_status"] == 400:
                f["rejected"] = True
    elif func == "stop":
        m = _CANCEL.search(msg)
        if m:
            ev.kind = E.ABORTED
            f["request_id"] = f"task-{m.group(1)}"
            f["cancel"] = True
    elif func == "log_server_r" or msg.startswith("request: ") or msg.startswith("done request: "):
        _access(ev, msg)
    elif msg.startswith("http: streamed chunk: "):  # -v: the response as it is streamed, the model's text
        _mask_tail(ev, msg, 22, len(msg), "output")
    elif func == "process_chun" and msg.startswith("processing image"):
        f["image_event"] = True
    elif "got exception" in msg:
        m = _EXC_CODE.search(msg)
        if m:
            f["http_status"] = to_int(m.group(1))
        i = msg.find(_LAST_READ)
        if i >= 0:  # a JSON parse error quotes the body up to where it failed: `usercontent.scrub` masked it
            n = usercontent.masked_chars(msg, i + len(_LAST_READ))
            if n is not None:
                usercontent.count(f, n)


def _access(ev: Event, msg: str) -> bool:
    """`request: POST /v1/chat/completions 127.0.0.1 200` (with srv's prefix or, late 2024, without):
    an access record. False: not one."""
    m = _HTTP.match(msg)
    if m is None:
        return False
    from diag.parsing.formats.uvicorn import access_fields

    path = m.group(2)
    if " " in path:  # cpp-httplib logs the path decoded: `%20` is a space, and the rest the client's text
        path = path.split(" ", 1)[0]
        _mask_tail(ev, msg, m.start(2) + len(path), m.end(2), "url-path")
    access_fields(ev, m.group(3), m.group(1), path, to_int(m.group(4)))
    return True


def _mask_tail(ev: Event, msg: str, start: int, end: int, what: str) -> None:
    """Mask msg[start:end] in the event's text, which ends with `msg`."""
    t = ev.text
    if t.endswith(msg):
        base = len(t) - len(msg)
        ev.text = usercontent.mask(t, base + start, base + end, what, ev.fields)


# llama-server before its log rewrite (autumn 2024, b3800 or so) wrote every line through
# server_log(): JSON by default, `{"tid":"…","timestamp":<epoch s>,"level":"INFO","function":"…",
# "line":N,"msg":"…", extras}` (keys sorted in builds before ordered_json, `"message"` in 2023), or
# with --log-format text `%4s [%24s] msg | tid="…" timestamp=… key=json-value …`. The message is
# the server's; the extras may be the user's (-v writes the request and response bodies, the
# tokens it evaluates and generates): only named numbers are read from them, never their text.
OLD_TEXT = re.compile(r"(INFO|WARN|ERR|VERB|WARNING|ERROR|VERBOSE) \[ *(\w+)\] (.*?) \| (?=tid=)", re.S)
_OLD_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]\S*)(?: |\Z)')
_EPOCH_MAX = 32503680000.0  # the year 3000
_OLD_LEVEL = {"INFO": "INFO", "WARN": "WARNING", "WARNING": "WARNING", "ERR": "ERROR", "ERROR": "ERROR",
              "VERB": "DEBUG", "VERBOSE": "DEBUG"}
_OLD_KEYS = frozenset(("timestamp", "id_slot", "slot_id", "id_task", "task_id", "n_past", "truncated", "status",
                       "method", "path", "remote_addr", "n_prompt_tokens_processed", "t_prompt_processing",
                       "n_decoded", "t_token_generation", "t_total", "error"))


def _old_json(text: str, ctx: Ctx) -> Parsed | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or "level" not in obj:
        return None
    msg = obj.get("msg", obj.get("message", ""))
    return _old_event(ctx, str(obj.get("level")), obj.get("function"), msg, obj)


def _old_text(text: str, ctx: Ctx) -> Parsed | None:
    m = OLD_TEXT.match(text)
    if m is None:
        return None
    extra: dict = {}
    n = len(text)
    i = m.end()
    while i < n:  # key=value pairs from the left: a key quoted inside a value (the user's) is never read as one
        p = _OLD_PAIR.match(text, i)
        if p is None:
            break
        key, val = p.groups()
        if key in _OLD_KEYS:
            if val[0] == '"':
                try:
                    val = json.loads(val)
                except ValueError:
                    break
            extra[key] = val
        i = p.end()
    return _old_event(ctx, m.group(1), m.group(2), m.group(3), extra)


def _num(v: object, conv=to_int):  # a JSON number or the text of one (bounded as every logged number is)
    if isinstance(v, bool) or v is None:
        return None
    return conv(str(v)) if isinstance(v, (int, float, str)) else None


def _old_event(ctx: Ctx, level: str, func: object, msg: object, x: dict) -> Parsed:
    func = json_text(func or "")[:64]
    msg = json_text(msg).rstrip("\n")
    ts = _num(x.get("timestamp"), to_float)  # time(nullptr): epoch seconds
    if ts is not None and not 0 <= ts < _EPOCH_MAX:
        ts = None  # no date a clock can show (a garbled number is unknown, not a crash later)
    ev = Event(ctx.path, 0, NAME, E.LOG, _OLD_LEVEL.get(level, "INFO"), ts, msg, ctx.proc, ctx.pid, func)
    f = ev.fields
    task = _num(x.get("id_task", x.get("task_id")))
    if func == "log_server_request":
        status = _num(x.get("status"))
        if status is not None and 100 <= status <= 999:
            from diag.parsing.formats.uvicorn import access_fields

            access_fields(ev, json_text(x.get("remote_addr") or ""), json_text(x.get("method") or "-"),
                          json_text(x.get("path") or "-"), status)
        return ev, None
    if task is None or task < 0:
        return ev, None
    f["task"] = task
    f["request_id"] = f"task-{task}"
    slot = _num(x.get("id_slot", x.get("slot_id")))
    if slot is not None:
        f["slot"] = slot
    if msg == "slot is processing task":
        ev.kind = E.STARTED
    elif msg == "slot released":
        ev.kind = E.FINISHED
        f["released"] = True
        f["n_tokens"] = _num(x.get("n_past"))
        f["truncated"] = x.get("truncated") in (True, "true")
    elif func == "print_timings":
        ev.kind = E.TIMING
        for key, name, conv in (("n_prompt_tokens_processed", "prompt_tokens", to_int), ("t_prompt_processing", "prompt_ms", to_float),
                                ("n_decoded", "output_tokens", to_int), ("t_token_generation", "eval_ms", to_float),
                                ("t_total", "total_ms", to_float)):
            if key in x:
                f[name] = _num(x[key], conv)
    elif msg == "task error" and isinstance(x.get("error"), str):
        ev.kind = E.FAILED
        reason = x["error"]
        ev.text = f"{msg}: {json_text(reason)[:500]}"  # the server's own message (what the newer send_error line says)
        f["reason"] = usercontent.clean(reason, 200)
        f["http_status"] = 400 if "larger than the max context" in reason or "exceeds the available context size" in reason else 500
        if f["http_status"] == 400:
            f["rejected"] = True
    return ev, None

