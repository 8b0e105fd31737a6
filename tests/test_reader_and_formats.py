"""Reading never crashes and never grows without bound; wrappers and prefixes are peeled off."""

from __future__ import annotations

import pytest

import gzip
import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diag.parsing import events as E
from diag.parsing.source import SourceParser, parse_text
from diag.ingest.reader import LineSplitter, read_lines

from conftest import VLLM
from diag.analysis.rules import ruleset as rules

_RULES = rules.load()

REAL_LINES = [ln for ln in (VLLM / "text.log").read_text(encoding="utf-8").splitlines() if ln][:150]
REAL_LINES += (VLLM.parent.parent / "llamacpp" / "real-b0c1e57-cpu" / "text.log").read_text().splitlines()[:60]
REAL_LINES += (VLLM.parent.parent / "lmdeploy" / "synthetic-0.16.log").read_text().splitlines()[:60]
REAL_LINES += (VLLM.parent.parent / "nginx" / "error.log").read_text().splitlines()[:20]


def lines_of(data: bytes, max_line: int = 1 << 20):
    return list(read_lines(io.BytesIO(data), splitter=LineSplitter(max_line)))


def test_crlf_stray_cr_ansi_nul_and_invalid_utf8():
    data = b"a\r\nb\rc\n\x1b[1;36m(APIServer pid=1)\x1b[0;0m INFO 01-24 10:00:05 [x.py:1] hi\x00 there\n\xff\xfe bad\n"
    ls = lines_of(data)
    assert [ln.text for ln in ls] == ["a", "c", "(APIServer pid=1) INFO 01-24 10:00:05 [x.py:1] hi there", "\ufffd\ufffd bad"]
    assert ls[0].cr and not ls[1].cr


def test_long_lines_are_cut_counted_and_memory_stays_bounded():
    sp = LineSplitter(max_line=1000)
    big = b"x" * 10_000_000 + b"\nnext\n"
    out = []
    for i in range(0, len(big), 65536):  # fed in chunks like a follower would
        out.extend(sp.feed(big[i:i + 65536]))
        assert sp.pending <= 1000
    assert [len(ln.text) for ln in out] == [1000, 4]
    assert out[0].truncated and sp.truncated_lines == 1
    assert out[1].end_offset == len(big)


def test_last_line_without_newline_is_held_until_flushed():
    sp = LineSplitter()
    assert list(sp.feed(b"one\ntw")) and sp.pending == 2
    assert [ln.text for ln in sp.flush()] == ["tw"]


def test_gzip_input(tmp_path):
    p = tmp_path / "vllm.log.gz"
    p.write_bytes(gzip.compress((VLLM / "text.log").read_bytes()))
    from conftest import scan, traces

    assert len(traces(scan(p))) == 12


def _one(line: str):
    evs = parse_text(line)
    assert len(evs) == 1, evs
    return evs[0]


def test_wrappers_compose_docker_journald_ray():
    base = "(APIServer pid=1) INFO 01-24 10:03:12 [async_llm.py:578] Added request chatcmpl-3f9a1c2b7d4e5f60-a1b2c3d4."
    for wrapped in (base, "vllm-1  | " + base, "2026-01-24T10:03:12.123456789Z " + base,
                    "Jan 24 10:03:12 gpu01 vllm[4242]: " + base, "vllm-1  | 2026-01-24T10:03:12Z " + base):
        ev = _one(wrapped)
        assert ev.kind == E.ADDED and ev.fields["request_id"] == "chatcmpl-3f9a1c2b7d4e5f60-a1b2c3d4" and ev.fmt == "vllm", wrapped
        assert ev.proc == "APIServer" and ev.pid == 1
    ray = _one("(WorkerDict pid=77, ip=10.0.0.2) ERROR 01-24 10:03:12 [core.py:1] NCCL error: boom [repeated 3x across cluster]")
    assert ray.proc == "WorkerDict" and ray.repeated == 3 and ray.text.endswith("boom")


@pytest.mark.parametrize("prefix, ts", [
    # journalctl -u vllm -o <mode> (man journalctl: OUTPUT OPTIONS), as users save it
    ("Jan 24 10:03:12 gpu01 vllm[4242]: ", None),  # short: the year is the file's
    ("Jan 24 10:03:12.654321 gpu01 vllm[4242]: ", None),  # short-precise
    ("2026-01-24T10:03:12+0000 gpu01 vllm[4242]: ", None),  # short-iso
    ("2026-01-24T10:03:12.654321+0000 gpu01 vllm[4242]: ", None),  # short-iso-precise
    ("Sat 2026-01-24 10:03:12 UTC gpu01 vllm[4242]: ", 1769248992.0),  # short-full (the 24th is a Saturday)
    ("1769248992.654321 gpu01 vllm[4242]: ", 1769248992.654321),  # short-unix
    ("[ 1234.567890] gpu01 vllm[4242]: ", None),  # short-monotonic: seconds since boot, no time of day
])
def test_every_journalctl_short_output_mode_is_peeled(prefix, ts):
    """A Received line behind each of journalctl's short modes is read as one; where the mode gives a
    full time, an untimed line behind it (uvicorn's access line) takes it."""
    ev = _one(prefix + "(APIServer pid=1) INFO 01-24 10:03:12 [request_logger.py:65] Received request chatcmpl-1: "
              "params: SamplingParams(n=1, max_tokens=7), lora_request: None.")
    assert ev.kind == E.RECEIVED and ev.fields["max_tokens"] == 7 and ev.proc == "APIServer", prefix
    access = _one(prefix + 'INFO:     127.0.0.1:5000 - "POST /v1/chat/completions HTTP/1.1" 200 OK')
    assert access.kind == E.ACCESS and access.fields["status"] == 200, prefix
    if ts is not None:
        assert access.ts == pytest.approx(ts, abs=1e-6), prefix


def test_vllm_prefix_variants():
    for line in ("INFO 01-24 00:13:45 api_server.py:712] vLLM API server version 0.6.6.post1",
                 "INFO 01-24 00:13:45 [api_server.py:1043] vLLM API server version 0.8.5.post1",
                 "(APIServer pid=1) DEBUG 01-24 00:13:45 [v1/engine/async_llm.py:578] x",
                 "INFO 01-24 00:13:45,123 [engine.py:321] Started engine with config: model='m'"):
        assert _one(line).fmt == "vllm", line


def test_multiline_record_with_repeated_prefix_is_one_event():
    text = ("ERROR 01-24 09:06:04 engine.py:135] OutOfMemoryError('CUDA out of memory.')\r\n"
            "ERROR 01-24 09:06:04 engine.py:135] Traceback (most recent call last):\r\n"
            "ERROR 01-24 09:06:04 engine.py:135]   File \"x.py\", line 1, in f\r\n"
            "ERROR 01-24 09:06:04 engine.py:135] torch.OutOfMemoryError: CUDA out of memory.\n"
            "ERROR 01-24 09:06:04 engine.py:135] another message\n")
    evs = parse_text(text)
    assert len(evs) == 2 and evs[0].end_lineno == 4
    # the frame is not rule input; the exception line keeps its own line number
    assert evs[0].text.count("\n") == 2 and "x.py" not in evs[0].text
    assert evs[0].line_at(evs[0].text.index("torch.OutOfMemoryError")) == 4


def test_raw_traceback_joins_the_record_before_it():
    text = ("ERROR:    Exception in ASGI application\nTraceback (most recent call last):\n  File \"a.py\", line 1\n"
            "ValueError: x\n\nThe above exception was the direct cause of the following exception:\n\n"
            "Traceback (most recent call last):\n  File \"b.py\", line 2\nRuntimeError: y\n"
            "INFO:     127.0.0.1:1 - \"GET /health HTTP/1.1\" 200 OK\n")
    evs = parse_text(text)
    assert [e.kind for e in evs] == [E.LOG, E.ACCESS]
    assert evs[0].text.endswith("RuntimeError: y")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_random_bytes_never_crash(data):
    sp = SourceParser("<fuzz>")
    for ln in read_lines(io.BytesIO(data), splitter=LineSplitter(512)):
        assert len(ln.text) <= 512
        for ev in sp.feed(ln):
            assert len(ev.text) <= 256 * 1024 + 1024
    sp.flush()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REAL_LINES), st.integers(0, 400), st.text(max_size=20), st.integers(0, 400))
def test_mutated_real_lines_never_crash(line, at, insert, cut):
    mutated = line[:at] + insert + line[at:]
    mutated = mutated[: max(1, len(mutated) - cut)]
    from diag.pipeline import Pipeline, SourceResult
    from diag.ingest.reader import iter_text_lines

    pipe = Pipeline(_RULES)
    pipe.feed_lines(SourceParser("<fuzz>"), iter_text_lines("\n".join([line, mutated, mutated[::-1]])), SourceResult("<fuzz>"))
    pipe.finish()


def test_scan_only_the_tail_of_a_big_log():
    from diag.pipeline import Pipeline

    p = VLLM / "text.log"
    whole = Pipeline(_RULES)
    assert whole.scan_path(str(p), tail_bytes=10 ** 9).lines == 216
    tail = Pipeline(_RULES)
    r = tail.scan_path(str(p), tail_bytes=3000)
    assert 0 < r.lines < 60  # starts at a line boundary inside the last 3000 bytes
    tail.finish()
    assert all(t.first_line >= 1 for t in tail.traces)
