"""Running each rule's own examples (`diag rules test`, and the test suite).

An example is log text as the server writes it; it goes through the whole pipeline (format
detection, multi-line records, traces), so a rule is tested the way it runs. A positive
example must produce a hit whose fields include the ones it lists; a negative one must not.
"""

from __future__ import annotations

from dataclasses import dataclass

from diag.analysis.findings import Hit
from diag.parsing.source import SourceParser
from diag.pipeline import Pipeline, SourceResult
from diag.ingest.reader import iter_text_lines
from diag.analysis.rules.ruleset import Example, Rule, RuleSet


@dataclass
class ExampleResult:
    rule: Rule
    example: Example
    positive: bool
    ok: bool
    message: str = ""


def run_example(rule: Rule, ex: Example) -> list[Hit]:
    hits: list[Hit] = []
    pipe = Pipeline(RuleSet([rule]), on_hit=hits.append, keep_traces=False)
    parser = SourceParser(f"<example:{rule.id}>", fmt=ex.format)
    pipe.feed_lines(parser, iter_text_lines(ex.text), SourceResult("<example>"))
    pipe.finish()
    return [h for h in hits if h.rule.id == rule.id]


def test_rule(rule: Rule) -> list[ExampleResult]:
    out: list[ExampleResult] = []
    for ex in rule.examples:
        hits = run_example(rule, ex)
        if rule.disabled:
            out.append(ExampleResult(rule, ex, True, False, f"rule disabled: {rule.disabled}"))
            continue
        if not hits:
            out.append(ExampleResult(rule, ex, True, False, "positive example did not match"))
            continue
        got = hits[0].fields
        bad = {k: (v, got.get(k)) for k, v in ex.fields.items() if str(got.get(k)) != str(v)}
        if bad:
            detail = ", ".join(f"{k}: expected {w!r}, got {g!r}" for k, (w, g) in bad.items())
            out.append(ExampleResult(rule, ex, True, False, f"fields differ: {detail}"))
        else:
            out.append(ExampleResult(rule, ex, True, True))
    for ex in rule.counter_examples:
        hits = run_example(rule, ex)
        out.append(ExampleResult(rule, ex, False, not hits, "" if not hits else "negative example matched"))
    return out


def test_ruleset(rs: RuleSet) -> list[ExampleResult]:
    results: list[ExampleResult] = []
    for r in rs.rules:
        results.extend(test_rule(r))
    return results
