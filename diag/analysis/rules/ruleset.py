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

from diag.parsing import events as E
from diag.analysis.rules import schema as ruleschema
from diag.analysis.rules.prefilter import literal_needles
from diag.fsname import display

from diag.analysis.rules.schema import CATEGORIES, SCOPES, SEVERITIES  # noqa: F401 - re-exported: the rule vocabulary

SEVERITY_RANK = {s: i for i, s in enumerate(reversed(SEVERITIES))}  # info 0 … critical 3
MATCH_TIMEOUT = 0.2  # seconds per pattern per event: generous for a loaded machine, fatal for backtracking
HOLD_S = 10.0  # default: a held hit (unless_followed_by) is released after this long without a follower


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
    frames: Any = None  # a pattern over the event's frame locations (diag.parsing.frames), one per line
    frame_needles: tuple[str, ...] = ()  # its literal prefilter
    when: dict[str, Any] = field(default_factory=dict)
    # finding field -> the event's parsed field it is taken from, when the event has it (a value the
    # parser read and the rules may not see in the text: a client's model name, masked there)
    from_event: dict[str, str] = field(default_factory=dict)
    # finding field -> the startup fact of the event's source it is taken from (`diag.analysis.facts`),
    # when no named group captured that field: what the server said of itself on an earlier line
    # (the names it serves, the model file it loads)
    from_facts: dict[str, str] = field(default_factory=dict)
    scope: str = "event"
    final: bool = False  # trace rule evaluated only at the end of input / when the trace goes stale
    consecutive: int = 1  # fire only when this many applicable events in a row (same source) match
    references: list[str] = field(default_factory=list)
    description: str = ""
    unless_after: tuple[Any, float] | None = None  # (pattern, seconds): quiet after such a line in the same source
    unless_followed_by: tuple[Any, int] | None = None  # (pattern, events): quiet if such a line follows soon
    hold_s: float = HOLD_S  # ... or released after this many seconds (the daemon's tick) if none follows
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
    failed: list[tuple[str, str | None]] = field(default_factory=list)  # (file, rule id or None: the whole file)

    def by_id(self, rid: str) -> Rule | None:
        for r in self.rules:
            if r.id == rid:
                return r
        return None


def keep_previous(new: RuleSet, previous: Iterable[Rule]) -> list[str]:
    """A reload: each rule that failed to load keeps the version that was running (all rules of
    a file that failed as a whole). Returns the ids kept."""
    files = {f for f, rid in new.failed if rid is None}
    ids = {rid for _f, rid in new.failed if rid is not None}
    have = {r.id for r in new.rules}
    kept = []
    for r in previous:
        if (r.id in ids or r.file in files) and (r.id not in have or r.id in ids):
            new.rules = [x for x in new.rules if x.id != r.id] + [r]
            kept.append(r.id)
    return kept


def builtin_dir() -> Path:
    """The built-in rules: inside the installed package, or the checkout's top-level rules/."""
    package = Path(__file__).resolve().parents[2]  # diag/ (this is diag/analysis/rules/ruleset.py)
    installed = package / "rules_builtin"  # where the wheel puts rules/
    if installed.is_dir():
        return installed
    return package.parent / "rules"  # a source checkout or editable install


def load(dirs: Iterable[str | os.PathLike] = (), builtin: bool = True) -> RuleSet:
    """Built-in rules, then each user directory (or file); a later rule with the same id wins."""
    found: dict[str, Rule] = {}
    errors: list[str] = []
    failed: list[tuple[str, str | None]] = []
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
            errors.append(f"{display(p)}: no such rule file or directory")
    for path in sources:
        rules, errs = load_file(path, failed)
        errors.extend(errs)
        for r in rules:
            found[r.id] = r
    return RuleSet(list(found.values()), errors, failed)


def load_file(path: Path, failed: list[tuple[str, str | None]] | None = None) -> tuple[list[Rule], list[str]]:
    """The valid rules of one file and what is wrong with the others; `failed` collects
    (file, id) of each rule not loaded (id None: the whole file), so a reload can keep their old versions."""
    failed = failed if failed is not None else []
    name = display(path)  # in messages and a rule's `file`: text, whatever the name's bytes (diag.fsname)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        failed.append((name, None))
        return [], [f"{name}: cannot read: {exc.strerror or exc}"]
    try:
        text = raw.decode("utf-8")
        doc = tomllib.loads(text)
    except UnicodeDecodeError:
        failed.append((name, None))
        return [], [f"{name}: not UTF-8 text"]
    except tomllib.TOMLDecodeError as exc:
        failed.append((name, None))
        return [], [f"{name}: invalid TOML: {exc}"]
    items = doc.get("rule", [])
    if not isinstance(items, list):
        failed.append((name, None))
        return [], [f"{name}: `rule` must be an array of tables ([[rule]])"]
    rules, errors = [], []
    seen: set[str] = set()
    for item in items:
        rid = item.get("id") if isinstance(item, dict) else None
        line = _line_of(text, rid)
        try:
            r = build(item, name, line)
        except Exception as exc:  # noqa: BLE001 - a rule file is input: never raise out of loading
            why = str(exc) if isinstance(exc, RuleError) else f"cannot be loaded ({type(exc).__name__})"
            errors.append(f"{name}:{line}: rule {rid if isinstance(rid, str) else '?'}: {why}")
            failed.append((name, rid if isinstance(rid, str) else None))
            continue
        if r.id in seen:
            errors.append(f"{name}:{line}: duplicate rule id {r.id!r} in the same file")
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
    except (regex.error, OverflowError, RecursionError, ValueError) as exc:
        raise RuleError(f"{where}: invalid regex {p!r}: {exc}") from None


def build(item: Any, file: str = "<builtin>", line: int = 0) -> Rule:
    problems = ruleschema.problems(item)
    if problems:
        raise RuleError("; ".join(problems))
    rid = item["id"]
    scope = item.get("scope", "event")
    match = item.get("match")
    pats = [match] if isinstance(match, str) else (match or [])
    formats = item.get("formats")
    fmts = None if formats in (None, ["*"], "*") else frozenset([formats] if isinstance(formats, str) else formats)
    kinds = item.get("kinds")
    r = Rule(
        id=rid, title=item["title"], category=item["category"], severity=item["severity"],
        summary=item["summary"], remedy=item["remedy"].strip(), file=file, line=line, formats=fmts,
        kinds=frozenset([kinds] if isinstance(kinds, str) else kinds) if kinds else frozenset({E.LOG, E.RAW, E.FAILED}),
        patterns=[_compile(p, "match") for p in pats],
        unless=_compile(item["unless"], "unless") if item.get("unless") else None,
        frames=_compile(item["frames"], "frames") if item.get("frames") else None,
        when=item.get("when", {}), from_event=dict(item.get("from_event", {})),
        from_facts=dict(item.get("from_facts", {})), scope=scope, final=item.get("final", False), consecutive=item.get("consecutive", 1),
        references=list(item.get("references", [])), description=item.get("description", ""),
        inhibits=item.get("inhibits"), state=item.get("state", False),
    )
    ua = item.get("unless_after")
    if ua:
        r.unless_after = (_compile(ua["pattern"], "unless_after"), float(ua.get("within_s", 60)))
    uf = item.get("unless_followed_by")
    if uf:
        r.unless_followed_by = (_compile(uf["pattern"], "unless_followed_by"), int(uf.get("within_events", 3)))
        r.hold_s = float(uf.get("within_s", HOLD_S))
    for key, dest in (("examples", r.examples), ("counter_examples", r.counter_examples)):
        for ex in item.get(key, []):
            if isinstance(ex, str):
                dest.append(Example(ex))
            else:
                dest.append(Example(ex["text"], dict(ex.get("fields", {})), ex.get("format")))
    needles: list[str] = []
    for p in r.patterns:
        got = literal_needles(p.pattern)
        if got is None:
            needles = []  # a pattern without a literal: no prefilter for this rule
            break
        needles.extend(got)
    r.needles = tuple(dict.fromkeys(needles))
    if r.frames is not None:
        r.frame_needles = tuple(literal_needles(r.frames.pattern) or ())
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
    except (TypeError, TimeoutError, regex.error):
        return False
    return False


def event_applies(rule: Rule, fmt: str, kind: str) -> bool:
    """Does the rule look at events of this format and kind at all?"""
    if rule.formats is not None and fmt not in rule.formats:
        return False
    return kind in rule.kinds
