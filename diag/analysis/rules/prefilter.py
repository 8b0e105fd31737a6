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


def literal_needle(pattern: str) -> str | None:
    """The longest literal run every match must contain, or None when there is no safe one.

    Only top-level text is considered: anything inside a group or after a top-level `|` makes
    the pattern's literals optional, so such patterns get no needle (see `literal_needles`).
    """
    if "|" in _top_level(pattern) or _unsafe(pattern):
        return None
    best, cur = "", []
    depth = 0
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nx = pattern[i + 1]  # never a long escape: _unsafe() turned those away above
            if depth == 0 and not nx.isalnum():
                cur.append(nx)
            else:
                best, cur = _keep(best, cur), []
            i += 2
            continue
        if c in "([":
            if c == "[":
                i = _class_end(pattern, i)
                best, cur = _keep(best, cur), []
                continue
            depth += 1
            best, cur = _keep(best, cur), []
        elif c == ")":
            depth -= 1
            best, cur = _keep(best, cur), []
        elif c in "*?{":
            if cur:
                cur.pop()  # the quantified character is optional
            best, cur = _keep(best, cur), []
            if c == "{":
                j = pattern.find("}", i)
                i = (j + 1) if j > 0 else n
                continue
        elif c == "+":
            best, cur = _keep(best, cur), []
        elif c in ".^$":
            best, cur = _keep(best, cur), []
        elif depth == 0:
            cur.append(c)
        i += 1
    best = _keep(best, cur)
    return best if len(best) >= 4 else None


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
    body = pattern[1:-1]
    if body.startswith("?:"):
        return body[2:]
    if body.startswith("?P<"):
        return body[body.index(">") + 1:]
    if body.startswith("?"):
        return None  # lookarounds, flags
    return body


def _keep(best: str, cur: list[str]) -> str:
    s = "".join(cur)
    return s if len(s) > len(best) else best


def _top_level(pattern: str) -> str:
    """The characters of a pattern outside any group or class."""
    return "".join(c for _, c, depth in _structure(pattern) if depth == 0 and c not in "()")


def _unsafe(pattern: str) -> bool:
    """Inline flags or escapes that make a pattern's spelling differ from what it matches."""
    if _INLINE_FLAGS.search(pattern):
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
        if c == "[" and pattern.startswith("[:", j):  # POSIX class [:alpha:]
            k = pattern.find(":]", j + 2)
            if k > 0:
                j = k + 2
                continue
        if c == "]":
            return j + 1
        j += 1
    return n
