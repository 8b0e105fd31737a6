"""vLLM 0.6 → 0.33 records, and the deployment guide's look-alike lines.

Prefix: `LEVEL MM-DD HH:MM:SS [file:line] msg` (brackets from 0.8; DEBUG mode shortens paths;
the guide adds `,mmm`). The `(Proc pid=N) ` tag is stripped before this parser by
`diag.parsing.wrappers`. Message classification turns request lifecycle lines into typed
events; prompt text is only ever measured (characters, image placeholders), never kept.
"""

from __future__ import annotations

import re

from diag.parsing import events as E
from diag.parsing import usercontent
from diag.parsing.usercontent import clean
from diag.parsing.events import Event
from diag.parsing.base import Ctx, Parsed, to_float, to_int
from diag.parsing.quoted import after_text, literal, text_end, unquoted_find

NAME = "vllm"

RX = re.compile(
    r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) (\d\d-\d\d \d\d:\d\d:\d\d)(?:,(\d{3}))? \[?([^\]\s]+?:\d+)\] ?(.*)\Z",
    re.S,
)

# vLLM's loggers under another program's logging config, `%(asctime)s - %(name)s - %(levelname)s - %(message)s`
# (Xinference: `2025-07-08 17:23:59 - vllm.engine.async_llm_engine - INFO - Added request …`).
NAMED = re.compile(
    r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:,(\d{3}))? - (vllm(?:\.[\w.]+)?) - (DEBUG|INFO|WARNING|ERROR|CRITICAL) - (.*)\Z",
    re.S,
)

# Placeholders one image leaves in a rendered prompt (vllm-log-formats.md §8); each contains "image".
IMAGE_PLACEHOLDERS = (
    "<|vision_start|><|image_pad|>",  # Qwen2-VL, Qwen2.5-VL, Qwen3-VL
    "<|image|>",  # mllama
    "(<image>./</image>)",  # minicpmv
    "<image>",  # llava, internvl, idefics3 (counted only when none of the above is present)
)

_RECEIVED = re.compile(r"Received request (\S+?): (.*)\Z", re.S)
_DETAILS = re.compile(r"Request (\S+?) details: (.*)\Z", re.S)
_JSON_BODY = re.compile(r"Request \S+? JSON body: ")
_ADDED = re.compile(r"Added request (\S+?)\.\Z")
_GUIDE_ADDED = re.compile(r"Added request '([^']+)' with prompt length (\d+) tokens, multi-modal data count (\d+)")
_GUIDE_FINISHED = re.compile(r"Finished request '([^']+)', total tokens: (\d+), latency: ([\d.]+)s")
_GUIDE_TOKEN = re.compile(r"Generated token (\d+) for request '([^']+)': (.*)\Z", re.S)
_GUIDE_FORWARD = re.compile(r"Running model forward pass for request '([^']+)'")
_GUIDE_FWD_ERR = re.compile(r"Error in model forward pass for request '([^']+)'")
_ABORTED = re.compile(r"Aborted request(?:\(s\))? (.+?)\.\Z")
_REQ_STATE = re.compile(r"Request (\S+?) (aborted|failed)(?: \(([^)]*)\))?(?:(?::| due to) (.*))?\.\Z", re.S)
# `Request ID aborted.` and the like whose ID (the client's X-Request-Id) has a space: the last of the
# server's words ends it (tried only when the plain pattern failed, on a line that is no details line)
_REQ_STATE_SPACED = re.compile(r"Request (.+) (aborted|failed)(?: \(([^)]*)\))?(?:(?::| due to) (.*))?\.\Z", re.S)
# An id as the server makes them (`chatcmpl-` + hex, the sub-request's `-hex` suffixes): no words
# in it. Anything else is the client's X-Request-Id, which a failed line would hand to the rules.
_SERVER_ID = re.compile(r"[a-z]{1,16}-[0-9a-f]{6,64}(?:-[0-9a-f]{1,16})*\Z")
_FINISHED = re.compile(r"Finished request (\S+?)\.\Z")
_GENERATED = re.compile(r"Generated response (\S+?)( \(streaming (?:delta|complete)\))?(?: details)?: (.*)\Z", re.S)
_FINISH_REASON = re.compile(r"finish_reason: (\w+)\s*\Z")
_MAX_TOKENS = re.compile(r"max_tokens=(\d+)")
_OUTPUT_TOKEN_IDS = re.compile(r"output_token_ids: \[([^\]]*)\]")
_SCHEDULER_DUMP = "Dumping scheduler output for model execution: "
# protocol.py: the request's keys it has no field for, as a set (`{'max_pixels', 'fps'}`): the client's JSON keys
_IGNORED_FIELDS = "The following fields were present in the request but ignored: "
# chat_utils.py: `Skipping multimodal part '%s' (type: '%s') with empty / unparsable content.`: the part is the
# client's (a text part with a misspelt key holds its text); the type is one the server knows
_SKIPPED_PART = "Skipping multimodal part '"
# A tool or reasoning parser's DEBUG lines (`delta_text: %s`, hermes and most others): the model's output, raw
_PARSER_LABEL = re.compile(r"[A-Za-z_][\w ]{0,39}: ")
_TOKEN_IDS = re.compile(r"prompt(?:_token_ids| token ids): \[([^\]]*)\]")  # with spaces: vLLM 0.2
_STATS_V0 = re.compile(
    r"Avg prompt throughput: ([\d.]+) tokens/s, Avg generation throughput: ([\d.]+) tokens/s, "
    r"Running: (\d+) reqs, Swapped: (\d+) reqs, Pending: (\d+) reqs, GPU KV cache usage: ([\d.]+)%"
)
_STATS_PART = re.compile(r"([A-Za-z][\w +/]*?): ([\d.]+)(?: reqs| tokens/s|%)?\Z")


def parse(text: str, ctx: Ctx) -> Parsed | None:
    m = RX.match(text)
    if m is None:
        if ctx.proc == "kserve.trace" and text[:1] in "RAFG":  # KServe: vLLM's request logger's lines, no prefix
            ev = Event(ctx.path, 0, NAME, E.LOG, "INFO", None, text, ctx.proc, ctx.pid)
            classify(ev, text)
            return (ev, None) if ev.kind != E.LOG else None
        if " - vllm" in text[19:30]:
            return _named(text, ctx)
        return None
    level, stamp, ms, src, msg = m.groups()
    ts = stamp_time(stamp, ctx)
    if ts is not None and ms:
        ts += int(ms) / 1000.0
    return _record(ctx, level, ts, msg, src), (ctx.proc, ctx.pid, level, stamp, src)


def _record(ctx: Ctx, level: str, ts: float | None, msg: str, src: str) -> Event:
    """The event of one record (`src`: its file:line, or the logger's name), its message classified."""
    ev = Event(ctx.path, 0, NAME, E.LOG, level, ts, msg, ctx.proc, ctx.pid, src)
    if msg:
        classify(ev, msg)
        if level == "DEBUG" and ("tool_parser" in src or "reasoning_parser" in src):
            _parser_output(ev, msg)
    return ev


def _parser_output(ev: Event, msg: str) -> None:
    """A tool or reasoning parser's DEBUG line logs what the model wrote (`delta_text: …`, streamed,
    raw: its newlines start lines of their own): its label kept, the rest the model's, to the
    server's next line (`user_tail`)."""
    m = _PARSER_LABEL.match(msg)
    ev.text = usercontent.mask(msg, m.end() if m else 0, None, "output", ev.fields)
    ev.fields["user_tail"] = True


def _named(text: str, ctx: Ctx) -> Parsed | None:
    m = NAMED.match(text)
    if m is None:
        return None
    y, mo, d, hh, mi, ss, ms, logger, level, msg = m.groups()
    ts = ctx.clock.local(int(y), int(mo), int(d), int(hh), int(mi), int(ss))
    if ts is not None and ms:
        ts += int(ms) / 1000.0
    return _record(ctx, level, ts, msg, logger), None  # no continuation key: such a config has no vLLM prefix to repeat on a record's lines


def stamp_time(stamp: str, ctx: Ctx) -> float | None:
    """Epoch seconds of an `MM-DD HH:MM:SS` stamp, computed once per distinct second."""
    st = ctx.state
    if st.get("vllm_stamp") == stamp:  # lines come in bursts within one second
        return st["vllm_ts"]
    head = stamp[:11]  # "MM-DD HH:MM": a quiet server's next second is usually in the same minute
    f = st.get("vllm_head")
    if f is None or f[0] != head:
        f = st["vllm_head"] = (head, int(stamp[0:2]), int(stamp[3:5]), int(stamp[6:8]), int(stamp[9:11]))
    ts = ctx.clock.yearless(f[1], f[2], f[3], f[4], int(stamp[12:14]))
    st["vllm_stamp"], st["vllm_ts"] = stamp, ts
    return ts


def classify(ev: Event, msg: str) -> None:
    """Set kind and fields from the message; dispatch on the first word keeps this cheap."""
    c = msg[0]
    f = ev.fields
    if c == "R":
        if msg.startswith("Received request "):
            m = received(msg, f)
            if m:
                ev.kind = E.RECEIVED
                ev.text = usercontent.mask(msg, m.start(2), None, "request", f)  # prompt, params (stop strings…)
            else:  # an id with a space (a client's X-Request-Id): no trace, and nothing of it to the rules
                ev.text = usercontent.mask(msg, 17, None, "request", f)
                if ": " not in msg:
                    # The id ran into a newline (0.6.4+ logs the body's request_id): the rest of the
                    # message, the rest of the client's id first, is on the next lines, behind the same
                    # prefix. Their \r marks them as its own; a file whose every line ends in \r\n
                    # (unix2dos, PowerShell) has lost that mark, and this one says it instead.
                    f["user_rest"] = True
            return
        if msg.startswith("Request "):
            m = _REQ_STATE.match(msg)
            if m is None and " details: " not in msg and " JSON body: " not in msg:
                if len(msg) >= 4096:  # the spaced pattern is quadratic past that: a client's id this long (a
                    if " aborted" in msg or " failed" in msg:  # header may be 16 kB) is masked whole
                        ev.text = usercontent.mask(msg, 8, None, "request-id", f)
                        return
                else:
                    m = _REQ_STATE_SPACED.match(msg)  # the client's id has a space: it ends at the server's words
                if m:  # no trace has it (its Received line gave none); the id, and a message that may be more of it, masked
                    ev.text = usercontent.mask(msg, 8, m.end(4) if m.group(4) else m.end(1), "request-id", f)
                    return
            if m:
                failed = m.group(2) == "failed"
                ev.kind = E.FAILED if failed else E.ABORTED
                rid = f["request_id"] = m.group(1)
                if m.group(3):
                    f["reason"] = clean(m.group(3), 200)
                    if m.group(4):  # `failed (bad request): …`: a validation error, which quotes the request
                        ev.text = usercontent.mask(msg, m.start(4), m.end(4), "error", f)
                elif m.group(4) and failed:
                    f["reason"] = clean(m.group(4), 200)  # an error message may echo the input
                if failed and _SERVER_ID.match(rid) is None:  # rules read failed lines: not the client's id
                    ev.text = usercontent.mask(ev.text, 8, m.end(1), "request-id", f)
                return
            m = _DETAILS.match(msg)
            if m:
                ev.kind = E.RECEIVED
                f["request_id"] = m.group(1)
                f["detail"] = True
                _measure_received(m.group(2), f)
                ev.text = usercontent.mask(msg, m.start(2), None, "request", f)
                return
            m = _JSON_BODY.match(msg)
            if m:  # DEBUG (0.32): the body as the client sent it, whatever its keys (a rerank's `query`)
                if not usercontent.masked_to_end(msg, m.end()):  # (one with `messages` is masked already)
                    ev.text = usercontent.mask(msg, m.end(), None, "body", f)
                if msg[m.end():].strip() in ("{", "["):
                    f["user_rest"] = True  # pretty-printed: the body is on the next lines (see the Received case)
            elif " details: " in msg or " JSON body: " in msg:  # an id with a space
                ev.text = usercontent.mask(msg, 8, None, "request", f)
            return
        if msg.startswith("Running model forward pass for request "):
            m = _GUIDE_FORWARD.match(msg)
            if m:
                ev.kind = E.STARTED
                f["request_id"] = m.group(1)
    elif c == "A":
        if msg.startswith("Added request "):
            rid = added_id(msg)
            if rid is not None:
                ev.kind = E.ADDED
                f["request_id"] = rid
                return
            m = _GUIDE_ADDED.match(msg)
            if m:
                ev.kind = E.RECEIVED
                f["request_id"] = m.group(1)
                f["prompt_tokens"] = to_int(m.group(2))
                f["images"] = to_int(m.group(3))
                f["added"] = True
            else:  # an id with a space (the client's): nothing of it to the rules
                ev.text = usercontent.mask(msg, 14, len(msg) - msg.endswith("."), "request-id", f)
        elif msg.startswith("Aborted request"):
            m = _ABORTED.match(msg)
            if m:
                ev.kind = E.ABORTED
                f["request_id"] = m.group(1).strip()
                if "," in m.group(1):  # several ids, joined with ","; or one a client chose with a comma in it:
                    # the trace assembler tells which from the requests it knows (`_aborted_listed`)
                    f["request_ids"] = [i.strip() for i in m.group(1).split(",") if i.strip()]
        elif msg.startswith("Avg prompt throughput"):
            _stats(ev, msg)
    elif c == "E":
        if msg.startswith("Engine ") and ": Avg" in msg[:24]:
            _stats(ev, msg)
        elif msg.startswith("Error in model forward pass for request "):
            m = _GUIDE_FWD_ERR.match(msg)
            if m:
                ev.kind = E.FAILED
                f["request_id"] = m.group(1)
                f["reason"] = "model forward pass error"
    elif c == "G":
        if msg.startswith("Generated response "):
            m = _GENERATED.match(msg)
            if m:
                ev.kind = E.OUTPUT
                f["request_id"] = m.group(1)
                mode = m.group(2) or ""
                f["streaming"] = "delta" in mode and "delta" or ("complete" in mode and "complete") or None
                r = _FINISH_REASON.search(m.group(3)[-80:])  # anchored at the end: after the output
                if r:
                    f["finish_reason"] = r.group(1)
                ids = _OUTPUT_TOKEN_IDS.search(after_text(m.group(3), "output: "))
                if ids is not None:
                    f["output_tokens"] = ids.group(1).count(",") + 1 if ids.group(1).strip() else 0
                ev.text = usercontent.mask(msg, m.start(3), None, "output", f)
            else:  # an id with a space (the client's): no trace, and neither it nor the output to the rules
                ev.text = usercontent.mask(msg, 19, None, "output", f)
        elif msg.startswith("Generated token "):
            m = _GUIDE_TOKEN.match(msg)
            if m:
                ev.kind = E.OUTPUT
                f["request_id"] = m.group(2)
                f["token_index"] = to_int(m.group(1))
                f["token_text"] = literal(m.group(3)[:200]) or ""  # transient: read once by the trace assembler, never kept
                ev.text = usercontent.mask(msg, m.start(3), None, "output", f)
    elif c == "F":
        if msg.startswith("Finished request "):
            m = _FINISHED.match(msg)
            if m:
                ev.kind = E.FINISHED
                f["request_id"] = m.group(1)
                return
            m = _GUIDE_FINISHED.match(msg)
            if m:
                ev.kind = E.FINISHED
                f["request_id"] = m.group(1)
                f["total_tokens"] = to_int(m.group(2))
                f["latency_s"] = to_float(m.group(3))
            else:  # an id with a space (the client's)
                ev.text = usercontent.mask(msg, 17, len(msg) - msg.endswith("."), "request-id", f)
    elif c == "T" and msg.startswith(_IGNORED_FIELDS):
        ev.text = usercontent.mask(msg, len(_IGNORED_FIELDS), None, "fields", f)
    elif c == "D" and msg.startswith(_SCHEDULER_DUMP):  # on a crash: request ids, and new requests' parameters
        ev.text = usercontent.mask(msg, len(_SCHEDULER_DUMP), None, "scheduler-output", f)  # (stop strings)
    elif c == "S" and msg.startswith(_SKIPPED_PART):
        end = msg.rfind("' (type: '")
        ev.text = usercontent.mask(msg, len(_SKIPPED_PART), end if end >= len(_SKIPPED_PART) else None, "content-part", f)
    elif c == "S" and msg.startswith("Sequence group ") and "preempted" in msg:
        f["request_id_preempted"] = msg.split(" ", 3)[2]


def received(msg: str, f: dict) -> re.Match | None:
    """`Received request ID: …`: the request id and what can be measured of the request (never
    its text) into `f`; the match says where the request's part of the message starts."""
    m = _RECEIVED.match(msg)
    if m:
        f["request_id"] = m.group(1)
        _measure_received(m.group(2), f)
    return m


def received_known(msg: str, rid: str, f: dict) -> None:
    """`received` of a message whose request id the fast path's classifier read already (printable
    ASCII, so `_RECEIVED` would have matched it): the same fields, without the match."""
    f["request_id"] = rid
    _measure_received(msg[19 + len(rid):], f)  # after "Received request <rid>: "


def added_id(msg: str) -> str | None:
    """The engine's request id of an `Added request ID.` message."""
    m = _ADDED.match(msg)
    return None if m is None else m.group(1)


def _measure_received(rest: str, f: dict) -> None:
    """Count images and characters of a logged prompt without keeping it.

    The prompt comes first (`prompt: '…', params: SamplingParams(…), prompt_token_ids: […]`) and
    is the user's text: `max_tokens=` and `prompt_token_ids: [` are looked for only after its
    closing quote, and outside the quoted values of the parameters (stop strings, a structured
    output's schema: the user's too). A prompt whose end cannot be found (a line cut at the length
    cap, a quote that closes no literal) leaves them unknown rather than read out of what the user wrote."""
    end = text_end(rest, "prompt: ")
    if end:
        prompt = None if end < 0 else literal(rest[8:end])
        if prompt is None:  # no literal ends there: where the user's text ends is not known
            return
        f["prompt_chars"] = len(prompt)
        f["images"] = count_images(prompt)
        rest = rest[end:]
    # str.find, then the pattern where it points: what .search would find, without running the
    # regex engine along the whole line (a sampling-parameters line is hundreds of characters)
    # no quote in the parameters (the usual `stop=[]`): a plain find is the one outside literals (a
    # compiled build calls PyUnicode_Find for it; a find with start and end parses its arguments)
    plain = "'" not in rest and '"' not in rest
    i = rest.find("max_tokens=") if plain else unquoted_find(rest, "max_tokens=")
    n = len(rest)
    while i >= 0:
        # the ASCII digits after it, read in place (a compiled build reads them as C characters);
        # any other digit `\d` would take, or none, goes to the regex
        j = k = i + 11
        while k < n and rest[k] in "0123456789":
            k += 1
        if k > j and (k == n or not rest[k].isdecimal()):
            f["max_tokens"] = to_int(rest[j:k])  # bounded: 30 digits at most, else unknown
            break
        mt = _MAX_TOKENS.match(rest, i)
        if mt:
            f["max_tokens"] = to_int(mt.group(1))  # bounded: 30 digits at most, else unknown
            break
        i = rest.find("max_tokens=", i + 1) if plain else unquoted_find(rest, "max_tokens=", i + 1)
    i = rest.find("prompt_token_ids: [") if plain else unquoted_find(rest, "prompt_token_ids: [")  # when the first has no "]" after it, no later one has
    if i < 0:
        i = rest.find("prompt token ids: [") if plain else unquoted_find(rest, "prompt token ids: [")  # vLLM 0.2 (`sampling params: …, prompt token ids: […]`)
    ids = None if i < 0 else _TOKEN_IDS.match(rest, i)
    if ids is not None:
        body = ids.group(1).strip()
        f["prompt_tokens"] = body.count(",") + 1 if body else 0


def count_images(prompt: str) -> int:
    if "image" not in prompt:  # each placeholder spells it: one search for a prompt without one
        return 0
    for ph in IMAGE_PLACEHOLDERS:
        n = prompt.count(ph)
        if n:
            return n
    return 0


def _stats(ev: Event, msg: str) -> None:
    ev.kind = E.STATS
    f = ev.fields
    m = _STATS_V0.search(msg) if "Swapped: " in msg else None  # the V0 line's; a search fails slowly
    if m:
        f.update(
            prompt_tps=to_float(m.group(1)), gen_tps=to_float(m.group(2)), running=to_int(m.group(3)),
            swapped=to_int(m.group(4)), waiting=to_int(m.group(5)), kv_usage=to_float(m.group(6)),
        )
        return
    body = msg.split(": ", 1)[1] if msg.startswith("Engine") else msg
    for part in body.rstrip(".").replace(" reqs GPU", " reqs, GPU").split(", "):
        pm = _STATS_PART.match(part.strip())
        if not pm:
            continue
        key, val = pm.group(1).lower(), pm.group(2)
        if key == "avg prompt throughput":
            f["prompt_tps"] = to_float(val)
        elif key == "avg generation throughput":
            f["gen_tps"] = to_float(val)
        elif key in ("running", "waiting", "preemptions", "deferred", "swapped", "pending"):
            f[key] = to_int(val)
        elif key.endswith("kv cache usage"):
            f["kv_usage"] = to_float(val)
        elif key == "prefix cache hit rate":
            f["prefix_hit"] = to_float(val)
        elif key == "mm cache hit rate":
            f["mm_hit"] = to_float(val)
