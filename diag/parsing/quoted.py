"""Quoted strings inside server lines: where one ends, and what a Python repr stands for.

Servers log the user's text quoted: vLLM a prompt or output as Python's `repr` (`prompt: '…'`,
`stop=['…']`), llama.cpp and proxies a request body's JSON strings. Whoever masks or measures
that text must know where it ends — a quote escaped by a backslash does not end it — and must
never read a field (`max_tokens=`) out of it. The one rule for "the closing quote" lives here, for
`diag.parsing.usercontent` (masking) and the vLLM parser (measuring) alike.
"""

from __future__ import annotations

import ast
import re
import warnings


def closing_quote(text: str, i: int, q: str) -> int:
    """The index of the first `q` at or after `i` that no backslash escapes (an even run of
    backslashes before it, counted back no further than `i`, the string's first character), or -1."""
    while True:
        j = text.find(q, i)
        if j < 0:
            return -1
        k = j
        while k > i and text[k - 1] == "\\":
            k -= 1
        if (j - k) % 2 == 0:
            return j
        i = j + 1


def repr_end(s: str, start: int, q: str) -> int:
    """Index just past the closing quote of the Python repr whose opening quote `q` is at `start`; -1: none."""
    j = closing_quote(s, start + 1, q)
    return -1 if j < 0 else j + 1


def unquoted_find(s: str, name: str, start: int = 0) -> int:
    """`s.find(name, start)` outside the Python string literals in `s` (`stop=['max_tokens=1']`),
    `start` being outside one; -1 when there is none, or a literal before it does not end. A line
    without a quote before `name` (the usual `stop=[]`) costs two character searches more."""
    j = s.find(name, start)
    if j < 0:
        return -1
    a = s.find("'", start, j)  # the next quote of each kind before `name` (-1: none), each found
    b = s.find('"', start, j)  # once: searched afresh per literal, many literals were quadratic
    while a >= 0 or b >= 0:
        q = a if b < 0 or 0 <= a < b else b
        start = repr_end(s, q, s[q])
        if start < 0:
            return -1
        if start > j:  # `name` was inside that literal: the next one after it
            j = s.find(name, start)
            if j < 0:
                return -1
            a = s.find("'", start, j)
            b = s.find('"', start, j)
        else:
            if a >= 0 and a < start:
                a = s.find("'", start, j)
            if b >= 0 and b < start:
                b = s.find('"', start, j)
    return j


def text_end(rest: str, label: str) -> int:
    """Where the user's quoted text that `rest` begins with (`prompt: '…'`, `output: '…'`) ends:
    the index just past its closing quote; -1 when that quote cannot be found (a line cut at the
    length cap); 0 when `rest` begins with no such text."""
    n = len(label)
    if not rest.startswith(label) or len(rest) <= n + 1 or rest[n] not in "'\"":
        return 0
    return repr_end(rest, n, rest[n])


def after_text(rest: str, label: str) -> str:
    """What follows the user's text that `rest` begins with (`output: '…', output_token_ids: […]`):
    the fields after it are read there and never out of the text. Empty when the text's closing
    quote cannot be found; `rest` itself when it has no such text."""
    end = text_end(rest, label)
    return rest if end == 0 else "" if end < 0 else rest[end:]


# The escapes repr() writes for printable text, newlines and tabs: a logged prompt almost never has
# others, and decoding these is ten times cheaper than a parse (ast.literal_eval, kept for the rest).
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
_SURROGATE = re.compile("[\ud800-\udfff]")  # a lone surrogate makes no literal (nor does a raw line end or NUL)


def _unescape(body: str) -> str | None:
    """The value of a quoted literal's `body` when it has no escape but `_ESCAPES`' and nothing that
    makes it unreadable; None: let Python's parser decide."""
    if "\n" in body or "\r" in body or "\x00" in body or (not body.isascii() and _SURROGATE.search(body) is not None):
        return None  # (isascii is a flag the string keeps: the pattern runs only on other text)
    if "\\" not in body:
        return body
    v = body.replace("\\n", "\n")  # a prompt's lines: when no backslash is left, each escaped an n
    if "\\" not in v:  # (the first of an escaped backslash is never followed by an n: it stays)
        return v
    parts = body.split("\\\\")  # escaped backslashes first, left to right as the tokenizer pairs them
    for i, part in enumerate(parts):
        if "\\" in part:
            pieces = part.split("\\")
            for j in range(1, len(pieces)):
                p = pieces[j]
                c = _ESCAPES.get(p[:1]) if p else None
                if c is None:
                    return None
                pieces[j] = c + p[1:]
            parts[i] = "".join(pieces)
    return "\\".join(parts)


def literal(s: str) -> str | None:
    """The string a quoted Python literal (a repr, quotes included) stands for, or None."""
    q = s[:1]
    if len(s) >= 2 and q in ("'", '"') and s[-1] == q:
        body = s[1:-1]
        if q not in body or q not in body.replace("\\\\", "").replace("\\" + q, ""):  # no quote ends it early
            v = _unescape(body)
            if v is not None:
                return v
    try:
        # `\d` in a prompt: a SyntaxWarning on stderr since Python 3.12. catch_warnings swaps the
        # process's filters for a moment (not thread-safe: a warning another thread raises just
        # then may go unshown); this path is rare: a repr with an escape `_unescape` leaves to Python.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v = ast.literal_eval(s)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # TypeError: `{{}}`
        return None
    return v if isinstance(v, str) else None
