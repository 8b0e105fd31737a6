"""Rule files: loading, validation and matching.

Rules are data (`rules/*.toml`, documented in `rules/README.md`). Each carries its own positive
and negative examples, so a rule that stops matching what it claims is caught by
`diag rules test` and the test suite. Patterns run on the `regex` module with a per-match
timeout: a catastrophic pattern disables its own rule, with a clear error, and the rest keep
working. A malformed file is reported with its path and line and does not take the others down.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import regex

from diag import events as E
from diag.events import Event
from diag.prefilter import literal_needles

CATEGORIES = ("oom", "model", "image", "context", "engine", "network", "dependency", "config", "performance", "other")
SEVERITIES = ("critical", "error", "warning", "info")
SEVERITY_RANK = {s: i for i, s in enumerate(reversed(SEVERITIES))}  # info 0 … critical 3
SCOPES = ("event", "trace")
MATCH_TIMEOUT = 0.2  # seconds per pattern per event: generous for a loaded machine, fatal for backtracking
_KNOWN_KEYS = {"id", "title", "category", "severity", "formats", "kinds", "match", "unless", "when", "scope", "summary",
               "remedy", "references", "examples", "counter_examples", "unless_after", "unless_followed_by", "description",
               "final", "consecutive", "inhibits", "state"}
_OPS = {"gt", "gte", "lt", "lte", "ne", "in", "re", "not_in"}


class RuleError(Exception):
    pass


@dataclass
class Example:
    text: str
    fields: dict[str, Any] = field(default_factory=dict)
    format: str | None = None


@dataclass
class Rule:
    id: str
    title: str
    category: str
    severity: str
    summary: str
    remedy: str
    file: str = "<builtin>"
    line: int = 0
    formats: frozenset[str] | None = None  # None: any format
    kinds: frozenset[str] = frozenset({E.LOG, E.RAW, E.FAILED})
    patterns: list[Any] = field(default_factory=list)
    unless: Any = None
    when: dict[str, Any] = field(default_factory=dict)
    scope: str = "event"
    final: bool = False  # trace rule evaluated only at the end of input / when the trace goes stale
    consecutive: int = 1  # fire only when this many applicable events in a row (same source) match
    references: list[str] = field(default_factory=list)
    description: str = ""
    unless_after: tuple[Any, float] | None = None  # (pattern, seconds): quiet after such a line in the same source
    unless_followed_by: tuple[Any, int] | None = None  # (pattern, events): quiet if such a line follows soon
    examples: list[Example] = field(default_factory=list)
    counter_examples: list[Example] = field(default_factory=list)
    needles: tuple[str, ...] = ()  # literal prefilter: a pattern can only match if one needle is present
    disabled: str | None = None
    inhibits: dict[str, Any] | None = None  # alerts: {rules, categories, window} muted on the same host while this fires
    state: bool = False  # alerts: resolves when its condition clears, not after resolve_after

    def meta(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "category": self.category, "severity": self.severity,
                "scope": self.scope, "file": self.file, "disabled": self.disabled}


@dataclass
class RuleSet:
    rules: list[Rule]
    errors: list[str] = field(default_factory=list)

    def by_id(self, rid: str) -> Rule | None:
        for r in self.rules:
            if r.id == rid:
                return r
        return None


def builtin_dir() -> Path:
    """The built-in rules: inside the installed package, or the checkout's top-level rules/."""
    installed = Path(__file__).resolve().parent / "rules_builtin"  # where the wheel puts rules/
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "rules"  # a source checkout or editable install


def load(dirs: Iterable[str | os.PathLike] = (), builtin: bool = True) -> RuleSet:
    """Built-in rules, then each user directory (or file); a later rule with the same id wins."""
    found: dict[str, Rule] = {}
    errors: list[str] = []
    sources: list[Path] = []
    if builtin:
        found_builtin = sorted(builtin_dir().glob("*.toml"))
        if not found_builtin:
            errors.append(f"{builtin_dir()}: no built-in rule files found (broken installation?)")
        sources.extend(found_builtin)
    for d in dirs:
        p = Path(d)
        if p.is_dir():
            sources.extend(sorted(p.glob("*.toml")))
        elif p.is_file():
            sources.append(p)
        else:
            errors.append(f"{p}: no such rule file or directory")
    for path in sources:
        rules, errs = load_file(path)
        errors.extend(errs)
        for r in rules:
            found[r.id] = r
    return RuleSet(list(found.values()), errors)


def load_file(path: Path) -> tuple[list[Rule], list[str]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [], [f"{path}: cannot read: {exc.strerror or exc}"]
    try:
        text = raw.decode("utf-8")
        doc = tomllib.loads(text)
    except UnicodeDecodeError:
        return [], [f"{path}: not UTF-8 text"]
    except tomllib.TOMLDecodeError as exc:
        return [], [f"{path}: invalid TOML: {exc}"]
    items = doc.get("rule", [])
    if not isinstance(items, list):
        return [], [f"{path}: `rule` must be an array of tables ([[rule]])"]
    rules, errors = [], []
    seen: set[str] = set()
    for item in items:
        line = _line_of(text, item.get("id") if isinstance(item, dict) else None)
        try:
            r = build(item, str(path), line)
        except RuleError as exc:
            errors.append(f"{path}:{line}: {exc}")
            continue
        if r.id in seen:
            errors.append(f"{path}:{line}: duplicate rule id {r.id!r} in the same file")
            continue
        seen.add(r.id)
        rules.append(r)
    return rules, errors


def _line_of(text: str, rid: Any) -> int:
    if isinstance(rid, str):
        for i, ln in enumerate(text.splitlines(), 1):
            s = ln.strip()
            if s.startswith("id") and f'"{rid}"' in s or f"'{rid}'" in s and s.startswith("id"):
                return i
    return 0


def _compile(p: Any, where: str) -> Any:
    if not isinstance(p, str) or not p:
        raise RuleError(f"{where}: pattern must be a non-empty string")
    try:
        return regex.compile(p, regex.MULTILINE)
    except regex.error as exc:
        raise RuleError(f"{where}: invalid regex {p!r}: {exc}") from None


def build(item: Any, file: str = "<builtin>", line: int = 0) -> Rule:
    if not isinstance(item, dict):
        raise RuleError("each [[rule]] must be a table")
    unknown = set(item) - _KNOWN_KEYS
    if unknown:
        raise RuleError(f"unknown key(s) {sorted(unknown)}")
    for key in ("id", "title", "category", "severity", "summary", "remedy"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise RuleError(f"rule {item.get('id', '?')!r}: missing or empty `{key}`")
    rid = item["id"]
    if item["category"] not in CATEGORIES:
        raise RuleError(f"rule {rid!r}: category {item['category']!r} is not one of {', '.join(CATEGORIES)}")
    if item["severity"] not in SEVERITIES:
        raise RuleError(f"rule {rid!r}: severity {item['severity']!r} is not one of {', '.join(SEVERITIES)}")
    scope = item.get("scope", "event")
    if scope not in SCOPES:
        raise RuleError(f"rule {rid!r}: scope must be one of {SCOPES}")
    match = item.get("match")
    pats = [match] if isinstance(match, str) else (match or [])
    if not isinstance(pats, list):
        raise RuleError(f"rule {rid!r}: `match` must be a string or a list of strings")
    if scope == "event" and not pats and not item.get("when"):
        raise RuleError(f"rule {rid!r}: an event rule needs `match` or `when`")
    when = item.get("when", {})
    if not isinstance(when, dict):
        raise RuleError(f"rule {rid!r}: `when` must be a table")
    for k, v in when.items():
        if isinstance(v, dict) and not set(v) <= _OPS:
            raise RuleError(f"rule {rid!r}: condition on {k!r} uses unknown operator(s) {sorted(set(v) - _OPS)}")
    formats = item.get("formats")
    fmts = None if formats in (None, ["*"], "*") else frozenset(formats if isinstance(formats, list) else [formats])
    kinds = item.get("kinds")
    r = Rule(
        id=rid, title=item["title"], category=item["category"], severity=item["severity"],
        summary=item["summary"], remedy=item["remedy"].strip(), file=file, line=line, formats=fmts,
        kinds=frozenset(kinds) if kinds else frozenset({E.LOG, E.RAW, E.FAILED}),
        patterns=[_compile(p, f"rule {rid!r} match") for p in pats],
        unless=_compile(item["unless"], f"rule {rid!r} unless") if item.get("unless") else None,
        when=when, scope=scope, final=bool(item.get("final", False)), consecutive=int(item.get("consecutive", 1)),
        references=list(item.get("references", [])), description=item.get("description", ""),
    )
    inh = item.get("inhibits")
    if inh is not None:
        if not isinstance(inh, dict) or not set(inh) <= {"rules", "categories", "window"} or \
                not all(isinstance(x, str) for k in ("rules", "categories") for x in inh.get(k, [])) or \
                not isinstance(inh.get("window", 600), (int, float)):
            raise RuleError(f"rule {rid!r}: `inhibits` is {{ rules = [ids], categories = [names], window = seconds }}")
        r.inhibits = dict(inh)
    if not isinstance(item.get("state", False), bool):
        raise RuleError(f"rule {rid!r}: `state` must be true or false")
    r.state = bool(item.get("state", False))
    ua = item.get("unless_after")
    if ua:
        r.unless_after = (_compile(ua.get("pattern"), f"rule {rid!r} unless_after"), float(ua.get("within_s", 60)))
    uf = item.get("unless_followed_by")
    if uf:
        r.unless_followed_by = (_compile(uf.get("pattern"), f"rule {rid!r} unless_followed_by"), int(uf.get("within_events", 3)))
    for key, dest in (("examples", r.examples), ("counter_examples", r.counter_examples)):
        for ex in item.get(key, []):
            if isinstance(ex, str):
                dest.append(Example(ex))
            elif isinstance(ex, dict) and isinstance(ex.get("text"), str):
                dest.append(Example(ex["text"], dict(ex.get("fields", {})), ex.get("format")))
            else:
                raise RuleError(f"rule {rid!r}: each of `{key}` is a string or a table with `text`")
    if not r.examples:
        raise RuleError(f"rule {rid!r}: needs at least one positive example")
    if not r.counter_examples:
        raise RuleError(f"rule {rid!r}: needs at least one negative example (counter_examples)")
    needles: list[str] = []
    for p in r.patterns:
        got = literal_needles(p.pattern)
        if got is None:
            needles = []  # a pattern without a literal: no prefilter for this rule
            break
        needles.extend(got)
    r.needles = tuple(dict.fromkeys(needles))
    return r


# -- conditions -------------------------------------------------------------------------------
def condition_holds(cond: dict[str, Any], lookup) -> bool:
    for key, want in cond.items():
        have = lookup(key)
        if isinstance(want, dict):
            for op, arg in want.items():
                if not _op(op, have, arg):
                    return False
        elif isinstance(want, list):
            if have not in want:
                return False
        elif have != want:
            return False
    return True


def _op(op: str, have: Any, arg: Any) -> bool:
    if op == "ne":
        return have != arg
    if op == "in":
        return have in arg
    if op == "not_in":
        return have not in arg
    if have is None:
        return False
    try:
        if op == "gt":
            return have > arg
        if op == "gte":
            return have >= arg
        if op == "lt":
            return have < arg
        if op == "lte":
            return have <= arg
        if op == "re":
            return regex.search(arg, str(have), timeout=MATCH_TIMEOUT) is not None
    except (TypeError, TimeoutError):
        return False
    return False


def event_applies(rule: Rule, ev: Event) -> bool:
    if rule.formats is not None and ev.fmt not in rule.formats:
        return False
    return ev.kind in rule.kinds
