"""Chunk → lines → compact records: the part of the hot path that touches every byte.

`split_classify` takes a block of complete lines (no trailing newline) and returns, per line,
either a tuple for one of the lifecycle lines a busy server writes almost exclusively, or the
line's raw bytes for the full parser:

* `(RECEIVED|ADDED, raw, proc, pid, stamp, src, msg, text, start, rid, plain, wrap)`: a vLLM `INFO`
  record (0.6 – 0.33 prefix, with or without the `(APIServer pid=N) ` tag) whose message starts
  `Received request ` or `Added request `;
* `(ACCESS, raw, client, method, path, status, msg, text, start, None, plain, wrap)`: a uvicorn
  `INFO:` access line.

Either may come after what a container runtime or `docker logs --timestamps` puts first (a time
with a zone, `2026-11-22T18:27:00.123456789Z `: `diag.parsing.wrappers.DOCKER_TS`) or what
journalctl does (`Nov 22 18:27:00[.123456] host unit[pid]: `, an English month:
`wrappers.JOURNAL`), which the full path takes off first: `wrap` is that prefix as written, its
last space included (the caller reads it as `wrappers.strip` does: the time of a line without one
of its own, journald's pid and indent), else None. `text` is the line as the format parsers would get it (wrappers off), `msg` its
message part, `start` the length of what was taken off before `text` (the runtime's time, the
(ASCII) process tag). `rid` is the request id when it is
printable ASCII (what `vllm.received` / `vllm.added_id` would read; None: let them read it).
`plain` is True when the line certainly holds nothing `usercontent.scrub` would take out: none of
its markers (`?`, `://`, `data:`, `{` with `:`, `input_value=`) and no request line — except, on an
access line, its own one, which is then left to the caller to check (`usercontent.kept_path` of
its path: the one thing the bytes cannot say). False: ask `scrub`. Finding the markers here, in
the pass that has the bytes at hand, spares the fast path a scrub per line.

A line is only given a tuple when the full path (wrappers, format parsers, multi-line records)
would read it the same way: ASCII header, no carriage return, escape or NUL byte, no bidirectional
control character (`diag.ingest.reader.normalise` takes those out), no Ray repeat
suffix, no trailing `:` that could open a multi-line record, no mark of a paste (a leading `>` or
`$`, a closing ``` or `**`). Whoever changes what `SourceParser.feed` does to a line before the
format parsers see it changes this list too; tests/test_fastpath.py compares both on fuzzed logs. Everything else — warnings, errors,
tracebacks, other formats, anything unusual — goes to the full parser and the rules whole.

This module is plain Python on purpose: it is the pure path, and the reference. Its typed twin,
`_classify_c.pyx` (built by setup.py with Cython when a compiler is there; see
`diag.ingest.fastpath`), checks the same conditions in C without `re`; whoever changes a pattern
or a condition here changes it there too. tests/test_classify_twins.py holds the two to the same
records on generated near-miss lines, tests/test_fastpath.py on the corpus and fuzzed logs.
"""

import re

from diag.parsing.base import MAX_DIGITS
from diag.parsing.usercontent import REQUEST_METHODS

RECEIVED = 1
ADDED = 2
ACCESS = 3

_VLLM = re.compile(
    rb"(?:\(([A-Za-z_][\x20-\x27\x2a-\x7e]*?) pid=([0-9]+)\) )?INFO "
    rb"([0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]) \[?([\x21-\x5c\x5e-\x7e]+?:[0-9]+)\] "
)
_ACCESS = re.compile(rb'INFO: +([0-9][\x21-\x7e]*) - "([A-Z]+) ([\x21-\x7e]+) HTTP/[0-9.]+" ([0-9][0-9][0-9])(?: .*)?\Z', re.S)
# the request id, when it is printable ASCII (`\S+?` of vllm's own patterns then reads the same)
_RECEIVED_ID = re.compile(rb"Received request ([\x21-\x7e]+?): ")
_ADDED_ID = re.compile(rb"Added request ([\x21-\x7e]+)\.\Z")
# the request lines `usercontent.scrub` looks at
_METHODS = frozenset(m.encode("ascii") for m in REQUEST_METHODS)
# a bidirectional control (`diag.ingest.reader.BIDI_CONTROLS`) in UTF-8: U+202A-U+202E, U+2066-U+2069
_BIDI = re.compile(rb"\xe2(?:\x80[\xaa-\xae]|\x81[\xa6-\xa9])")
# wrappers.DOCKER_TS with a zone (without one it is local time: the full path's to read), ASCII digits
_TS = re.compile(rb"([0-9]{4}-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9](?:\.[0-9]+)?(?:Z|[+-][0-9][0-9]:?[0-9][0-9])) ")
# wrappers.JOURNAL with an English month (journalctl's default locale), an ASCII host and unit
_JOURNAL = re.compile(rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9](?:\.[0-9]+)? "
                      rb"[\x21-\x7e]+ [\x21-\x39\x3b-\x5a\x5c-\x7e]+(?:\[[0-9]+\])?: ")


def _no_markers(t: str) -> bool:
    """Has the text none of `usercontent.scrub`'s markers but request lines (a model's name
    before `does not exist`, a parser's quote after `Failed to parse ` or `last read: '`
    among them)? (Asked of the decoded
    text: `bytes in bytes` first tries its operand as an int and raises and clears a TypeError,
    which costs more than the search. The markers are ASCII: decoding makes or breaks none.)"""
    return not ("?" in t or "://" in t or "data:" in t or ("{" in t and ":" in t) or "input_value=" in t
                or "does not exist" in t or "Failed to parse " in t or "last read: '" in t)


def split_classify(body: bytes, max_line: int, crlf: bool = False) -> list:
    """Records (tuples) or raw bytes, one per line of `body` (lines joined by `\\n`).

    `crlf`: the source's lines end in `\\r\\n` (`LineSplitter.crlf`). Only a line that ends in one
    `\\r` can then get a tuple, read without it: its `raw` is the line without the `\\r` (the
    caller counts it); any other line is handed over whole, `\\r` and all."""
    out = []
    append = out.append
    vllm_match = _VLLM.match
    access_match = _ACCESS.match
    for raw in body.split(b"\n"):
        n = len(raw)
        if crlf:
            if n > max_line or raw[-1:] != b"\r":
                append(raw)
                continue
            whole, raw = raw, raw[:-1]
            n -= 1
        else:
            whole = raw
        if (n > max_line or n < 24 or 13 in raw or 27 in raw or 0 in raw or raw.endswith(b"cluster]")  # \r ESC NUL, as ints (see _no_markers)
                or raw[-1] in b"*`"  # a paste's closing ``` or ** (diag.parsing.paste) is taken off first
                or (226 in raw and _BIDI.search(raw) is not None)):  # 0xe2: a bidi control, which normalise takes out
            append(whole)
            continue
        w, wrap, first = 0, None, raw[0]
        stamped = 48 <= first <= 57  # a runtime's time first? (or journalctl's `Mon dd hh:mm:ss `?)
        if stamped or (raw[3] == 32 and 65 <= first <= 90):
            t = (_TS if stamped else _JOURNAL).match(raw)
            # (24: the length of a time after which wrappers.strip tries KServe's logger names)
            if t is None or t.end() >= n or (stamped and t.end() == 24 and raw[19] == 46):
                append(whole)
                continue
            w = t.end()
            wrap = raw[:w].decode("ascii")
        c = raw[w]
        if c == 40 or raw.startswith(b"INFO ", w):  # "(" : a process tag
            m = vllm_match(raw, w)
            if m is None or (stamped and m.group(1) is not None and b"[" in m.group(1)):  # (journalctl's `unit[pid]: `, read after a time)
                append(whole)
                continue
            msg = raw[m.end():]
            if msg.startswith(b"Received request "):
                kind = RECEIVED
            elif msg.startswith(b"Added request "):
                kind = ADDED
            else:
                append(whole)
                continue
            if msg.endswith((b":", b": ", b":\t")):
                append(whole)
                continue
            proc, pid, stamp, src = m.groups()
            if pid is not None and len(pid) > MAX_DIGITS:  # the full parser's to_int gives None (int() would raise past 4300)
                append(whole)
                continue
            start = m.start(3) - 5  # "INFO ": where the text after the process tag begins
            text = raw[start:].decode("utf-8", "replace")
            r = (_RECEIVED_ID.match if kind == RECEIVED else _ADDED_ID.match)(raw, m.end())
            append((kind, raw, None if proc is None else proc.decode("ascii"), None if pid is None else int(pid),
                    stamp.decode("ascii"), src.decode("ascii"), text[m.end() - start:], text, start,
                    None if r is None else r.group(1).decode("ascii"), " /" not in text and _no_markers(text), wrap))
        elif c == 73 and raw.startswith(b"INFO:", w):  # "I"
            m = access_match(raw, w)
            if m is None or raw.endswith((b":", b": ", b":\t")):
                append(whole)
                continue
            client, method, path, status = m.groups()
            text = raw[w:].decode("utf-8", "replace")
            plain = method in _METHODS and path[0] == 47 and text.count(" /") == 1 and _no_markers(text)  # 47: "/"
            append((ACCESS, raw, client.decode("ascii"), method.decode("ascii"), path.decode("ascii"), int(status),
                    text[m.start(1) - w:], text, w, None, plain, wrap))
        else:
            append(whole)
    return out
