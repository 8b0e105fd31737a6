"""Access lines find their request through an index (diag.analysis.access_index), with the documented
unambiguity rule of diag/analysis/access_lines.py: same source, matching endpoint family, no status yet, not
aborted; one candidate → attached; as many identical statuses as candidates → status to all."""

from __future__ import annotations

from diag.parsing import events as E
from diag.parsing.events import Event
from diag.analysis.traces import TraceAssembler

LOG = "/var/log/vllm.log"


def _req(a: TraceAssembler, kind: str, rid: str, line: int, path: str = LOG) -> None:
    a.feed(Event(path, line, "vllm", kind, "INFO", 1000.0 + line, "", fields={"request_id": rid}))


def _access(a: TraceAssembler, endpoint: str, status: int, line: int, path: str = LOG, client: str = "10.0.0.9:5000"):
    ev = Event(path, line, "uvicorn", E.ACCESS, "INFO", 1000.0 + line, "",
               fields={"client": client, "method": "POST", "path": endpoint, "status": status})
    return a.feed(ev)


def test_the_only_request_of_the_endpoints_family_takes_the_line_among_many_of_another():
    a = TraceAssembler()
    line = 0
    for i in range(500):  # completions requests waiting for their access lines
        line += 1
        _req(a, E.RECEIVED, f"cmpl-{i:04x}-0", line)
    _req(a, E.RECEIVED, "chatcmpl-only", line + 1)
    t = _access(a, "/v1/chat/completions", 200, line + 2)
    assert t is not None and t.id == "chatcmpl-only" and t.http_status == 200 and t.client == "10.0.0.9:5000"
    assert a.get("cmpl-0000-0").http_status is None


def test_two_candidates_wait_and_get_the_status_but_not_the_client_when_both_lines_agree():
    a = TraceAssembler()
    _req(a, E.RECEIVED, "chatcmpl-a", 1)
    _req(a, E.RECEIVED, "chatcmpl-b", 2)
    assert _access(a, "/v1/chat/completions", 200, 3) is None
    _access(a, "/v1/chat/completions", 200, 4)
    for rid in ("chatcmpl-a", "chatcmpl-b"):
        t = a.get(rid)
        assert t.http_status == 200 and t.client is None
    assert a.http_count == 0


def test_an_aborted_request_is_no_candidate_so_the_other_one_takes_the_line():
    a = TraceAssembler()
    _req(a, E.RECEIVED, "chatcmpl-a", 1)
    _req(a, E.RECEIVED, "chatcmpl-b", 2)
    _req(a, E.ABORTED, "chatcmpl-a", 3)
    t = _access(a, "/v1/chat/completions", 499, 4)
    assert t is not None and t.id == "chatcmpl-b"
    assert a.get("chatcmpl-a").http_status is None


def test_other_sources_and_get_requests_are_never_candidates():
    a = TraceAssembler()
    _req(a, E.RECEIVED, "chatcmpl-a", 1, path="/var/log/other.log")
    assert _access(a, "/v1/chat/completions", 200, 2) is None
    assert a.get("chatcmpl-a").http_status is None
    assert a.http_count == 1  # an HTTP record of its own
