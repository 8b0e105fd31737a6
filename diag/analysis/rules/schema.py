"""The rule file schema: every key's type and value is checked when a rule is loaded.

A rule file is user input. A wrong type must not raise out of the loader (a SIGHUP with such a
file used to kill the daemon), and it must not be silently reinterpreted either (`kinds = "log"`
became the set `{'l', 'o', 'g'}` and the rule never fired). `problems()` lists what is wrong
with one `[[rule]]` table, in words a user can act on; the loader reports
`file:line: rule ID: what is wrong`, skips that rule and keeps the others.

Valid `formats` come from the parser registry (`diag.parsing.source.PARSERS`), not from a list kept
here, so a new format is usable in rules as soon as it is registered.
"""

from __future__ import annotations

from typing import Any, Callable

import regex

from diag.parsing import events as E

CATEGORIES = ("oom", "gpu", "model", "image", "context", "engine", "network", "dependency", "config", "performance", "other")
SEVERITIES = ("critical", "error", "warning", "info")
SCOPES = ("event", "trace")
KINDS = (E.RECEIVED, E.ADDED, E.STARTED, E.ABORTED, E.FAILED, E.FINISHED, E.OUTPUT, E.TIMING, E.ACCESS, E.STATS, E.LOG, E.RAW)
OPS = ("gt", "gte", "lt", "lte", "ne", "in", "not_in", "re")
_NUMERIC_OPS = ("gt", "gte", "lt", "lte")


def known_formats() -> tuple[str, ...]:
    from diag.parsing.source import PARSERS

    return (*PARSERS, "unknown")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool))


def _str_or_list(v: Any) -> list[str] | None:
    """A string or a non-empty list of strings → the list; anything else → None."""
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return v
    return None


def compile_error(pattern: Any) -> str | None:
    """Why a pattern does not compile (None when it does)."""
    if not isinstance(pattern, str) or not pattern:
        return "must be a non-empty string"
    try:
        regex.compile(pattern, regex.MULTILINE)
    except (regex.error, OverflowError, RecursionError, ValueError) as exc:
        return f"invalid regex {pattern[:80]!r}: {exc}"
    return None


def _text(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "must be a non-empty string"


def _one_of(choices: tuple[str, ...] | Callable[[], tuple[str, ...]]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        allowed = choices() if callable(choices) else choices
        if not isinstance(v, str) or v not in allowed:
            return f"is {v!r}, not one of {', '.join(allowed)}"
        return None

    return check


def _list_of(choices: tuple[str, ...] | Callable[[], tuple[str, ...]], star: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        allowed = choices() if callable(choices) else choices
        items = _str_or_list(v)
        if items is None:
            return "must be a string or a non-empty list of strings"
        bad = [x for x in items if x not in allowed and not (star and x == "*")]
        if bad:
            return f"has unknown value(s) {bad} (known: {', '.join(allowed)})"
        return None

    return check


def _patterns(v: Any) -> str | None:
    items = _str_or_list(v)
    if items is None:
        return "must be a pattern or a non-empty list of patterns"
    for p in items:
        err = compile_error(p)
        if err:
            return err
    return None


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, not {v!r}"


def _consecutive(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1000 else f"must be a whole number from 1 to 1000, not {v!r}"


def _strings(v: Any) -> str | None:
    return None if isinstance(v, list) and all(isinstance(x, str) for x in v) else "must be a list of strings"


def _table(spec: dict[str, tuple[bool, Callable[[Any], str | None]]]) -> Callable[[Any], str | None]:
    """A sub-table with required/optional keys, each with its own check."""

    def check(v: Any) -> str | None:
        if not isinstance(v, dict):
            return f"must be a table ({{ {', '.join(spec)} }}), not {type(v).__name__}"
        unknown = sorted(set(v) - set(spec))
        if unknown:
            return f"has unknown key(s) {unknown} (known: {', '.join(spec)})"
        for key, (required, sub) in spec.items():
            if key not in v:
                if required:
                    return f"needs `{key}`"
                continue
            err = sub(v[key])
            if err:
                return f"`{key}` {err}"
        return None

    return check


def _positive(v: Any) -> str | None:
    return None if _is_num(v) and 0 < v < 1e9 else f"must be a number > 0, not {v!r}"


def _events(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 10000 else f"must be a whole number from 1 to 10000, not {v!r}"


def _when(v: Any) -> str | None:
    if not isinstance(v, dict):
        return "must be a table of conditions"
    for key, want in v.items():
        if isinstance(want, dict):
            if not want:
                return f"condition on {key!r} is an empty table"
            for op, arg in want.items():
                if op not in OPS:
                    return f"condition on {key!r} uses unknown operator {op!r} (known: {', '.join(OPS)})"
                if op in _NUMERIC_OPS and not _is_num(arg):
                    return f"condition {key}.{op} needs a number, not {arg!r}"
                if op in ("in", "not_in") and not (isinstance(arg, list) and all(_is_scalar(x) for x in arg)):
                    return f"condition {key}.{op} needs a list of values, not {arg!r}"
                if op == "ne" and not _is_scalar(arg):
                    return f"condition {key}.ne needs a value, not {arg!r}"
                if op == "re":
                    err = compile_error(arg)
                    if err:
                        return f"condition {key}.re {err}"
        elif isinstance(want, list):
            if not all(_is_scalar(x) for x in want):
                return f"condition on {key!r}: a list holds plain values only"
        elif not _is_scalar(want):
            return f"condition on {key!r} has an unsupported value {want!r}"
    return None


def _from_event(v: Any, what: str = "event") -> str | None:
    if not isinstance(v, dict) or not v:
        return f"must be a non-empty table of finding field = {what} field"
    for k, src in v.items():
        if not isinstance(src, str) or not src:
            return f"`{k}` must name {'an' if what[0] in 'aeiou' else 'a'} {what} field (a string), not {src!r}"
    return None


def _from_facts(v: Any) -> str | None:
    return _from_event(v, "startup fact")


def _examples(v: Any) -> str | None:
    if not isinstance(v, list) or not v:
        return "must be a non-empty list"
    for ex in v:
        if isinstance(ex, str):
            continue
        if not isinstance(ex, dict) or not isinstance(ex.get("text"), str):
            return "each is a string or a table with `text`"
        unknown = sorted(set(ex) - {"text", "fields", "format"})
        if unknown:
            return f"an example has unknown key(s) {unknown}"
        if "fields" in ex and not isinstance(ex["fields"], dict):
            return "an example's `fields` must be a table"
        if "format" in ex and ex["format"] not in known_formats():
            return f"an example's format {ex['format']!r} is not one of {', '.join(known_formats())}"
    return None


# key -> (required, check). Two keys belong to the alerts side (grouping): `inhibits` and `state`.
SCHEMA: dict[str, tuple[bool, Callable[[Any], str | None]]] = {
    "id": (True, _text),
    "title": (True, _text),
    "category": (True, _one_of(CATEGORIES)),
    "severity": (True, _one_of(SEVERITIES)),
    "summary": (True, _text),
    "remedy": (True, _text),
    "description": (False, lambda v: None if isinstance(v, str) else "must be a string"),
    "scope": (False, _one_of(SCOPES)),
    "formats": (False, _list_of(known_formats, star=True)),
    "kinds": (False, _list_of(KINDS)),
    "match": (False, _patterns),
    "unless": (False, lambda v: compile_error(v)),
    "frames": (False, lambda v: compile_error(v)),
    "when": (False, _when),
    "from_event": (False, _from_event),
    "from_facts": (False, _from_facts),
    "final": (False, _bool),
    "consecutive": (False, _consecutive),
    "references": (False, _strings),
    "examples": (True, _examples),
    "counter_examples": (True, _examples),
    "unless_after": (False, _table({"pattern": (True, compile_error), "within_s": (False, _positive)})),
    "unless_followed_by": (False, _table({"pattern": (True, compile_error), "within_events": (False, _events),
                                          "within_s": (False, _positive)})),
    "inhibits": (False, _table({"rules": (False, _strings), "categories": (False, _list_of(CATEGORIES)),
                                "window": (False, _positive)})),
    "state": (False, _bool),
}


def problems(item: Any) -> list[str]:
    """What is wrong with one [[rule]] table (empty when nothing is)."""
    if not isinstance(item, dict):
        return ["each [[rule]] must be a table"]
    out: list[str] = []
    unknown = sorted(set(item) - set(SCHEMA))
    if unknown:
        out.append(f"unknown key(s) {unknown}")
    for key, (required, check) in SCHEMA.items():
        if key not in item:
            if required:
                out.append(f"missing `{key}`")
            continue
        err = check(item[key])
        if err:
            out.append(f"`{key}` {err}")
    scope = item.get("scope", "event")
    if scope == "event" and "match" not in item and not item.get("when") and "frames" not in item:
        out.append("an event rule needs `match`, `frames` or `when`")
    if scope == "trace" and "match" in item:
        out.append("a trace rule has no `match` (its `when` is evaluated on the trace)")
    if "frames" in item:
        # one traceback is one event: a frames rule judges it alone
        if scope == "trace":
            out.append("a trace rule has no `frames` (frames belong to one traceback event)")
        if item.get("consecutive", 1) != 1 or item.get("state") is True:
            out.append("a rule with `frames` cannot use `consecutive` or `state` (it judges one traceback)")
    return out
