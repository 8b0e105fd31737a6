"""`diag rules lint`: mistakes a rule file can make that loading alone does not catch.

Catastrophic backtracking is found from the pattern's structure, not by timing it: a verdict that
depends on how busy the machine is cannot gate CI. A pattern is flagged when an unbounded
repetition contains another unbounded repetition (`(x+x+)+`, `(\\w+\\s?)*`) or alternatives that
can start with the same character (`(a|ab)*`): on a line that almost matches, the number of ways
to split it grows exponentially. Possessive and atomic forms are safe and not flagged. As a last
net, each pattern also runs once on hostile inputs under the match timeout.
"""

from __future__ import annotations

from typing import Any

from diag.analysis.rules.ruleset import MATCH_TIMEOUT, RuleSet

# Inputs that make backtracking patterns explode: long runs of one character, long lines.
_HOSTILE = ("a" * 20000 + "!", " " * 20000 + "x", "ERROR " + "x=1, " * 5000, "\n".join(["Traceback"] * 2000))


def catastrophic(pattern: str) -> str | None:
    """Why `pattern` can backtrack catastrophically, or None. Deterministic: structure only."""
    try:
        import re._constants as C  # noqa: N812
        import re._parser as P  # noqa: N812

        tree = P.parse(pattern)
    except Exception:  # noqa: BLE001 - syntax only the regex module knows: no structural verdict
        return None
    return _walk(tree, C, inside_unbounded=False)


def _walk(items: Any, C: Any, inside_unbounded: bool) -> str | None:
    for op, av in items:
        if op in (C.MAX_REPEAT, C.MIN_REPEAT):
            lo, hi, sub = av
            unbounded = hi == C.MAXREPEAT or hi > 1000
            if unbounded and inside_unbounded and _can_repeat_nonempty(sub, C):
                return "nested unbounded repetition"
            if unbounded and _overlapping_branches(sub, C):
                return "repeated alternatives that can match the same text"
            why = _walk(sub, C, inside_unbounded or (unbounded and _only_repeats(sub, C)))
            if why:
                return why
        elif op == C.SUBPATTERN:
            why = _walk(av[-1], C, inside_unbounded)
            if why:
                return why
        elif op == C.BRANCH:
            for alt in av[1]:
                why = _walk(alt, C, inside_unbounded)
                if why:
                    return why
        elif op in (C.ASSERT, C.ASSERT_NOT):
            why = _walk(av[1], C, False)
            if why:
                return why
        # POSSESSIVE_REPEAT and ATOMIC_GROUP cannot backtrack into themselves: not looked into
    return None


def _only_repeats(sub: Any, C: Any) -> bool:
    """A body made only of repetitions (`x+x+`, `\\w+\\s?`): nothing mandatory pins where one
    iteration ends and the next begins, so an inner unbounded repetition can split a line many ways.
    A mandatory separator (`(\\d+,)*`) pins it."""
    for op, av in sub:
        if op == C.SUBPATTERN:
            if not _only_repeats(av[-1], C):
                return False
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT):
            continue
        elif op != C.AT:
            return False
    return True


def _can_repeat_nonempty(sub: Any, C: Any) -> bool:
    return any(op not in (C.AT,) for op, _ in sub)


def _first_chars(items: Any, C: Any) -> set | None:
    """Characters a subpattern can start with (None: anything / unknown)."""
    for op, av in items:
        if op == C.LITERAL:
            return {av}
        if op == C.NOT_LITERAL or op == C.ANY or op == C.CATEGORY or op == C.IN:
            return None
        if op == C.SUBPATTERN:
            return _first_chars(av[-1], C)
        if op in (C.MAX_REPEAT, C.MIN_REPEAT):
            if av[0] == 0:
                return None
            return _first_chars(av[2], C)
        if op == C.BRANCH:
            out: set = set()
            for alt in av[1]:
                f = _first_chars(alt, C)
                if f is None:
                    return None
                out |= f
            return out
        if op == C.AT:
            continue
        return None
    return None


def _overlapping_branches(sub: Any, C: Any) -> bool:
    for op, av in sub:
        if op == C.SUBPATTERN:
            return _overlapping_branches(av[-1], C)
        if op == C.BRANCH:
            seen: set = set()
            for alt in av[1]:
                f = _first_chars(alt, C)
                if f is None or f & seen:
                    return True
                seen |= f
            return False
        return False
    return False


def lint(rs: RuleSet) -> list[str]:
    problems: list[str] = []
    for r in rs.rules:
        where = f"{r.file}:{r.line}: rule {r.id}"
        pats = [*r.patterns, *([r.frames] if r.frames is not None else [])]
        names = set().union(*(set(p.groupindex) for p in pats)) if pats else set()
        names = names | set(r.from_event) | set(r.from_facts) if names else names  # fields taken from the event or the facts fill it too
        for name in _template_names(r.summary):
            if names and name not in names and name not in ("count", "request_ids", "request_id", "path", "status", "method"):
                problems.append(f"{where}: summary uses {{{name}}}, which no named group of its patterns provides")
        for p in pats:
            why = catastrophic(p.pattern)
            if why:
                problems.append(f"{where}: pattern {p.pattern[:60]!r} can backtrack catastrophically ({why})")
                continue
            for s in _HOSTILE:
                try:
                    p.search(s, timeout=MATCH_TIMEOUT * 10)  # a net with a wide margin, not a speed test
                except TimeoutError:
                    problems.append(f"{where}: pattern {p.pattern[:60]!r} times out on a hostile input (catastrophic backtracking)")
                    break
        if not r.remedy or len(r.remedy) < 20:
            problems.append(f"{where}: remedy is too short to help anyone")
    return problems


def _template_names(template: str) -> list[str]:
    import re

    out = []
    for m in re.finditer(r"\{([\w|]+)\}", template):
        out.extend(m.group(1).split("|"))
    return out
