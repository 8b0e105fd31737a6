"""Literal prefilters for rule patterns.

Most log lines match no rule. Running every pattern on every line is what makes naive log
scanners slow, so each pattern is reduced to literals one of which every match must contain
(one per top-level alternative); a rule's patterns run only when one of its literals is in the
line. The derivation is conservative: where a pattern has no safe literal, it gets none and
always runs. Each rule's positive examples prove its prefilter sound (`diag rules test`).
"""

from __future__ import annotations

import re

# Inline flags change what a literal means: (?i) case, (?x) whitespace, (?s)/(?m) are harmless
# but cheap to treat alike. `(?P<name>`, `(?P=name)` and lookarounds are not flags.
_INLINE_FLAGS = re.compile(r"\(\?(?!P[<=>])[a-zA-Z^-]")
# A leading global `(?m)` / `(?s)` / `(?ms)` only moves where `^`, `$` and `.` match: the literals
# a match must contain are the same, so the rest of the pattern is analysed as if it were absent.
_HARMLESS_LEAD = re.compile(r"\(\?[ms]+\)")
# Escapes longer than two characters (\x20, \u00e9, \N{...}, \p{L}, \g<1>, \k<n>, \1, \012):
# what they match is not their spelling, so a pattern using them gets no needle.
_LONG_ESCAPES = frozenset("xuUNpPgk0123456789")
# `{m}`, `{m,}`, `{,n}`, `{m,n}` and the regex module's fuzzy constraints (`{e<=1}`): the only
# spellings of `{` that repeat what comes before it.
_QUANTIFIER = re.compile(r"\{(?:\d+(?:,\d*)?|,\d+|[eisd\d\s<=>+*,]*[<=>][eisd\d\s<=>+*,]*)\}")
_POSIX_CLASS = re.compile(r"\[:\^?[A-Za-z]+:\]")


# Lines a healthy busy server writes all day (real lines from tests/data/corpus): a literal found in
# them would send every such line to the rule's regex, so a needle is taken from these only when
# the alternative has no other (`HTTP/` loses to `" 404`, `"POST /v1/` to `" 50`).
_EVERYDAY = "\n".join((
    "(APIServer pid=4638) INFO 11-22 17:58:03 [request_logger.py:65] Received request chatcmpl-a923ad8365229778: params: "
    "SamplingParams(n=1, presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0, temperature=1.0, "
    "watermarking=None, top_p=1.0, top_k=0, min_p=0.0, seed=None, stop=[], stop_token_ids=[], bad_words=[], "
    "thinking_token_budget=None, include_stop_str_in_output=False, ignore_eos=False, max_tokens=16, min_tokens=0, "
    "logprobs=None, prompt_logprobs=None, skip_special_tokens=True, spaces_between_special_tokens=True, "
    "structured_outputs=None, extra_args=None), lora_request: None.",
    "(APIServer pid=4638) INFO 11-22 17:58:03 [async_llm.py:578] Added request chatcmpl-a923ad8365229778-b80d360a.",
    "(APIServer pid=4638) INFO 11-22 17:58:05 [loggers.py:259] Engine 000: Avg prompt throughput: 402.6 tokens/s, "
    "Avg generation throughput: 38.1 tokens/s, Running: 2 reqs, Waiting: 0 reqs, GPU KV cache usage: 0.4%, "
    "Prefix cache hit rate: 12.5%, MM cache hit rate: 50.0%",
    'INFO:     10.0.0.5:41234 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
    'INFO:     127.0.0.1:48268 - "GET /health HTTP/1.1" 200 OK',
    'INFO:     127.0.0.1:48270 - "GET /v1/models HTTP/1.1" 200 OK',
    '127.0.0.1 - - [22/Aug/2026:10:15:20 +0000] "POST /v1/completions HTTP/1.1" 200 1670 "-" "python-requests/2.32.3"',
    "2026-08-22 10:15:02,114 - lmdeploy - INFO - async_engine.py:582 - session=0, input_tokens=38, max_new_tokens=512, prep=True",
    "slot launch_slot_: id  3 | task 0 | processing task",
    "srv  update_slots: all slots are idle",
))


def literal_needle(pattern: str) -> str | None:
    """A literal run every match must contain, or None when there is no safe one.

    Of the runs of at least 4 characters, one that everyday lines (`_EVERYDAY`) do not contain
    is preferred, then the longest. Only top-level text is considered, plus the text of groups
    that are neither repeated nor optional and hold no alternation (`" (?P<status>50[24])`
    gives `" 50`): anything inside other groups or after a top-level `|` is optional, so such
    patterns get no needle (see `literal_needles`).
    """
    if "|" in _top_level(pattern) or _unsafe(pattern):
        return None
    runs: list[str] = []
    cur: list[str] = []
    opaque = 0  # enclosing groups whose text a match need not contain
    groups: list[bool] = []  # per open group: does it hide its text (True) or not
    i = 0
    n = len(pattern)

    def cut() -> None:
        if cur:
            runs.append("".join(cur))
            cur.clear()

    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nx = pattern[i + 1]  # never a long escape: _unsafe() turned those away above
            if opaque == 0 and not nx.isalnum():
                cur.append(nx)
            else:
                cut()
            i += 2
            continue
        if c == "[":
            i = _class_end(pattern, i)
            cut()
            continue
        if c == "(":
            body = _transparent_body(pattern, i)
            if opaque == 0 and body is not None:
                groups.append(False)
                i = body
                continue
            groups.append(True)
            opaque += 1
            cut()
        elif c == ")":
            if groups and groups.pop():
                opaque -= 1
                cut()
        elif c in "*?{":
            if cur:
                cur.pop()  # the quantified character is optional
            cut()
            if c == "{":
                q = _QUANTIFIER.match(pattern, i)
                if q is None:
                    return None  # a `{` that repeats nothing, or a form this walk does not know: no needle
                i = q.end()
                continue
        elif c == "+" or c in ".^$":
            cut()
        elif opaque == 0:
            cur.append(c)
        i += 1
    cut()
    runs = [r for r in runs if len(r) >= 4]
    if not runs:
        return None
    return max(runs, key=lambda r: (r not in _EVERYDAY, len(r)))


def _transparent_body(pattern: str, i: int) -> int | None:
    """Where the body of the group opening at `i` starts, when every match contains its text
    (a plain, `(?:` or `(?P<name>` group with no alternation of its own, not followed by a
    quantifier); None otherwise (lookarounds, backreferences, optional or repeated groups)."""
    start = _body_start(pattern, i)
    if start is None:
        return None
    for j, c, d in _structure(pattern[i:]):
        if c == "|" and d == 1:
            return None
        if c == ")" and d == 0:
            after = pattern[i + j + 1:i + j + 2]
            return None if after and after in "*?+{" else start
    return None


def literal_needles(pattern: str) -> tuple[str, ...] | None:
    """Literals one of which every match contains: one per top-level alternative.

    `a|b|c` needs a needle in each alternative; a pattern wrapped whole in `(?:…)` is looked
    into. None when some alternative has no literal to look for (the rule then always runs).
    """
    lead = _HARMLESS_LEAD.match(pattern)
    if lead is not None:
        pattern = pattern[lead.end():]
    if _unsafe(pattern):
        return None
    inner = _unwrap(pattern)
    if inner is not None:
        return literal_needles(inner)
    alts = _split_top(pattern)
    out = []
    for alt in alts:
        n = literal_needle(alt)
        if n is None:
            inner = _unwrap(alt)
            sub = literal_needles(inner) if inner is not None else None
            if sub is None:
                return None
            out.extend(sub)
        else:
            out.append(n)
    return tuple(out)


def _structure(pattern: str):
    """(index, char, depth) of each unescaped character outside a character class: the one
    walk over a pattern's structure that the needle helpers share."""
    depth, i, n = 0, 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i = _class_end(pattern, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        yield i, c, depth
        i += 1


def _split_top(pattern: str) -> list[str]:
    """Top-level alternatives: `a|(b|c)|d` → `a`, `(b|c)`, `d`."""
    parts, start = [], 0
    for i, c, depth in _structure(pattern):
        if c == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    parts.append(pattern[start:])
    return parts


def _unwrap(pattern: str) -> str | None:
    """`(?:X)` or `(?P<n>X)` spanning the whole pattern → X; else None."""
    if not pattern.startswith("(") or not pattern.endswith(")") or pattern.endswith("\\)"):
        return None
    for i, c, depth in _structure(pattern):
        if c == ")" and depth == 0 and i != len(pattern) - 1:
            return None  # the first group closes before the end: `(a)b(c)`
    start = _body_start(pattern, 0)
    return None if start is None else pattern[start:-1]


def _body_start(pattern: str, i: int) -> int | None:
    """Where the text of the group opening at `i` begins: after `(`, `(?:` or `(?P<name>`; None for
    the groups whose spelling is not text a match contains (lookarounds, backreferences, flags)."""
    if pattern.startswith("(?:", i):
        return i + 3
    if pattern.startswith("(?P<", i):
        gt = pattern.find(">", i)
        return None if gt < 0 else gt + 1
    if pattern.startswith("(?", i):
        return None
    return i + 1


def _top_level(pattern: str) -> str:
    """The characters of a pattern outside any group or class."""
    return "".join(c for _, c, depth in _structure(pattern) if depth == 0 and c not in "()")


def _unsafe(pattern: str) -> bool:
    """Inline flags, comments or escapes that make a pattern's spelling differ from what it matches
    (a `(?#…)` comment may sit between a group and the quantifier that makes it optional)."""
    if _INLINE_FLAGS.search(pattern) or "(?#" in pattern:
        return True
    i = pattern.find("\\")
    while i >= 0 and i + 1 < len(pattern):
        if pattern[i + 1] in _LONG_ESCAPES:
            return True
        i = pattern.find("\\", i + 2)
    return False


def _class_end(pattern: str, i: int) -> int:
    """Index just past the character class opening at `i` (`[^\\]]`, `[]a]`, `[^]a]` included)."""
    n = len(pattern)
    j = i + 1
    if j < n and pattern[j] == "^":
        j += 1
    if j < n and pattern[j] == "]":
        j += 1  # a leading ] is a literal member
    while j < n:
        c = pattern[j]
        if c == "\\":
            j += 2
            continue
        if c == "[":  # a POSIX class [:alpha:] inside the set, only when it is spelt as one
            m = _POSIX_CLASS.match(pattern, j)
            if m is not None:
                j = m.end()
                continue
        if c == "]":
            return j + 1
        j += 1
    return n
