"""The spool behind `diag scan --json`: traces settle in any order, from several sources, and come
out sorted by (source, first line), the document's separator between them and nowhere else, also
where a run of traces that follow each other in the spool is cut at the copy buffer's size.
tests/test_fastpath.py compares whole streamed documents with the in-memory one on the corpus."""

from __future__ import annotations

import io
import json
import random

import pytest

from diag.analysis.trace import Trace
from diag.report import jsonstream
from diag.report.jsonstream import TraceSpool
from diag.report.tracejson import pure_trace_json


def _traces(n: int) -> list[Trace]:
    rnd = random.Random(7)
    out = []
    for i in range(n):
        src = rnd.choice(["/logs/b.log", "/logs/a.log", "/logs/c.log"])
        t = Trace(f"chatcmpl-{i}", "vllm", src, client=f"10.0.0.{i % 4}:{40000 + i}", status="ok",
                  received_at=1_763_836_020.0 + i, latency_s=rnd.choice([None, 0.5]), first_line=rnd.randrange(0, 40))
        t.timeline = [{"kind": "request.received", "time": t.received_at, "line": t.first_line}]
        out.append(t)
    # mostly in order, as requests settle: some runs of neighbours, some out of place
    for _ in range(n // 4):
        i = rnd.randrange(n - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    return out


@pytest.mark.parametrize("indent", [None, 1])
@pytest.mark.parametrize("buffer", [1, 700, 5000, 1 << 20])
def test_spooled_traces_come_out_sorted_with_the_separator_between(monkeypatch, indent, buffer):
    monkeypatch.setattr(jsonstream, "BUFFER", buffer)  # runs cut (and the spool spilled) at every size
    traces = _traces(60)
    spool = TraceSpool(indent=indent)
    for t in traces:
        spool.add(t)
    out = io.BytesIO()
    spool.write_to(out)
    spool.close()
    order = sorted(range(len(traces)), key=lambda i: (traces[i].source, traces[i].first_line, i))
    sep = b", " if indent is None else b",\n  "
    assert out.getvalue() == sep.join(pure_trace_json(traces[i]) for i in order)
    got = json.loads(b"[" + out.getvalue() + b"]")
    assert [d["id"] for d in got] == [traces[i].id for i in order]


@pytest.mark.parametrize("indent", [None, 1])
def test_the_document_is_written_for_the_indent_the_traces_were_spooled_for(indent):
    """The document takes its indentation from the spool, so its own lines and the separators the
    traces were spooled with cannot disagree."""
    from diag.analysis.rules import ruleset as rules
    from diag.pipeline import Pipeline

    traces = _traces(5)
    spool = TraceSpool(indent=indent)
    for t in traces:
        spool.add(t)
    out = io.BytesIO()
    jsonstream.write_document(Pipeline(rules.load()), spool, out)
    spool.close()
    text = out.getvalue()
    sep = b", " if indent is None else b",\n  "
    assert text.startswith(b'{"diag_version"' if indent is None else b'{\n "diag_version"')
    assert text.count(b"}" + sep + b'{"id"') == len(traces) - 1
    assert len(json.loads(text)["traces"]) == len(traces)
