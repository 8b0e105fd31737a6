"""Every built-in rule's own examples, and what happens with broken or hostile rules."""

from __future__ import annotations

import textwrap
import time

import pytest

from diag import prefilter, rules
from diag.pipeline import Pipeline
from diag.ruletest import test_rule as run_rule_examples

BUILTIN = rules.load()


def test_builtin_rules_load_cleanly_and_cover_every_category():
    assert BUILTIN.errors == []
    assert len(BUILTIN.rules) >= 40
    assert {r.category for r in BUILTIN.rules} >= {"oom", "model", "image", "context", "engine", "network", "dependency", "config", "performance"}


@pytest.mark.parametrize("rule", BUILTIN.rules, ids=lambda r: r.id)
def test_rule_examples(rule):
    results = run_rule_examples(rule)
    assert results, "a rule without examples"
    bad = [f"{'positive' if r.positive else 'negative'}: {r.message}: {r.example.text[:120]}" for r in results if not r.ok]
    assert not bad, bad


def write(tmp_path, name, body):
    p = tmp_path / name
    p.write_text(textwrap.dedent(body), encoding="utf-8")
    return p


GOOD = '''
[[rule]]
id = "custom-marker"
title = "Custom marker"
category = "other"
severity = "error"
match = 'MARKER (?P<n>\\d+)'
summary = "marker {n}"
remedy = "remove the marker from the log please"
examples = [{ text = "MARKER 7", fields = { n = "7" } }]
counter_examples = ["nothing here"]
'''


def test_malformed_rule_file_is_reported_with_its_line_and_others_still_load(tmp_path):
    write(tmp_path, "a_good.toml", GOOD)
    write(tmp_path, "b_broken.toml", '[[rule]]\nid = "x"\ntitle = "unterminated\n')
    write(tmp_path, "c_invalid.toml", GOOD.replace("custom-marker", "bad-sev").replace('severity = "error"', 'severity = "fatal"'))
    rs = rules.load([tmp_path])
    assert any("b_broken.toml" in e and "line 3" in e for e in rs.errors), rs.errors
    assert any("c_invalid.toml:3" in e and "severity" in e for e in rs.errors), rs.errors
    ids = {r.id for r in rs.rules}
    assert "custom-marker" in ids and "cuda-oom" in ids and "bad-sev" not in ids


def test_user_rules_override_builtins_by_id(tmp_path):
    body = GOOD.replace("custom-marker", "slow-request").replace('severity = "error"', 'severity = "info"')
    write(tmp_path, "override.toml", body)
    rs = rules.load([tmp_path])
    r = rs.by_id("slow-request")
    assert r.severity == "info" and r.file.endswith("override.toml")
    assert len([x for x in rs.rules if x.id == "slow-request"]) == 1


def test_catastrophic_pattern_disables_only_its_rule(tmp_path, capsys):
    evil = GOOD.replace("custom-marker", "evil")
    evil = evil.replace(evil[evil.index("match = "):evil.index("summary")], "match = '(x+x+)+y'\n")
    write(tmp_path, "evil.toml", evil.replace('"MARKER 7", fields = { n = "7" }', '"xxy"'))
    rs = rules.load([tmp_path])
    hits = []
    pipe = Pipeline(rs, on_hit=hits.append)
    from diag.parsers import SourceParser
    from diag.pipeline import SourceResult
    from diag.reader import iter_text_lines

    text = "x" * 5000 + "\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    t0 = time.perf_counter()
    pipe.feed_lines(SourceParser("<t>"), iter_text_lines(text), SourceResult("<t>"))
    pipe.finish()
    assert time.perf_counter() - t0 < 5
    assert rs.by_id("evil").disabled and "catastrophic" in rs.by_id("evil").disabled
    assert any("evil" in e for e in pipe.engine.errors)
    assert [h.rule.id for h in hits] == ["cuda-oom"]  # the others keep working


def test_literal_needles_are_sound():
    assert prefilter.literal_needle(r"CUDA out of memory\. Tried to allocate (?P<size>\S+)") == "CUDA out of memory. Tried to allocate "
    assert prefilter.literal_needle(r"a|b") is None
    assert prefilter.literal_needle(r"(?i)error") is None
    assert prefilter.literal_needle(r"abcde?f") == "abcd"
    assert prefilter.literal_needle(r"xy\d{2,64}zzzz") == "zzzz"
    assert prefilter.literal_needles(r"(?:Worker died|Engine died)") == ("Worker died", "Engine died")
    assert prefilter.literal_needles(r"alpha \d+|(?P<x>beta)") == ("alpha ", "beta")  # a whole-group alternative is looked into
    assert prefilter.literal_needles(r"(?P<x>gam|del)") is None  # literals under 4 characters are not worth a prefilter
    assert prefilter.literal_needles(r"alpha|\d+") is None  # one alternative with no literal: always run
    # every rule with patterns except one gets a prefilter, and its examples (run by test_rule_examples) prove it sound
    assert [r.id for r in BUILTIN.rules if r.patterns and not r.needles] == ["model-path-invalid"]
