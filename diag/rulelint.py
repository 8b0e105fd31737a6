"""`diag rules lint`: mistakes a rule file can make that loading alone does not catch."""

from __future__ import annotations

import time

from diag.rules import MATCH_TIMEOUT, RuleSet

# Inputs that make backtracking patterns explode: long runs of one character, long lines.
_HOSTILE = ("a" * 20000 + "!", " " * 20000 + "x", "ERROR " + "x=1, " * 5000, "\n".join(["Traceback"] * 2000))


def lint(rs: RuleSet) -> list[str]:
    problems: list[str] = []
    for r in rs.rules:
        where = f"{r.file}:{r.line}: rule {r.id}"
        names = set().union(*(set(p.groupindex) for p in r.patterns)) if r.patterns else set()
        for name in _template_names(r.summary):
            if names and name not in names and name not in ("count", "request_ids", "request_id", "path", "status", "method"):
                problems.append(f"{where}: summary uses {{{name}}}, which no named group of its patterns provides")
        for p in r.patterns:
            for s in _HOSTILE:
                t0 = time.perf_counter()
                try:
                    p.search(s, timeout=MATCH_TIMEOUT * 4)
                except TimeoutError:
                    problems.append(f"{where}: pattern {p.pattern[:60]!r} times out on a hostile input (catastrophic backtracking)")
                    break
                if time.perf_counter() - t0 > 0.02:
                    problems.append(f"{where}: pattern {p.pattern[:60]!r} is slow on long lines ({(time.perf_counter() - t0) * 1000:.0f} ms)")
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
