"""Every built-in rule's own examples, and what happens with broken or hostile rules."""

from __future__ import annotations

import textwrap

import pytest

from diag.analysis.rules import prefilter, ruleset as rules
from diag.pipeline import Pipeline
from diag.analysis.rules.examples import test_rule as run_rule_examples

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
    from diag.parsing.source import SourceParser
    from diag.pipeline import SourceResult
    from diag.ingest.reader import iter_text_lines

    text = "x" * 5000 + "\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    pipe.feed_lines(SourceParser("<t>"), iter_text_lines(text), SourceResult("<t>"))
    pipe.finish()
    assert rs.by_id("evil").disabled and "catastrophic" in rs.by_id("evil").disabled
    assert any("evil" in e for e in pipe.engine.errors)
    assert [h.rule.id for h in hits] == ["cuda-oom"]  # the others keep working


# (pattern, lines it matches, a line it does not match)
_PREFILTER_CASES = [
    (r"CUDA out of memory\. Tried to allocate (?P<size>\S+)", ["x CUDA out of memory. Tried to allocate 2 GiB"], "CUDA out of memory"),
    (r"abcde?f", ["abcdf", "abcdef"], "abcxf"),
    (r"xy\d{2,64}zzzz", ["xy12zzzz"], "xy12zzz"),
    (r"(?:Worker died|Engine died)", ["Worker died", "Engine died"], "Worker live"),
    (r"alpha \d+|(?P<x>beta)", ["alpha 1", "beta"], "gamma"),
    # a leading (?m)/(?s) moves only ^ $ and .: the literals stay required
    (r"(?m)^(?:.*\s)?Bus error\s*$|received signal SIGBUS", ["core: Bus error", "received signal SIGBUS"], "Bus erro"),
]


def test_the_prefilter_skips_lines_that_cannot_match_and_keeps_those_that_can():
    """Behaviour, not the needles' spelling: every line a pattern matches passes the prefilter, and
    a line with none of the required literals is skipped (so plain patterns cost almost nothing)."""
    import regex

    for pat, hits, miss in _PREFILTER_CASES:
        needles = prefilter.literal_needles(pat)
        assert needles, pat  # a pattern with required literals gets a prefilter
        for line in hits:
            assert regex.search(pat, line) and any(n in line for n in needles), (pat, line)
        assert not regex.search(pat, miss) and not any(n in miss for n in needles), (pat, miss)
    for pat in (r"(?i)error", r"alpha|\d+", r"(?P<x>gam|del)", r"a|b"):  # no literal every match must contain
        assert prefilter.literal_needles(pat) is None, pat
    # every built-in rule but one (a path pattern with no required literal) keeps a prefilter
    assert [r.id for r in BUILTIN.rules if r.patterns and not r.needles] == ["model-path-invalid"]


def test_rules_report_trace_findings_without_changing_the_trace():
    """One direction: the rules stage reads a trace (for its conditions) and reports which trace a
    hit is about; only the pipeline, through the assembler, writes the finding into the trace."""
    from diag.analysis.engine import RuleEngine
    from diag.analysis.trace import Trace

    t = Trace("chatcmpl-1", "vllm", "a.log", status="failed", reason="engine dead")
    hits, told = [], []
    engine = RuleEngine(rules.load(), on_hit=hits.append, trace_lookup=lambda rid, path=None: t)
    engine.check_trace(t, final=True)
    assert "request-failed-engine-dead" in [h.rule.id for h in hits]
    assert t.findings == []  # no sink: nothing written into the trace
    engine = RuleEngine(rules.load(), on_hit=lambda h: None, trace_lookup=lambda rid, path=None: t,
                        on_trace_finding=lambda tr, rid: told.append((tr.id, rid)))
    engine.check_trace(t, final=True)
    assert ("chatcmpl-1", "request-failed-engine-dead") in told and t.findings == []


def test_a_start_seen_by_the_facts_stage_begins_a_new_id_epoch_and_names_the_model():
    from diag.ingest.reader import iter_text_lines
    from diag.parsing.source import SourceParser
    from diag.pipeline import SourceResult

    pipe = Pipeline(rules.load())
    log = ("INFO 01-24 10:00:00 api_server.py:1] vLLM API server version 0.6.6, serving model /m/Qwen2-VL\n"
           "INFO 01-24 10:00:01 engine.py:267] Added request chatcmpl-1.\n"
           "INFO 01-24 10:05:00 api_server.py:1] vLLM API server version 0.6.6, serving model /m/Qwen2-VL-7B\n"
           "INFO 01-24 10:05:01 engine.py:267] Added request chatcmpl-1.\n")
    pipe.feed_lines(SourceParser("v.log"), iter_text_lines(log), SourceResult("v.log"))
    traces = pipe.finish()
    assert [(t.id, t.model) for t in traces] == [("chatcmpl-1", "/m/Qwen2-VL"), ("chatcmpl-1#2", "/m/Qwen2-VL-7B")]


def test_render_optional_parts_and_empty_values():
    from diag.analysis.findings import render

    t = "A prompt[ of {tokens|prompt_tokens} tokens] did not fit[ the slot of {n_ctx}]; value `{value}`[ ({seg})]."
    # a part in brackets with a slot goes, brackets and all, when one of its slots has no value
    assert render(t, {"value": "x"}) == "A prompt did not fit; value `x`."
    assert render(t, {"prompt_tokens": 9317, "n_ctx": 8192, "value": "x", "seg": None}) == \
        "A prompt of 9317 tokens did not fit the slot of 8192; value `x`."
    # a value captured as the empty string is there, and reads '' (after a non-empty alternative)
    assert render("value `{a|b}`", {"a": ""}) == "value `''`"
    assert render("value `{a|b}`", {"a": "", "b": "y"}) == "value `y`"
    assert render("[ ({a})]!", {"a": ""}) == " ('')!"
    # a slot outside brackets still says it is missing; brackets around no slot are text
    assert render("[x] {a}", {}) == "[x] ?"
    # a value is never read as a template
    assert render("[{a}] {b}", {"a": "{b}", "b": "[{a}]"}) == "{b} [{a}]"


def test_from_facts_fills_what_the_line_did_not_capture():
    from diag.analysis.findings import render
    from diag.analysis.rules.examples import run_example
    from diag.analysis.rules.ruleset import Example

    r = rules.build({"id": "t", "title": "t", "category": "model", "severity": "error",
                     "match": r"gone(?: \((?P<name>\w+)\))?", "from_facts": {"name": "served_model_name"},
                     "summary": "gone[ ({name})]", "remedy": "x" * 30, "examples": ["gone"], "counter_examples": ["here"]})
    start = ("INFO 01-24 09:00:05 llm_engine.py:234] Initializing an LLM engine (v0.6.6.post1) with config: model='m', "
             "served_model_name=foo, seed=0\n")
    hits = run_example(r, Example(start + "ERROR 01-24 09:03:01 serving_chat.py:114] gone"))
    assert [h.fields for h in hits] == [{"name": "foo"}] and render(r.summary, hits[0].fields) == "gone (foo)"
    # what the line captured wins over the fact; no fact, no field
    hits = run_example(r, Example(start + "ERROR 01-24 09:03:01 serving_chat.py:114] gone (bar)"))
    assert [h.fields for h in hits] == [{"name": "bar"}]
    hits = run_example(r, Example("ERROR 01-24 09:03:01 serving_chat.py:114] gone"))
    assert [h.fields for h in hits] == [{}] and render(r.summary, hits[0].fields) == "gone"
