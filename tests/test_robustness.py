"""A log line can never take diag down: numbers, guards, and the whole pipeline under fuzzing.

The property tests drive every stage (parsers, facts, traces, rules, both reports) and demand
that no stage even *meets* an internal error: the per-event guard keeps the daemon alive, but
it must not hide a bug from these tests.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from conftest import CORPUS, VLLM
from diag.analysis.rules import ruleset as rules
from diag.parsing.source import SourceParser
from diag.parsing.base import to_float, to_int, to_number
from diag.pipeline import Pipeline, SourceResult
from diag.ingest.reader import LineSplitter, iter_text_lines, read_lines
from diag.report.document import to_json
from diag.report.text import print_human

_RULES = rules.load()

BAD_NUMBER_LINES = [
    "(EngineCore pid=7) INFO 11-22 18:23:05 [gpu_worker.py:298] Available KV cache memory: 1.2.3 GiB",
    "(EngineCore pid=7) INFO 11-22 18:23:05 [gpu_worker.py:298] Available KV cache memory: 1e999999 GiB",
    "(EngineCore pid=7) INFO 11-22 18:23:05 [kv_cache_utils.py:1087] Maximum concurrency for 4,096 tokens per request: nan.x",
    "(APIServer pid=1) INFO 11-22 18:23:01 [utils.py:253] non-default args: {'model': 'm', 'served_model_name': ["
    + ", ".join(["'a'"] * 40000) + "]}",
    "(EngineCore pid=7) INFO 11-22 18:23:05 [kv_cache_utils.py:1087] GPU KV cache size: " + "9" * 5000 + " tokens",
    "(APIServer pid=1) INFO 11-22 18:23:09 [loggers.py:123] Engine 000: Avg prompt throughput: 1.2.3 tokens/s, Running: "
    + "9" * 5000 + " reqs, Waiting: 0 reqs, GPU KV cache usage: nan%",
    "0.00.256.568 I slot   operator(): id  " + "9" * 5000 + " | task " + "7" * 5000 + " | new prompt",
    "INFO 01-24 00:13:46,380 [model_runner.py:821] Generated token " + "9" * 60 + " for request 'req-abc123': 'x'",
]


def test_number_parsing_is_total():
    for bad in ("1.2.3", "nan", "inf", "-inf", "1e999999", "9" * 5000, "", "0x1f", "1,2,3.4.5"):
        assert to_float(bad) is None, bad
    assert to_int("9" * 5000) is None and to_int("1,024") == 1024 and to_number("4,096") == 4096
    assert to_float("0.5") == 0.5 and to_number("1.25") == 1.25


def test_bad_numbers_make_facts_unknown_not_a_crash(tmp_path):
    log = tmp_path / "vllm.log"
    good = "(EngineCore pid=7) INFO 11-22 18:23:05 [gpu_worker.py:298] Available KV cache memory: 3.5 GiB"
    log.write_text("\n".join(BAD_NUMBER_LINES + [good]) + "\n")
    r = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", str(log)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # 1 would mean "error findings": there are none here
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    doc = json.loads(r.stdout)
    facts = doc["facts"][str(log)]
    assert facts["kv_cache_gib"] == 3.5  # the bad values were unknown, the good one counts
    assert doc["internal_errors"] == {}


def test_a_llama_server_json_line_with_a_huge_time_is_read_without_it(tmp_path):
    """llama-server's --log-jsonl `time` is an integer of microseconds: one of 400 digits made the
    division overflow and cost the line (an internal error in the parse stage)."""
    real = (CORPUS / "llamacpp" / "real-b0c1e57-cpu" / "jsonl-stdout.log").read_text().splitlines()
    bad = re.sub(r'"time":\s*\d+', '"time":' + "9" * 400, real[3], count=1)
    assert bad != real[3] and '"type":"log"' in bad
    log = tmp_path / "llama.log"
    log.write_text("\n".join(real[:3] + [bad] + real[4:40]) + "\n")
    r = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", str(log)], capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr
    assert "internal error" not in r.stderr
    assert json.loads(r.stdout)["internal_errors"] == {}


def _whole_pipeline(text: str | bytes) -> Pipeline:
    """Parsers, traces, facts, rules, then both reports: every stage the daemon runs."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    pipe = Pipeline(_RULES)
    pipe.feed_lines(SourceParser("<fuzz>"), read_lines(io.BytesIO(data), splitter=LineSplitter(4096)), SourceResult("<fuzz>"))
    pipe.finish()
    json.dumps(to_json(pipe))
    print_human(pipe, Console(file=io.StringIO(), width=120), verbose=True)
    assert pipe.internal.total == 0, pipe.internal.to_dict()
    return pipe


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_random_bytes_through_the_whole_pipeline(data):
    _whole_pipeline(data)


def _corpus_lines() -> list[str]:
    out: list[str] = []
    for p in sorted(CORPUS.rglob("*.log")):
        lines = [ln for ln in p.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        out.extend(lines[:: max(1, len(lines) // 40)])
    return out


CORPUS_LINES = _corpus_lines()
_NUM = re.compile(r"\d+(?:\.\d+)?")
_ID = re.compile(r"(?:chatcmpl|cmpl|task|session|req)-[\w-]+|\b(?:task|session|id) +\d+")
_MUTANTS = ["", "1.2.3", "nan", "inf", "1e999999", "-1", "9" * 60, "0", "'", '"', "[", "]", "(", ")", "{", "}", ",", "\\",
            "None", "\x00", "\ufffd", "''", "[]", "{}", "-", "%", ":"]


def _mutate(line: str, rnd: random.Random) -> str:
    for _ in range(rnd.randint(1, 4)):
        how = rnd.randrange(4)
        if how == 0:  # numbers
            ms = list(_NUM.finditer(line))
            if ms:
                m = rnd.choice(ms)
                line = line[: m.start()] + rnd.choice(_MUTANTS) + line[m.end():]
        elif how == 1:  # ids
            ms = list(_ID.finditer(line))
            if ms:
                m = rnd.choice(ms)
                line = line[: m.start()] + m.group(0)[: rnd.randint(0, len(m.group(0)))] + rnd.choice(_MUTANTS) + line[m.end():]
        elif how == 2:  # brackets and quotes
            idx = [i for i, c in enumerate(line) if c in "[](){}'\"`"]
            if idx:
                i = rnd.choice(idx)
                line = line[:i] + rnd.choice(_MUTANTS) + line[i + 1:]
        else:
            at = rnd.randint(0, len(line))
            line = line[:at] + rnd.choice(_MUTANTS) + line[at:]
    return line


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(CORPUS_LINES), min_size=1, max_size=12), st.integers(0, 2**32 - 1))
def test_mutated_corpus_lines_through_the_whole_pipeline(lines, seed):
    rnd = random.Random(seed)
    mutated = [_mutate(ln, rnd) for ln in lines]
    _whole_pipeline("\n".join(lines + mutated) + "\n")


def test_a_failing_stage_costs_one_line_not_the_run_injected(monkeypatch, caplog):
    """Fault injection (the real stages have no known bug left to trigger): the facts stage raises
    on one line; the other stages and the other lines carry on, and the log names the place, not the text."""
    from diag.analysis.facts import FactCollector

    real = FactCollector.feed

    def broken(self, ev):
        if "SECRETWORD" in ev.text:
            raise ValueError(f"could not convert {ev.text!r}")
        return real(self, ev)

    monkeypatch.setattr(FactCollector, "feed", broken)
    text = (VLLM / "oom-kv-no-blocks.log").read_text()
    lines = text.splitlines()
    lines.insert(3, "(APIServer pid=1) INFO 11-22 18:23:01 [x.py:1] SECRETWORD here")
    pipe = Pipeline(_RULES)
    with caplog.at_level("ERROR", logger="diag"):
        pipe.feed_lines(SourceParser("x.log"), iter_text_lines("\n".join(lines * 2)), SourceResult("x.log"))
        pipe.finish()
    errs = pipe.internal.to_dict()
    assert set(errs) == {"facts"} and errs["facts"]["count"] == 2
    assert errs["facts"]["last_location"] == f"x.log:{len(lines) + 4}"
    assert errs["facts"]["last_error"].startswith("ValueError at ")
    assert "SECRETWORD" not in caplog.text and len([r for r in caplog.records if "internal error" in r.message]) == 1
    assert {f.rule.id for f in pipe.findings.by_rule.values()} >= {"kv-cache-no-blocks"}


_MAX_TOKENS_TEXT = st.text(alphabet="0123456789\u0663\uff14x=, max_tokens", max_size=60)


@settings(max_examples=1500, deadline=None)
@given(before=_MAX_TOKENS_TEXT, after=_MAX_TOKENS_TEXT)
def test_max_tokens_is_what_the_regex_and_to_int_read(before, after):
    """Measuring a Received line reads max_tokens' ASCII digits in place and leaves anything else
    (no digit, a digit `\\d` takes that is not ASCII, a later occurrence) to the regex: the value is
    the regex's first match through to_int, whatever surrounds it (run by both builds)."""
    from diag.parsing.formats import vllm

    rest = f"params: SamplingParams({before}max_tokens={after}"
    m = re.search(r"max_tokens=(\d+)", rest)
    f: dict = {}
    vllm._measure_received(rest, f)
    assert f.get("max_tokens", "absent") == (to_int(m.group(1)) if m else "absent")


def test_a_huge_max_tokens_is_written_or_unknown_never_a_crash(tmp_path):
    """An integer past 64 bits is fine for Python and JSON but not for orjson: the streamed
    document falls back to the json encoder for it; past 30 digits the number is unknown."""
    log = tmp_path / "big.log"
    line = ("(APIServer pid=1) INFO 11-22 18:27:00 [request_logger.py:65] Received request chatcmpl-{rid}: params: "
            "SamplingParams(n=1, max_tokens={n}), lora_request: None.\n"
            "(APIServer pid=1) INFO 11-22 18:27:00 [async_llm.py:578] Added request chatcmpl-{rid}-0badf00d.\n"
            'INFO:     127.0.0.1:1 - "POST /v1/chat/completions HTTP/1.1" 200 OK\n')
    log.write_text(line.format(rid="a", n="9" * 23) + line.format(rid="b", n="9" * 5000) + line.format(rid="c", n="64"))
    r = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", str(log)], capture_output=True, text=True)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    assert [t["max_tokens"] for t in doc["traces"]] == [int("9" * 23), None, 64]
    assert doc["internal_errors"] == {}


BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]


def test_bidirectional_controls_in_a_log_reach_no_output(tmp_path):
    """A request id, a client's access line and an error message that carry Unicode's bidirectional
    overrides or isolates (which reorder what a terminal or a web page shows after them: an excerpt,
    an id could read as something else) are read without them, on the fast path's lines and the
    full parser's alike; what the lines say is found as without them."""
    rlo, pdi = "\u202e", "\u2069"
    lines = (f"(APIServer pid=1) INFO 11-22 18:27:00 [request_logger.py:65] Received request chatcmpl-{rlo}ab: params: "
             "SamplingParams(n=1, max_tokens=7), lora_request: None.\n"
             f"(APIServer pid=1) INFO 11-22 18:27:00 [async_llm.py:578] Added request chatcmpl-{rlo}ab-0badf00d.\n"
             f'INFO:     127.0.0.1:1 - "POST /v1/chat/completions HTTP/1.1" 200 OK{pdi}\n'
             "(APIServer pid=1) ERROR 11-22 18:27:01 [serving_chat.py:1012] Error in chat completion stream generator: "
             f"CUDA out of memory. Tried to allocate 11.72 GiB. GPU 0 has a total capacity of 79.19 GiB of which {rlo}7.04 GiB is free.\n")
    log = tmp_path / "vllm.log"
    log.write_text(lines + "".join(f"x{c}y\n" for c in BIDI))
    json_log = tmp_path / "llama-server.log"  # a JSON line escapes them
    json_log.write_text('{"type":"log","time":316948,"level":"error","msg":"srv    load_model: failed to load model, '
                        "'/srv/models/\\u202eevil.gguf'\\n\"}\n")
    out = {}
    for env in ({}, {"DIAG_NO_EXT": "1"}):
        doc = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", str(log), str(json_log)], capture_output=True,
                             text=True, env={**os.environ, **env})
        report = subprocess.run([sys.executable, "-m", "diag", "scan", "-v", str(log), str(json_log)], capture_output=True,
                                text=True, env={**os.environ, "COLUMNS": "400", **env})
        for text in (doc.stdout, doc.stderr, report.stdout, report.stderr):
            assert not any(c in text for c in BIDI)
        out[bool(env)] = d = json.loads(doc.stdout)
        assert not any(c in json.dumps(d, ensure_ascii=False) for c in BIDI)  # also where the JSON escapes them
        assert [(t["id"], t["status"], t["max_tokens"], t["http_status"]) for t in d["traces"]] == [("chatcmpl-ab", "ok", 7, 200)]
        assert {"cuda-oom", "llamacpp-model-load-failed"} <= {f["rule"] for f in d["findings"]}
        assert "/srv/models/evil.gguf" in doc.stdout
    out[False]["stats"].pop("seconds"), out[True]["stats"].pop("seconds")
    assert out[False] == out[True]
