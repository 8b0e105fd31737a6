"""The hot path changes how fast, never what: `diag.ingest.fastpath` against the full parser, the
compiled classifier against the pure one, the streamed `--json` against the in-memory document.

Inputs: every log of the recorded corpus and of the field corpus (pasted excerpts), and a fuzzed log (deterministic seed) built from real
vLLM 0.32 / 0.6 and uvicorn lines with what breaks naive fast paths mixed in: carriage returns
(vLLM's multi-line records), ANSI colours, NUL bytes, invalid UTF-8, non-ASCII prompts, lines
over the length cap, trailing colons, Ray's repeat suffix, docker/compose prefixes, tracebacks
in the middle of request bursts, other servers' formats, terminal hard wraps, and random cuts
and byte flips. The
fuzzed log is fed in random chunk sizes so that lines straddle chunk boundaries.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import COMPILED_CLASSIFIER, CORPUS, needs_compiled

from diag.analysis.rules import ruleset as rules
from diag.ingest.fastpath import FastSource
from diag.ingest.fastpath import classify as pure_classify
from diag.parsing.source import FORMATS, SourceParser
from diag.pipeline import Pipeline
from diag.ingest.reader import LineSplitter
from diag.report.document import to_json

FIELD = Path(__file__).parent / "data" / "field"  # excerpts users pasted into issue threads
LOGS = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix not in (".md", ".json", ".txt"))
LOGS += sorted(p for p in FIELD.rglob("*") if p.is_file() and p.suffix not in (".md", ".json", ".toml"))

compiled = COMPILED_CLASSIFIER


def _doc(pipe: Pipeline) -> dict:
    d = to_json(pipe)
    d["stats"].pop("seconds")
    return d


def _scan(paths: list[Path], fast: bool, max_line: int = 1 << 20) -> dict:
    pipe = Pipeline(rules.load(), fast=fast, max_line=max_line)
    for p in paths:
        pipe.scan_path(str(p))
    pipe.finish()
    return _doc(pipe)


# -- a fuzzed log --------------------------------------------------------------------------------
_TS = "11-22 18:28:{:02d}"
_TEMPLATES = [
    "(APIServer pid=16263) INFO {ts} [request_logger.py:65] Received request {rid}: params: SamplingParams(n=1, "
    "temperature=0.7, max_tokens={n}, min_tokens=0), lora_request: None.",
    "(APIServer pid=16263) INFO {ts} [async_llm.py:578] Added request {rid}-{sfx}.",
    "INFO {ts} logger.py:37] Received request {rid}: prompt: '<|im_start|>user\\n<|vision_start|><|image_pad|>"
    "<|vision_end|>描述这张图片 Traceback (most recent call last) CUDA out of memory<|im_end|>', params: "
    "SamplingParams(n=1, max_tokens={n}), prompt_token_ids: [1, 2, 3], lora_request: None.",
    "INFO {ts} engine.py:267] Added request {rid}.",
    'INFO:     10.0.{a}.{b}:{port} - "POST /v1/chat/completions HTTP/1.1" {status}',
    'INFO:     10.0.{a}.{b}:{port} - "POST /v1/completions HTTP/1.1" 200 OK',
    'INFO:     127.0.0.1:{port} - "GET /health HTTP/1.1" 200 OK',
    'INFO:     127.0.0.1:{port} - "POST /chat/completions HTTP/1.1" 404 Not Found',
    "(APIServer pid=16263) INFO {ts} [async_llm.py:922] Aborted request(s) {rid}-{sfx}.",
    "(APIServer pid=16263) INFO {ts} [async_llm.py:783] Request {rid} aborted.",
    "(APIServer pid=16263) INFO {ts} [loggers.py:259] Engine 000: Avg prompt throughput: 1.0 tokens/s, Avg generation "
    "throughput: 2.0 tokens/s, Running: {r} reqs, Waiting: {w} reqs, GPU KV cache usage: 97.5%, Prefix cache hit rate: 0.0%",
    "(APIServer pid=16263) ERROR {ts} [serving.py:274] Error with model error=ErrorInfo(message='The model `x` does not "
    "exist.', type='NotFoundError', param='model', code=404)",
    "(EngineCore pid=9740) ERROR {ts} [core.py:1510] Traceback (most recent call last):",
    '(EngineCore pid=9740) ERROR {ts} [core.py:1510]   File "/opt/vllm/core.py", line 157, in __init__',
    "(EngineCore pid=9740) ERROR {ts} [core.py:1510] ValueError: No available memory for the cache blocks. Try increasing "
    "`gpu_memory_utilization` when initializing the engine.",
    "Traceback (most recent call last):",
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
    "(APIServer pid=16263) WARNING {ts} [api_server.py:1000] Added request {rid}:",
    "(APIServer pid=16263) INFO {ts} [api_server.py:1880] Starting vLLM server on http://0.0.0.0:3001",
    "(APIServer pid=16263) INFO {ts} [api_utils.py:347]   █▄█▀ █     █     █     █  model   /models/Qwen3-VL-8B",
    "vllm-1  | (APIServer pid=1) INFO {ts} [async_llm.py:578] Added request {rid}-{sfx}.",
    "2026-11-22T18:28:00.123456789Z (APIServer pid=1) INFO {ts} [async_llm.py:578] Added request {rid}-{sfx}.",
    "(WorkerDict pid=7, ip=10.0.0.2) INFO {ts} [async_llm.py:578] Added request {rid}-{sfx}. [repeated 3x across cluster]",
    "(APIServer pid=16263) INFO {ts} [async_llm.py:578] Added request {rid}-{sfx}. [repeated 2x across cluster]",
    "(APIServer pid=16263) INFO {ts},123 [async_llm.py:578] Added request {rid}-{sfx}.",
    "(APIServer pid=16263) INFO {ts} async_llm.py:578] Added request {rid}-{sfx}.",
    '10.0.0.1 - - [22/Nov/2026:18:28:00 +0000] "POST /v1/chat/completions HTTP/1.1" 200 512 "-" "python-httpx"',
    "srv  log_server_r: request: POST /completion 127.0.0.1 200",
    "INFO:     Started server process [16263]",
    # user content the parsers must take out whatever path reads the line
    'INFO:     10.0.0.1:{port} - "GET /v1/models?api_key=SECRET HTTP/1.1" 200 OK',
    'INFO:     10.0.0.1:{port} - "POST /v1/chat/completions?trace=SECRET HTTP/1.1" 200 OK',
    'INFO:     10.0.0.1:{port} - "GET /files/SECRET-report.pdf HTTP/1.1" 404 Not Found',
    "INFO {ts} logger.py:37] Received request {rid}: prompt: 'look at https://img.example.com/SECRET.png?sig=1 and "
    "data:image/png;base64,SECRET {{\"content\": \"SECRET\"}}', params: SamplingParams(n=1, max_tokens={n}), "
    "prompt_token_ids: [1, 2], lora_request: None.",
    "(APIServer pid=16263) INFO {ts} [request_logger.py:65] Received request {rid}: params: SamplingParams(n=1, "
    "stop=['http://SECRET/x?y'], max_tokens={n}), lora_request: None.",
    "",
]


def fuzzed_log(seed: int, n: int = 6000) -> bytes:
    rnd = random.Random(seed)
    rids = [f"chatcmpl-{rnd.getrandbits(48):012x}" for _ in range(40)] + [f"cmpl-{rnd.getrandbits(48):012x}-0" for _ in range(10)]
    out = []
    for _ in range(n):
        t = rnd.choice(_TEMPLATES) if rnd.random() < 0.5 else rnd.choice(_TEMPLATES[:6])
        line = t.format(ts=_TS.format(rnd.randrange(60)), rid=rnd.choice(rids), sfx=f"{rnd.getrandbits(32):08x}",
                        n=rnd.randrange(1, 4096), a=rnd.randrange(3), b=rnd.randrange(3), port=rnd.randrange(30000, 60000),
                        status=rnd.choice(("200 OK", "200 OK", "400 Bad Request", "500 Internal Server Error")),
                        r=rnd.randrange(3), w=rnd.randrange(3)).encode()
        x = rnd.random()
        if x < 0.03:
            line += b"\r"  # vLLM's NewLineFormatter: the record goes on
        elif x < 0.05:
            line = b"\x1b[32m" + line + b"\x1b[0m"
        elif x < 0.06:
            line = line.replace(b" ", b"\x00", 1)
        elif x < 0.08:
            line += rnd.choice((b"\xff\xfe", "é中".encode(), b"\xe4\xb8", b":", b": "))
        elif x < 0.09 and line:
            cut = rnd.randrange(len(line))
            line = line[:cut]
        elif x < 0.10 and line:
            i = rnd.randrange(len(line))
            line = line[:i] + bytes([rnd.randrange(256)]) + line[i + 1:]
        elif x < 0.11:
            line = line + b" " + b"x" * rnd.randrange(300, 900)  # over the 512-byte cap used below
        elif x < 0.12:
            line = b"  " + line
        elif x < 0.14:  # pasted into an issue: quotes, bold, code fences, elisions, shell prompts
            line = rnd.choice((b"> " + line, b"**" + line + b"**", line + b"**", line + b"```", b"```" + line,
                               b"`" + line + b"`", b"...", b"[...]", b"$ " + line, b"user@gpu:~$ vllm serve x"))
        elif x < 0.17 and len(line) > 100:  # hard-wrapped by a terminal 80 or 100 columns wide
            w = rnd.choice((80, 100))
            out.append(line[:w])
            line = line[w:]
        elif x < 0.19:  # exactly as wide as a common terminal: maybe wrapped, maybe not
            line = line[:rnd.choice((80, 100, 120))].ljust(rnd.choice((80, 100, 120)), b"x")
        out.append(line)
    return b"\n".join(out) + (b"\n" if rnd.random() < 0.5 else b"")


def _fast_in_chunks(log: Path, seed: int, max_line: int) -> tuple[dict, int]:
    """The fast path fed in random chunk sizes (lines straddle chunks; over-long lines span several)."""
    pipe = Pipeline(rules.load(), max_line=max_line)
    src = FastSource(pipe, SourceParser(str(log), log.stat().st_mtime), LineSplitter(max_line))
    src.read(io.BytesIO(log.read_bytes()), chunk=random.Random(seed).choice((1, 7, 97, 1000, 4096)))
    pipe.finish()
    d = _doc(pipe)
    del d["files"], d["stats"]
    return d, src.lines


# -- fast path == full path -----------------------------------------------------------------------
@pytest.mark.parametrize("log", LOGS, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_fast_path_gives_the_full_paths_document_on_corpus_log(log):
    assert _scan([log], fast=True) == _scan([log], fast=False)


def test_fast_path_gives_the_full_paths_document_on_all_corpus_logs_together():
    assert _scan(LOGS, fast=True) == _scan(LOGS, fast=False)


@pytest.mark.parametrize("seed", range(6))
def test_fast_path_gives_the_full_paths_document_on_fuzzed_log(tmp_path, seed):
    data = fuzzed_log(seed)
    log = tmp_path / "fuzz.log"
    log.write_bytes(data)
    os.utime(log, (1.7e9, 1.7e9))
    full = _scan([log], fast=False, max_line=512)
    assert full["traces"] and full["findings"], "the fuzzed log should produce traces and findings"
    assert "SECRET" in data.decode("utf-8", "replace") and "SECRET" not in json.dumps(full)
    assert _scan([log], fast=True, max_line=512) == full
    chunked, lines = _fast_in_chunks(log, seed, 512)
    lines_full = full["stats"]["lines"]
    del full["files"], full["stats"]
    assert chunked == full
    assert lines == lines_full == data.count(b"\n") + (not data.endswith(b"\n"))


def _runtime_time(rnd: random.Random, i: int) -> bytes:
    """What a container runtime or `docker logs --timestamps` puts first: mostly UTC with
    nanoseconds; some at an offset, without a fraction, without a zone (local time: the full
    path's), of the one length where wrappers look for KServe's logger names, or no time at all;
    or what journalctl does (with and without a pid and a fraction, a date no calendar has, a
    month in lower case: the full path's)."""
    sec = b"2026-11-22T%02d:%02d:%02d" % (18 + i // 3600 % 6, i // 60 % 60, i % 60)
    journal = b"Nov %2d %02d:%02d:%02d" % (22 + i // 86400 % 3, 18 + i // 3600 % 6, i // 60 % 60, i % 60)
    return rnd.choice((sec + b".%09dZ " % rnd.randrange(10**9),) * 6 + (
        sec + b".%06d+08:00 " % rnd.randrange(10**6), sec + b"-0530 ", sec + b"Z ", sec + b".5 ", sec + b".12Z ",
        sec + b".123456789", b"2026-13-40T99:99:99.1Z ", b"",
        journal + b" gpu01 vllm[4242]: ", journal + b".%06d gpu01 vllm[%d]: " % (rnd.randrange(10**6), rnd.randrange(1, 99999)),
        journal + b" gpu01 vllm: ", b"Feb 30 25:61:61 gpu01 vllm[1]: ", journal.lower() + b" gpu01 vllm[1]: "))


@pytest.mark.parametrize("wrap", ["docker-ts", "cri", "journal"])
@pytest.mark.parametrize("seed", range(3))
def test_fast_path_gives_the_full_paths_document_after_a_runtimes_time(tmp_path, seed, wrap):
    """A log read from a container runtime's file (CRI; `diag.ingest.containerlog` turns each record
    into `<time> <line>`) or saved from `docker logs --timestamps` has a time before every line: the
    fast path takes the lifecycle lines behind it too (the time is the one of a line without its
    own, an access line's), and the document is the full path's: times, statuses, findings."""
    rnd = random.Random(seed)
    lines = fuzzed_log(seed).split(b"\n")
    log = tmp_path / ("0.log" if wrap == "cri" else "docker.log")
    if wrap == "cri":
        body = [b"2026-11-22T18:28:%02d.%09dZ stdout F " % (i % 60, rnd.randrange(10**9)) + ln for i, ln in enumerate(lines)]
    elif wrap == "journal":  # `journalctl -u vllm > vllm.log`; a multi-line message's lines indented to the message's column
        body = [(b"Nov 22 18:28:%02d gpu01 vllm[4242]: " % (i % 60) if not ln.startswith(b" ") else b" " * 33) + ln
                for i, ln in enumerate(lines)]
    else:
        body = [_runtime_time(rnd, i) + ln for i, ln in enumerate(lines)]
    log.write_bytes(b"\n".join(body))
    os.utime(log, (1.7e9, 1.7e9))
    full = _scan([log], fast=False, max_line=512)
    assert full["traces"] and full["findings"]
    assert _scan([log], fast=True, max_line=512) == full
    pipe = Pipeline(rules.load(), max_line=512)
    src = FastSource(pipe, SourceParser(str(log), log.stat().st_mtime), LineSplitter(512))
    with open(log, "rb") as f:
        from diag.ingest.reader import open_stream

        src.read(open_stream(f, str(log)))
    assert src.plain > len(full["traces"])  # the plain way took lifecycle lines behind the times


def test_fast_path_gives_the_full_paths_document_on_corpus_logs_after_a_runtimes_time(tmp_path):
    rnd = random.Random(5)
    wrapped = []
    for n, log in enumerate(LOGS):
        out = tmp_path / f"{n:03d}-{log.name}"
        out.write_bytes(b"\n".join(_runtime_time(rnd, i) + ln for i, ln in enumerate(log.read_bytes().split(b"\n"))))
        os.utime(out, (log.stat().st_mtime,) * 2)
        wrapped.append(out)
    assert _scan(wrapped, fast=True) == _scan(wrapped, fast=False)


@pytest.mark.parametrize("fmt", FORMATS)
def test_fast_path_gives_the_full_paths_document_with_a_forced_format(tmp_path, fmt):
    """--format puts a parser first: the fast path must not claim lines that parser would take."""
    log = tmp_path / "fuzz.log"
    log.write_bytes(fuzzed_log(100))
    docs = []
    for fast in (False, True):
        pipe = Pipeline(rules.load(), fast=fast, max_line=512)
        pipe.scan_path(str(log), fmt)
        pipe.finish()
        docs.append(_doc(pipe))
    assert docs[0] == docs[1]


def test_fast_path_takes_most_lifecycle_lines():
    """The point of it: on a plain request log the classifier claims the lifecycle lines."""
    data = Path(CORPUS / "vllm" / "real-0.32.0-cpu" / "text-logoutputs.log").read_bytes()
    recs = pure_classify.split_classify(data[:data.rfind(b"\n")], 1 << 20)
    kinds = [r[0] for r in recs if isinstance(r, tuple)]
    want = data.count(b"] Received request ") + data.count(b"] Added request ") + data.count(b'HTTP/1.1" ')
    assert len(kinds) == want and {pure_classify.RECEIVED, pure_classify.ADDED, pure_classify.ACCESS} <= set(kinds)


def _fast_source(log: Path, ruleset=None, pipe: Pipeline | None = None) -> tuple[Pipeline, FastSource]:
    pipe = pipe or Pipeline(ruleset or rules.load())
    src = FastSource(pipe, SourceParser(str(log), log.stat().st_mtime), LineSplitter())
    with open(log, "rb") as f:
        src.read(f)
    pipe.finish()
    return pipe, src


def test_plain_requests_go_straight_to_the_trace_assembler():
    """A real server's plain requests (Received, Added, their access line) are applied without an
    event; its health checks and the startup lines are not."""
    log = CORPUS / "vllm" / "real-0.32.0-cpu" / "text.log"
    data = log.read_bytes()
    requests = data.count(b"] Received request ")
    assert requests >= 10
    pipe, src = _fast_source(log)
    answered = [t for t in pipe.traces if t.http_status == 200]
    assert len(answered) >= requests - 2  # two were aborted
    # The Received and Added lines (also an Added after its streamed response's access line) and
    # the access lines that answer the only request waiting, but not all: four requests in flight
    # at once wait for their four access lines to be told apart, which the event's way does.
    assert 2 * requests + 4 <= src.plain <= 3 * requests - 4
    assert _same_doc(pipe, _scan([log], fast=False))  # the same document, event counts included


def test_an_access_line_a_rule_looks_for_takes_the_events_way(tmp_path):
    """Rules keep their power over lifecycle lines: an access line whose text a rule's needle is in
    (a gateway's 504, a 404 for the route without /v1) is an event the rules see; the plain ones
    around it are not."""
    real = (CORPUS / "vllm" / "real-0.32.0-cpu" / "text.log").read_text().splitlines()
    rec = next(i for i, line in enumerate(real) if "] Received request " in line)
    request = real[rec:rec + 3]
    assert '"POST /v1/chat/completions HTTP/1.1" 200 OK' in request[2]
    lines = request + [line.replace("chatcmpl-", "chatcmpl-d") for line in request]
    lines += [request[0].replace("chatcmpl-", "chatcmpl-e"), request[1].replace("chatcmpl-", "chatcmpl-e"),
              request[2].replace('" 200 OK', '" 504 Gateway Timeout')]
    lines += [request[0].replace("chatcmpl-", "chatcmpl-f"), request[1].replace("chatcmpl-", "chatcmpl-f"),
              request[2].replace("/v1/chat/completions", "/chat/completions").replace('" 200 OK', '" 404 Not Found')]
    log = tmp_path / "vllm.log"
    log.write_text("\n".join(lines) + "\n")
    pipe, src = _fast_source(log)
    assert {"gateway-errors", "missing-v1-prefix"} <= {f.rule.id for f in pipe.findings.sorted()}
    # Plain: the Received and Added lines, and the second request's access line (the first one's
    # goes the full way: it is the first uvicorn line, which a new source's parser must learn).
    assert src.plain == 2 + 3 + 2 + 2
    assert _same_doc(pipe, _scan([log], fast=False))


def test_a_rule_for_received_lines_closes_the_plain_way(tmp_path):
    """A user's rule on `request.received` events sees every one of them (the fast path then
    builds their events), and finds what it looks for."""
    log = CORPUS / "vllm" / "real-0.32.0-cpu" / "text.log"
    real = log.read_text().splitlines()
    received = next(line for line in real if "] Received request " in line)
    added = next(line for line in real if "] Added request " in line)
    ruleset = _user_rule(tmp_path, "max-tokens-set", """
title = "A request sets max_tokens"
severity = "info"
kinds = ["request.received"]
match = '^Received request '
when = { max_tokens = { gt = 0 } }
summary = "max_tokens is {max_tokens}"
""", received, added)
    pipe, src = _fast_source(log, ruleset)
    requests = log.read_bytes().count(b"] Received request ")
    assert src.plain <= 2 * requests  # Added and access lines only
    found = {f.rule.id: f for f in pipe.findings.sorted()}
    assert found["max-tokens-set"].count == requests
    full = Pipeline(ruleset, fast=False)
    full.scan_path(str(log))
    full.finish()
    assert _same_doc(pipe, _doc(full))


@pytest.mark.parametrize("name", ("text.log", "text-logoutputs.log", "fuzzed"))
def test_a_time_window_keeps_the_plain_way(tmp_path, name):
    """`diag scan --since/--until` (the README's post-mortem) takes the plain way too: a line outside
    the window is taken there and dropped as `Pipeline.event` drops its event (an untimed access
    line by the time of the line before it), so the document is the event way's, window edges
    included; before, any window sent every line the event's way."""
    from diag.parsing.clock import parse_user_time

    if name == "fuzzed":
        log = tmp_path / "fuzzed.log"
        log.write_bytes(fuzzed_log(3))
        window = ("2026-11-22T18:28:20", "2026-11-22T18:28:40")
    else:
        log = CORPUS / "vllm" / "real-0.32.0-cpu" / name
        window = ("2026-11-22T18:27:50", "2026-11-22T18:27:53") if name == "text.log" else ("2026-11-22T18:28:59", "2026-11-22T18:29:03")
    year = __import__("time").localtime(log.stat().st_mtime).tm_year  # vLLM logs no year: the file's is used
    since, until = (parse_user_time(w.replace("2026", str(year), 1)) for w in window)
    pipe, src = _fast_source(log, pipe=Pipeline(rules.load(), since=since, until=until))
    full = Pipeline(rules.load(), since=since, until=until, fast=False)
    full.scan_path(str(log))
    full.finish()
    everything = _scan([log], fast=True)["traces"]
    assert 0 < len(pipe.traces) < len(everything)  # the window cut some requests and kept others
    assert src.plain >= len(pipe.traces)  # their lifecycle lines went the plain way
    assert pipe.stats.outside == full.stats.outside > 0  # the lines the window left out, counted on either way (the report says how many)
    assert _same_doc(pipe, _doc(full))


def _user_rule(tmp_path: Path, rule_id: str, fields: str, example: str, counter_example: str):
    """The built-in rules and one of the user's (`fields` in TOML; its category, remedy and two
    real example lines filled in), loaded as `--rules DIR` would."""
    (tmp_path / f"{rule_id}.toml").write_text(f"""
[[rule]]
id = "{rule_id}"
category = "other"
remedy = "Nothing to do."
examples = ['''{example}''']
counter_examples = ['''{counter_example}''']
{fields}""")
    ruleset = rules.load([tmp_path])
    assert rule_id in {r.id for r in ruleset.rules}, ruleset.errors
    return ruleset


def _same_doc(pipe: Pipeline, want: dict) -> bool:
    """`pipe` (fed through a FastSource, not `scan_path`: no file list, no line count) gave `want`."""
    got = _doc(pipe)
    for d in (got, want):
        del d["files"], d["stats"]["lines"]
    return got == want


# -- compiled == pure ---------------------------------------------------------------------------
@needs_compiled
@pytest.mark.parametrize("max_line", (512, 1 << 20))
def test_compiled_classifier_gives_the_pure_ones_records(max_line):
    blobs = [p.read_bytes() for p in LOGS] + [fuzzed_log(s) for s in range(6, 12)]
    for data in blobs:
        body = data[:data.rfind(b"\n")] if b"\n" in data else data
        assert compiled.split_classify(body, max_line) == pure_classify.split_classify(body, max_line)


@needs_compiled
def test_scan_json_is_identical_with_and_without_the_compiled_classifier(tmp_path):
    fuzz = tmp_path / "fuzz.log"
    fuzz.write_bytes(b"".join(fuzzed_log(s) + b"\n" for s in range(12, 16)))
    paths = [str(p) for p in LOGS] + [str(fuzz)]
    outs = {}
    for mode in ("compiled", "pure"):
        env = {k: v for k, v in os.environ.items() if k != "DIAG_NO_EXT"}
        if mode == "pure":
            env["DIAG_NO_EXT"] = "1"
        ver = subprocess.run([sys.executable, "-m", "diag", "--version"], capture_output=True, text=True, env=env, check=True)
        assert ("classifier: compiled;" in ver.stdout) == (mode == "compiled"), ver.stdout
        assert ("pipeline modules: compiled)" in ver.stdout) == (mode == "compiled"), ver.stdout
        r = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", *paths], capture_output=True, env=env, timeout=300)
        assert r.returncode in (0, 1), r.stderr
        doc = json.loads(r.stdout)
        doc["stats"].pop("seconds")
        outs[mode] = doc
    assert outs["compiled"] == outs["pure"]
    assert outs["pure"]["traces"]


# -- streamed --json == the in-memory document ---------------------------------------------------------
def test_streamed_json_equals_the_in_memory_document(tmp_path):
    paths = [CORPUS / "vllm" / "real-0.32.0-cpu" / "text-logoutputs.log", CORPUS / "vllm" / "synthetic-0.6.6-qwen2vl.log",
             CORPUS / "seed-style" / "vllm.log", CORPUS / "lmdeploy" / "synthetic-0.16.log"]
    want = _scan(paths, fast=True)
    for flag in ([], ["--compact"]):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        r = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", *flag, *map(str, paths)], capture_output=True,
                           env=env, timeout=120)
        assert r.returncode in (0, 1), r.stderr
        got = json.loads(r.stdout)
        got["stats"].pop("seconds")
        assert got == want
        assert len(got["traces"]) > 10


def test_a_traces_public_shape_has_every_public_field_in_order():
    from diag.analysis.trace import PUBLIC_FIELDS, Trace

    t = Trace("chatcmpl-1", "vllm", "a.log", received_at=1.5, timeline=[{"kind": "request.received", "time": 1.5, "line": 3}],
              http={"status": 200})
    d = t.to_dict()
    assert list(d) == list(PUBLIC_FIELDS)
    assert d["timeline"] == [{"kind": "request.received", "time": d["received_at"], "path": "a.log", "line": 3}]
    assert d["http"] == {"status": 200} and d["http"] is not t.http


def test_a_bug_met_on_the_plain_way_costs_that_line_only_injected(tmp_path, monkeypatch):
    """Fault injection (no known bug left to trigger): measuring one Received line raises, and the
    assembler raises on one plain access line. The first is counted as the event's way counts it (a
    parse error: the line is skipped, its request never opens), the second as a traces error; the
    other requests are assembled, and the fast and full paths still agree on the first fault (the
    request of the skipped line is opened by its Added line, without what the Received line said)."""
    from diag.analysis.traces import TraceAssembler
    from diag.parsing.formats import vllm

    real = (CORPUS / "vllm" / "real-0.32.0-cpu" / "text.log").read_text().splitlines()
    rec = next(i for i, line in enumerate(real) if "] Received request " in line)
    request = real[rec:rec + 3]
    lines = [line.replace("chatcmpl-", f"chatcmpl-{i}") for i in range(6) for line in request]
    assert "max_tokens=16," in lines[6]
    # full-width digits: `\d` takes them, so measuring the line goes past its ASCII digit loop to the regex and to_int
    lines[6] = lines[6].replace("max_tokens=16,", "max_tokens=\uff14\uff12\uff14,")
    log = tmp_path / "vllm.log"
    log.write_text("\n".join(lines) + "\n")
    to_int = vllm.to_int
    assert to_int("\uff14\uff12\uff14") == 424

    def broken_to_int(value):  # what measuring that Received line calls (a module global: patched for both builds)
        if value == "\uff14\uff12\uff14":
            raise ValueError("injected")
        return to_int(value)

    monkeypatch.setattr(vllm, "to_int", broken_to_int)
    fast, full = _scan([log], fast=True), _scan([log], fast=False)
    assert fast == full
    assert fast["internal_errors"]["parse"]["count"] == 1 and set(fast["internal_errors"]) == {"parse"}
    assert len(fast["traces"]) == 6 and all(t["http_status"] == 200 for t in fast["traces"])
    assert [t["max_tokens"] is None for t in fast["traces"]] == [False, False, True, False, False, False]

    class Broken(TraceAssembler):  # a built package's assembler is a C type: its methods are overridden, not patched
        def apply_access(self, t, path, lineno, *rest):
            if lineno == 12:
                raise ValueError("injected")
            return super().apply_access(t, path, lineno, *rest)

    pipe = Pipeline(rules.load())  # its own assembler swapped for the broken one, wired as its own is
    pipe.assembler = broken = Broken(on_done=pipe._trace_done)
    pipe.engine.trace_lookup, pipe.engine.on_trace_finding = broken.get, broken.add_finding
    pipe, src = _fast_source(log, pipe=pipe)
    errs = pipe.internal.to_dict()
    assert errs["traces"]["count"] == 1 and errs["traces"]["last_location"].endswith(":12")
    assert errs["parse"]["count"] == 1
    # as if the line were not there: the next access line cannot tell the two waiting requests apart
    assert [t.http_status for t in pipe.traces] == [200, 200, 200, None, None, 200]


def test_an_added_line_with_the_received_id_is_plain_too():
    """vLLM before 0.14 logs `Added request` with the very id `Received request` had (no engine
    suffix): those lines are plain as well, and the document is the full path's."""
    log = CORPUS / "vllm" / "synthetic-0.6.6-qwen2vl.log"
    data = log.read_bytes()
    ids = {kind: {line.split(kind)[1].split(b":")[0].rstrip(b".") for line in data.splitlines() if kind in line}
           for kind in (b"] Received request ", b"] Added request ")}
    assert ids[b"] Added request "] and ids[b"] Added request "] <= ids[b"] Received request "]
    pipe, src = _fast_source(log)
    assert src.plain >= 2 * data.count(b"] Received request ")
    assert _same_doc(pipe, _scan([log], fast=False))


def test_a_hit_held_for_a_later_line_reopens_the_event_way_within_a_block(tmp_path):
    """The fast path asks once per run of lines whether the rules look at Received lines at all,
    and again after any event reached them: a warning whose rule holds its hit until a later line
    (`unless_followed_by`) makes the next Received line an event, which here clears the hit — as
    the full path does. All lines are one block (one read), so a stale answer would apply that
    line plainly, the rule would never see it, and the warning would be reported."""
    log = CORPUS / "vllm" / "real-0.32.0-cpu" / "text.log"
    real = log.read_text().splitlines()
    rec = next(i for i, line in enumerate(real) if "] Received request " in line)
    request = real[rec:rec + 3]
    warning = request[0].split(" INFO ")[0] + " WARNING " + request[0].split(" INFO ")[1].split("]")[0] + "] canary-held warning"
    lines = request + [warning] + [line.replace("chatcmpl-", "chatcmpl-second") for line in request]
    ruleset = _user_rule(tmp_path, "held-warning", """
title = "A warning no request follows"
severity = "warning"
match = 'canary-held warning'
unless_followed_by = { pattern = 'Received request chatcmpl-second', within_events = 3 }
summary = "held"
""", warning, request[0])
    path = tmp_path / "vllm.log"
    path.write_text("\n".join(lines) + "\n")
    pipe, src = _fast_source(path, ruleset)
    full = Pipeline(ruleset, fast=False)
    full.scan_path(str(path))
    full.finish()
    assert "held-warning" not in {f.rule.id for f in full.findings.sorted()}
    assert _same_doc(pipe, _doc(full))
    assert src.plain >= 3  # the first request's lines still went the plain way
