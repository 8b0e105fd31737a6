"""Rule files and configuration are validated, not trusted; the prefilter never drops a match."""

from __future__ import annotations

import gzip
import subprocess
import sys
import textwrap

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from diag.analysis.rules import prefilter, ruleset as rules
from diag.parsing.source import PARSERS
from diag.analysis.rules.schema import known_formats

RULE = '''
[[rule]]
id = "{rid}"
title = "Custom marker"
category = "other"
severity = "error"
match = 'MARKER (?P<n>\\d+)'
summary = "marker {{n}}"
remedy = "remove the marker from the log please"
examples = [{{ text = "MARKER 7", fields = {{ n = "7" }} }}]
counter_examples = ["nothing here"]
{extra}
'''

# (extra TOML for one rule, what the error must say)
BAD = [
    ('consecutive = "three"', "`consecutive` must be a whole number"),
    ("consecutive = 0", "`consecutive` must be a whole number"),
    ('unless_after = "x"', "`unless_after` must be a table"),
    ("unless_after = { pattern = '(' }", "invalid regex"),
    ("unless_after = { pattern = 'x', within_s = -5 }", "`within_s` must be a number > 0"),
    ("unless_followed_by = { pattern = 'retry', within_events = 'three' }", "`within_events` must be a whole number"),
    ('kinds = ["lgo"]', "unknown value(s) ['lgo']"),
    ("kinds = 3", "`kinds` must be a string or a non-empty list"),
    ('formats = ["vlm"]', "unknown value(s) ['vlm']"),
    ("when = { n = { re = '(' } }", "condition n.re invalid regex"),
    ("when = { n = { gt = 'x' } }", "condition n.gt needs a number"),
    ("when = { n = { like = 'x' } }", "unknown operator 'like'"),
    ("when = { n = { in = 'x' } }", "condition n.in needs a list"),
    ("when = 5", "`when` must be a table"),
    ("match = ['(unclosed']", "invalid regex"),
    ("match = 5", "`match` must be a pattern"),
    ("final = 'yes'", "`final` must be true or false"),
    ("references = 'https://x'", "`references` must be a list of strings"),
    ("state = 'yes'", "`state` must be true or false"),
    ("inhibits = { rules = 'cuda-oom' }", "`rules` must be a list of strings"),
    ("inhibits = { categories = ['oomm'] }", "unknown value(s) ['oomm']"),
    ("inhibits = { window = 0 }", "`window` must be a number > 0"),
    ("inhibits = { rules = ['x'], later = 1 }", "unknown key(s) ['later']"),
    ("colour = 'red'", "unknown key(s) ['colour']"),
    ("from_event = 'model_requested'", "`from_event` must be a non-empty table"),
    ("from_event = { model = 3 }", "`model` must name an event field"),
]


def write(tmp_path, name, body):
    p = tmp_path / name
    p.write_text(textwrap.dedent(body), encoding="utf-8")
    return p


@pytest.mark.parametrize("extra,why", BAD, ids=[b[0][:30] for b in BAD])
def test_each_bad_value_is_reported_with_file_line_and_id_and_only_that_rule_is_skipped(tmp_path, extra, why):
    bad = RULE.format(rid="bad-one", extra=extra)
    if extra.startswith("match"):
        bad = bad.replace("match = 'MARKER (?P<n>\\d+)'\n", "")
    body = RULE.format(rid="good-one", extra="") + bad
    p = write(tmp_path, "mixed.toml", body)
    rs = rules.load([p], builtin=False)  # must not raise, whatever the value
    assert [r.id for r in rs.rules] == ["good-one"]
    line = body.splitlines().index('id = "bad-one"') + 1
    assert len(rs.errors) == 1 and rs.errors[0].startswith(f"{p}:{line}: rule bad-one: "), rs.errors
    assert why in rs.errors[0], rs.errors[0]
    assert rs.failed == [(str(p), "bad-one")]


def test_alerting_keys_and_a_single_kind_string_are_accepted(tmp_path):
    extra = "kinds = 'raw'\nstate = true\ninhibits = { rules = ['cuda-oom'], categories = ['engine'], window = 300 }"
    p = write(tmp_path, "ok.toml", RULE.format(rid="alerting", extra=extra))
    rs = rules.load([p], builtin=False)
    assert rs.errors == []
    r = rs.rules[0]
    assert r.kinds == frozenset({"raw"}) and r.state is True and r.inhibits["window"] == 300
    from diag.analysis.rules.examples import test_rule

    assert all(res.ok for res in test_rule(r))  # `kinds = "raw"` fires on raw lines (it was {'r','a','w'})


def test_valid_formats_come_from_the_parser_registry(monkeypatch, tmp_path):
    assert set(known_formats()) == set(PARSERS) | {"unknown"}
    monkeypatch.setitem(PARSERS, "sglang", PARSERS["vllm"])  # a format another module registers
    p = write(tmp_path, "f.toml", RULE.format(rid="sg", extra="formats = ['sglang', 'vllm']"))
    assert rules.load([p], builtin=False).errors == []


def test_a_when_regex_is_checked_at_load_not_at_match_time(tmp_path):
    p = write(tmp_path, "w.toml", RULE.format(rid="w", extra="when = { n = { re = '[' } }"))
    rs = rules.load([p], builtin=False)
    assert rs.rules == [] and "condition n.re" in rs.errors[0]


def test_reload_keeps_the_previous_version_of_a_rule_that_no_longer_loads(tmp_path):
    p = write(tmp_path, "r.toml", RULE.format(rid="mine", extra="") + RULE.format(rid="other", extra=""))
    old = rules.load([tmp_path])
    write(tmp_path, "r.toml", RULE.format(rid="mine", extra='consecutive = "three"') + RULE.format(rid="other", extra=""))
    new = rules.load([tmp_path])
    assert "mine" not in {r.id for r in new.rules}
    kept = rules.keep_previous(new, old.rules)
    assert kept == ["mine"] and {"mine", "other", "cuda-oom"} <= {r.id for r in new.rules}
    assert next(r for r in new.rules if r.id == "mine").file == str(p)


# -- the literal prefilter never drops a match ----------------------------------------------------

def _lit(draw) -> tuple[str, str]:
    word = draw(st.text(alphabet="abcXYZ019 .:_-()[]|*+?{}^$\\'\"", min_size=1, max_size=8))
    return regex.escape(word), word


@st.composite
def piece(draw, depth=0) -> tuple[str, str]:
    """(pattern, a string it matches)."""
    kind = draw(st.integers(0, 14 if depth < 2 else 4))
    if kind <= 1:
        return _lit(draw)
    if kind == 2:  # escapes whose spelling is not what they match
        esc, ch = draw(st.sampled_from([(r"\x20", " "), (r"\u00e9", "é"), (r"\x41", "A"), (r"\t", "\t"), (r"\N{DIGIT ONE}", "1"),
                                        (r"\]", "]"), (r"\.", ".")]))
        return esc, ch
    if kind == 3:  # classes, including escaped brackets
        cls, ch = draw(st.sampled_from([(r"[^\]]", "q"), (r"[\]x]", "]"), (r"[]a]", "]"), (r"[^]a]", "z"), (r"[a-c]", "b"),
                                        (r"[[:alpha:]]", "k"), (r"\d", "7"), (r"\s", " ")]))
        return cls, ch
    if kind == 4:
        p, s = _lit(draw)
        return p + draw(st.sampled_from(["", "+", "{1,3}", "{1}"])), s
    if kind == 5:  # case-insensitive, scoped or global
        p, s = draw(piece(depth + 1))
        return f"(?i:{p})", s.swapcase()
    if kind == 6:  # optional
        p, s = draw(piece(depth + 1))
        return f"(?:{p})?", draw(st.sampled_from([s, ""]))
    if kind == 7:  # alternation inside a group
        (p1, s1), (p2, s2) = draw(piece(depth + 1)), draw(piece(depth + 1))
        return f"(?:{p1}|{p2})", draw(st.sampled_from([s1, s2]))
    if kind == 8:
        p, s = draw(piece(depth + 1))
        return f"(?P<g{depth}>{p})", s
    if kind == 9:  # a plain capturing group, whose text every match contains
        p, s = draw(piece(depth + 1))
        return f"({p})", s
    if kind == 10:  # a repeated group: its text is there, but not necessarily next to its neighbours'
        p, s = draw(piece(depth + 1))
        return f"(?:{p})" + draw(st.sampled_from(["+", "{1,2}", "+?"])), draw(st.sampled_from([s, s + s]))
    if kind == 12:  # a comment between a group and the quantifier that makes it optional
        p, s = draw(piece(depth + 1))
        return f"(?:{p})(?#note)?", draw(st.sampled_from([s, ""]))
    if kind == 13:  # a `{` that repeats nothing is a literal, and may hide a group opening after it
        p, s = draw(piece(depth + 1))
        return f"x{{({p})?", draw(st.sampled_from(["x{" + s, "x{"]))
    if kind == 14:  # `[[:` that is no POSIX class
        p, s = draw(piece(depth + 1))
        return f"[[:](:]]{p})?", draw(st.sampled_from(["[", ":]" + s]))
    p, s = draw(piece(depth + 1))
    return f"(?:{p})*", draw(st.sampled_from(["", s, s + s]))


@st.composite
def pattern_and_match(draw) -> tuple[str, str]:
    parts = draw(st.lists(piece(), min_size=1, max_size=6))
    pat = "".join(p for p, _ in parts)
    text = "".join(s for _, s in parts)
    flags = draw(st.sampled_from(["", "(?i)", "(?si)", "(?s)", "(?x)", "(?m)"]))
    if flags == "(?x)":
        pat = "(?x)" + pat.replace(r"\ ", "[ ]")  # in verbose mode an escaped space stays a space
        pat = pat[:4] + " " + pat[4:]  # and a bare space means nothing
    elif flags:
        pat = flags + pat
        if "i" in flags:
            text = text.swapcase()
    if draw(st.booleans()):  # a top-level alternative the text does not take
        (p2, _), = draw(st.lists(piece(), min_size=1, max_size=1))
        pat = f"{pat}|{p2}" if not flags else pat
    return pat, text


@settings(max_examples=600, deadline=None)
@given(pattern_and_match(), st.text(alphabet="ab \n", max_size=5), st.text(alphabet="ab \n", max_size=5))
def test_prefilter_never_drops_a_match(pm, before, after):
    pat, text = pm
    try:
        rx = regex.compile(pat, regex.MULTILINE)
    except regex.error:
        return
    line = before + text + after
    if rx.search(line) is None:
        return  # the generator's sample does not match (e.g. a \s class in verbose mode): nothing to check
    needles = prefilter.literal_needles(pat)
    assert needles is None or any(n in line for n in needles), (pat, line, needles)


def test_needles_come_from_inside_plain_groups_and_avoid_everyday_text():
    # `HTTP/` is in every access line; the status group's `" 50` is only in failures
    assert prefilter.literal_needles(r'HTTP/[\d.]+" (?P<status>50[24]) ') == ('" 50',)
    assert prefilter.literal_needles(r'"POST (?P<p>/v1/(?:chat|x))(?:\?\S*)? HTTP/[\d.]+" 404') == ('" 404',)
    # a group that is optional, repeated or holds an alternation does not lend its text
    assert prefilter.literal_needles(r"abcd(?:efgh)?") == ("abcd",)
    assert prefilter.literal_needles(r"ab(?:cdef)+ghij") == ("ghij",)
    assert prefilter.literal_needles(r"abcd(?:ef|gh)ij") == ("abcd",)
    # with nothing else to go by, an everyday literal is still better than none
    assert prefilter.literal_needles(r"HTTP/[\d.]+") == ("HTTP/",)


def test_everyday_access_lines_try_no_rule():
    from diag.parsing.events import ACCESS, Event
    from diag.analysis.engine import RuleEngine

    engine = RuleEngine(rules.load(), on_hit=lambda h: None)
    for text in ('10.0.0.5:41234 - "POST /v1/chat/completions HTTP/1.1" 200 OK', '127.0.0.1:1 - "GET /health HTTP/1.1" 200 OK'):
        ev = Event("p", 1, "uvicorn", ACCESS, "INFO", None, text)
        assert engine.rules_for(ev) == [], text
    ev = Event("p", 1, "uvicorn", ACCESS, "INFO", None, '10.0.0.5:41234 - "POST /v1/chat/completions HTTP/1.1" 502 Bad Gateway')
    assert [r.id for r in engine.rules_for(ev)] == ["gateway-errors"]


def test_builtin_rules_keep_their_prefilter_and_it_is_sound_on_their_examples():
    rs = rules.load()
    with_needles = [r for r in rs.rules if r.patterns and r.needles]
    assert len(with_needles) >= len([r for r in rs.rules if r.patterns]) - 2  # the prefilter still works for plain patterns
    for r in with_needles:
        for ex in r.examples:
            if any(p.search(ex.text) for p in r.patterns):
                assert any(n in ex.text for n in r.needles), (r.id, r.needles)


# -- input errors exit 2 with one line ----------------------------------------------------------

def _diag(*args):
    return subprocess.run([sys.executable, "-m", "diag", *args], capture_output=True, text=True)


def test_corrupt_gzip_exits_2_with_one_line(tmp_path):
    body = gzip.compress(b"INFO 01-24 10:00:00 [x.py:1] hello\n" * 200)
    bad = tmp_path / "corrupt.log.gz"
    bad.write_bytes(body[:10] + bytes([0xFF] * 8) + body[18:])  # the deflate stream itself is broken
    r = _diag("scan", str(bad))
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("body,why", [
    ("daemon = 1\n", "`daemon` must be a [daemon] table"),
    ("log = 'x'\n", "`log` must be [[log]] tables"),
    ("web = 'off'\n", "`web` must be a [web] table"),
    ("[daemon]\npoll_interval = -1\n", "poll_interval must be greater than 0"),
    ("[daemon]\nrules_dirs = [1]\n", "rules_dirs must be a list of paths"),
])
def test_bad_config_exits_2_with_one_line(tmp_path, body, why):
    cfg = tmp_path / "diag.toml"
    cfg.write_text(body)
    r = _diag("daemon", "--check-config", "--config", str(cfg))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and str(cfg) in r.stderr and why in r.stderr, r.stderr


# -- rules lint: catastrophic patterns found from structure, not from a stopwatch -----------------

@pytest.mark.parametrize("pattern,bad", [
    (r"(x+x+)+y", True), (r"(\w+\s?)*$", True), (r"(a*)*b", True), (r"((ab)+)*c", True), (r"(?:\s*\w+)+:", True),
    (r"(?:\d+,)*\d+", False), (r"(a|b)*c", False), (r"(?>a+)+b", False), (r"a++b", False), (r"ERROR.*?x", False),
    (r"CUDA out of memory\. Tried to allocate (?P<size>[\d.]+ [KMGT]?i?B)", False),
])
def test_catastrophic_patterns_are_found_by_structure(pattern, bad):
    from diag.analysis.rules.lint import catastrophic

    assert (catastrophic(pattern) is not None) == bad


def test_rules_lint_flags_a_catastrophic_user_rule_and_passes_the_builtins(tmp_path):
    p = write(tmp_path, "evil.toml", RULE.format(rid="evil", extra="").replace("match = 'MARKER (?P<n>\\d+)'", "match = '(x+x+)+y'")
              .replace('{ text = "MARKER 7", fields = { n = "7" } }', '"xxy"'))
    r = _diag("rules", "lint", str(p))
    out = " ".join(r.stdout.split())  # rich may wrap the line
    assert r.returncode == 1 and "rule evil: pattern '(x+x+)+y' can backtrack catastrophically (nested unbounded repetition)" in out
    r = _diag("rules", "lint")
    assert r.returncode == 0 and "0 problem(s)" in r.stdout


def test_rules_lint_counts_fields_from_the_event_as_provided_for_the_summary():
    from diag.analysis.rules.lint import lint

    item = {"id": "x", "title": "t", "category": "model", "severity": "error", "summary": "model {name} ({n})",
            "remedy": "send the served model name", "match": "MARKER (?P<n>\\d+)", "examples": ["MARKER 7"],
            "counter_examples": ["nothing"]}
    assert "summary uses {name}" in " ".join(lint(rules.RuleSet([rules.build(item)])))
    assert lint(rules.RuleSet([rules.build(item | {"from_event": {"name": "model_requested"}})])) == []


@pytest.mark.parametrize("value", ["-1", "0"])
def test_a_bad_max_line_bytes_exits_2_with_one_line(tmp_path, value):
    log = tmp_path / "x.log"
    log.write_text("INFO 01-24 10:00:00 [x.py:1] hello\n")
    r = _diag("scan", "--max-line-bytes", value, str(log))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--max-line-bytes" in r.stderr, r.stderr
