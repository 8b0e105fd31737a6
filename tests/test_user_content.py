"""User content is never rule input, never stored, never printed: canaries in every free-text position.

`canary_corpus` (tests/conftest.py) plants a unique word together with error text (CUDA OOM,
EngineDeadError, tracebacks…) into prompts of each vLLM version, outputs, llama-server -v prompt
dumps, LMDeploy prompts, image URLs, query strings and error messages that echo input. The word
must appear in no output diag produces, and the error text must raise no alarm that the same files
with a harmless payload did not raise.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import severe


def _scan(*paths, human=False):
    args = ["-v"] if human else ["--json"]
    r = subprocess.run([sys.executable, "-m", "diag", "scan", *args, *map(str, paths)], capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr
    return r


def test_canary_corpus_plants_every_position(canary_corpus):
    c = canary_corpus
    assert len(c.planted) == len(c.clean) >= 12
    for p in c.planted:
        assert c.word in p.read_text()
    for p in c.clean:
        assert c.word not in p.read_text()


def test_no_canary_in_scan_json_or_the_human_report_and_no_new_alarm(canary_corpus):
    c = canary_corpus
    planted = _scan(*c.planted)
    assert c.word not in planted.stdout and c.word not in planted.stderr
    doc = json.loads(planted.stdout)
    clean_doc = json.loads(_scan(*c.clean).stdout)
    assert severe(doc) <= severe(clean_doc), severe(doc) - severe(clean_doc)
    # nor any finding, of any severity, nor one more of those the clean files raise too
    assert _findings(doc) == _findings(clean_doc)
    # what was planted is still counted, not lost: the traces and facts are the same
    assert [t["id"] for t in doc["traces"]] == [t["id"] for t in clean_doc["traces"]]
    # and nothing a parser read was taken from the user's text (`max_tokens=7` in a prompt):
    # each trace is the same but for what measures the text itself
    def read(t: dict) -> dict:
        return {k: v for k, v in t.items() if k not in ("prompt_chars", "output_chars", "source", "http", "timeline")} | \
            {"http": {k: v for k, v in (t["http"] or {}).items() if k not in ("path_file", "line")},
             "timeline": [(e["kind"], e["time"]) for e in t["timeline"]]}  # (a planted text may add lines)

    assert [read(t) for t in doc["traces"]] == [read(t) for t in clean_doc["traces"]]
    assert {k: {f: v for f, v in d.items() if f != "model"} for k, d in doc["facts"].items()} == \
           {k.replace("/clean/", "/planted/"): {f: v for f, v in d.items() if f != "model"} for k, d in clean_doc["facts"].items()}
    human = _scan(*c.planted, human=True)
    assert "Findings" in human.stdout or "No findings" in human.stdout
    assert c.word not in human.stdout and c.word not in human.stderr


def _findings(doc: dict) -> list[tuple]:
    """Each finding: its rule, how often, for which requests, in which files (planted or clean)."""
    return sorted((f["rule"], f["count"], tuple(f["request_ids"]),
                   tuple(sorted({loc["path"].rsplit("/", 1)[-1] for loc in f["locations"]}))) for f in doc["findings"])


def _sinks(tmp_path, url: str, smtp_port: int, execd) -> str:
    """One sink of every type: HTTP ones to the test's receiver, email to its SMTP server, exec to a script."""
    script = tmp_path / "hook.sh"
    script.write_text(f"#!/bin/sh\ncat >> {execd}\necho >> {execd}\n")
    script.chmod(0o755)
    return (f'[[alerts.sink]]\nname = "hook"\ntype = "webhook"\nurl = "{url}/hook"\n'
            f'[[alerts.sink]]\nname = "am"\ntype = "alertmanager"\nurl = "{url}/am"\n'
            f'[[alerts.sink]]\nname = "fs"\ntype = "feishu"\nurl = "{url}/feishu"\nsecret = "s"\n'
            f'[[alerts.sink]]\nname = "dt"\ntype = "dingtalk"\nurl = "{url}/ding?access_token=t"\nsecret = "s"\n'
            f'[[alerts.sink]]\nname = "wc"\ntype = "wecom"\nurl = "{url}/wecom?key=k"\n'
            f'[[alerts.sink]]\nname = "run"\ntype = "exec"\ncommand = ["{script}"]\n'
            f'[[alerts.sink]]\nname = "mail"\ntype = "email"\nhost = "127.0.0.1"\nport = {smtp_port}\nstarttls = false\n'
            f'from = "d@x"\nto = ["o@x"]\n')


def test_no_canary_in_any_sink_of_the_daemon(canary_corpus, tmp_path, receiver):
    """The daemon follows every planted file with the dashboard on and one alert sink of each type:
    the word is in no table of its store, not in its log (the journal sink included), in no payload
    any sink received, and on no dashboard page, API answer or /metrics; the planted error text
    raises no error/critical finding that the clean files did not."""
    import httpx

    from conftest import dashboard_answers, free_port, wait_for

    smtp = pytest.importorskip("aiosmtpd.controller", reason="aiosmtpd (test extra) not installed")
    mails: list[bytes] = []

    class Mailbox:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            mails.append(envelope.content)
            return "250 OK"

    c = canary_corpus
    state = tmp_path / "state"
    state.mkdir()
    smtp_port, web_port = free_port(), free_port()
    ctl = smtp.Controller(Mailbox(), hostname="127.0.0.1", port=smtp_port)
    ctl.start()
    execd = tmp_path / "exec.jsonl"
    conf = tmp_path / "diag.toml"
    conf.write_text("[alerts]\ngroup_wait = 0\ngroup_interval = 1\n" + _sinks(tmp_path, receiver.url, smtp_port, execd))
    args = [sys.executable, "-m", "diag", "daemon", "--from-beginning", "--state-dir", str(state), "--config", str(conf),
            "--web", f"127.0.0.1:{web_port}"]
    for p in c.planted:
        args += ["--log", str(p)]
    errlog = tmp_path / "daemon.err"
    with open(errlog, "w") as err:
        d = subprocess.Popen(args, stderr=err, stdout=subprocess.DEVNULL)
    paths = ("/hook", "/am", "/feishu", "/ding", "/wecom")
    try:
        def caught_up():
            r = subprocess.run([sys.executable, "-m", "diag", "status", "--json", "--state-dir", str(state)], capture_output=True, text=True)
            if r.returncode != 0:
                return False
            st = json.loads(r.stdout)
            return len(st["sources"]) == len(c.planted) and all(s["lag_bytes"] == 0 for s in st["sources"])

        wait_for(caught_up, 60, "the daemon to catch up")
        time.sleep(3)  # idle flushes, held hits released by the tick
        wait_for(lambda: mails and execd.exists() and all(any(r["path"].startswith(p) for r in receiver.requests) for p in paths),
                 40, "every sink to receive a notification")
        base = f"http://127.0.0.1:{web_port}"
        with httpx.Client(base_url=base, timeout=30) as web:
            pages = dashboard_answers(web.get)
    finally:
        d.send_signal(signal.SIGTERM)
        assert d.wait(timeout=30) == 0
        ctl.stop()
    # the sinks
    payloads = [r["body"] + r["path"].encode() for r in receiver.requests] + mails + [execd.read_bytes()]
    assert len(payloads) >= 7 and any(b"image-fetch-failed" in p for p in payloads)
    leaked = sorted({m.group(0) for p in payloads for m in re.finditer(rb".{0,120}" + c.word.encode() + rb".{0,40}", p)})
    assert leaked == []
    assert c.word not in errlog.read_text()  # the daemon's log, where the journal sink writes
    # the dashboard: every page, API answer and /metrics
    assert len(pages) > 50 and any("image-fetch-failed" in p for p in pages)
    assert [p[max(0, p.find(c.word) - 100):p.find(c.word) + 40] for p in pages if c.word in p] == []
    # the store: every table and its WAL
    db = sqlite3.connect(state / "diag.sqlite3")
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert {"findings", "traces", "sources", "meta", "alerts", "outbox"} <= set(tables)
    rows = 0
    for t in tables:
        for row in db.execute(f"SELECT * FROM {t}"):
            rows += 1
            assert c.word not in " ".join(map(str, row)), (t, row)
    assert rows > 50
    sev = {r[0] for r in db.execute("SELECT rule FROM findings WHERE severity IN ('error', 'critical')")}
    assert sev <= severe(json.loads(_scan(*c.clean).stdout)), sev
    for ext in ("-wal", "-shm"):
        f = state / f"diag.sqlite3{ext}"
        if f.exists():
            assert c.word.encode() not in f.read_bytes()


def test_captured_fields_and_reasons_are_bounded_and_redacted():
    from diag.analysis.rules import ruleset as rules
    from diag.parsing.source import SourceParser
    from diag.pipeline import Pipeline, SourceResult
    from diag.ingest.reader import iter_text_lines

    hits = []
    pipe = Pipeline(rules.load(), on_hit=hits.append)
    long_tail = "x" * 5000
    text = (f"Fatal Python error: Aborted prompt: 'SECRETPROMPT {long_tail}'\n"
            f"(APIServer pid=1) INFO 01-24 10:03:12 [logger.py:48] Received request chatcmpl-1: params: SamplingParams(n=1), lora_request: None.\n"
            f"(APIServer pid=1) INFO 01-24 10:03:13 [async_llm.py:1] Request chatcmpl-1 failed: bad input prompt: 'SECRETPROMPT' {long_tail}.\n")
    pipe.feed_lines(SourceParser("x.log"), iter_text_lines(text), SourceResult("x.log"))
    traces = pipe.finish()
    fatal = next(h for h in hits if h.rule.id == "fatal-python-error")
    assert len(fatal.fields["what"]) <= 120 and "SECRETPROMPT" not in fatal.fields["what"]
    t = next(t for t in traces if t.id == "chatcmpl-1")
    assert t.reason is not None and len(t.reason) <= 200 and "SECRETPROMPT" not in t.reason


# -- a logged prompt's repr is read as Python would, and nothing else raises ---------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@pytest.mark.parametrize("text", ["{{}}", "[]", "'a\ud800b'", "'abc", "abc'", "", "'a' 'b'", "b'x'", "'\\N{DIGIT ONE}'"])
def test_what_python_would_not_read_as_one_string_is_no_prompt(text):
    import ast

    from diag.parsing.quoted import literal

    try:
        want = ast.literal_eval(text)
    except Exception:  # noqa: BLE001 - whatever it raises, there is no string
        want = None
    assert literal(text) == (want if isinstance(want, str) else None)


_ACCESS_TAILS = st.sampled_from(["OK", "Not Found", "", "OK data:x", "OK DATA:x", "OK {\"a\": 1}", "input_value=x", "OK ?x=1",
                                 "GET /x?y", "http://h/p", "OK\t"])
_PATHS = st.sampled_from(["/v1/chat/completions", "/v1/models", "/health", "//", "/v1/models#a", "/v1/models'", "/v1/x)",
                          "/file.png", "/v1/chat/completions?k=1", "/«x»", "/v1/a\"b"])


@settings(max_examples=400, deadline=None)
@given(_PATHS, _ACCESS_TAILS, st.sampled_from(["GET", "POST"]))
def test_scrub_keeps_a_plain_endpoint_line_and_cuts_every_other_path_remembered_or_not(path, tail, method):
    """scrub remembers which request paths are endpoints (a busy server's access lines): asked
    twice, it must answer the same, keep an endpoint line as it is and never keep the rest."""
    from diag.parsing.usercontent import scrub

    text = f'10.0.0.5:41234 - "{method} {path} HTTP/1.1" 200 {tail}'.rstrip()
    first, second = scrub(text), scrub(text)
    assert first == second
    if path in ("/v1/chat/completions", "/v1/models", "/health") and tail in ("OK", "Not Found", ""):
        assert first == text
    for secret in ("k=1", "file.png", "#a", "y=1"):
        if secret in path or secret in tail:
            assert secret not in first, (text, first)


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from("'\""), st.text(alphabet="ab'\"\\nrtxuU0123456789afN{}\n\r\x00 é\x0b\x0c\x1c\x85\u2028\ud800\t",
                                          max_size=24))
def test_any_quoted_text_decodes_as_python_does_or_not_at_all(q, body):
    """The common escapes are decoded without Python's parser (quoted._unescape), the rest by it:
    either way exactly what Python reads, or None — and silently (no warning for `\\d`)."""
    import ast
    import warnings

    from diag.parsing.quoted import literal

    s = q + body + q
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = ast.literal_eval(s)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        want = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = literal(s)
    assert got == (want if isinstance(want, str) else None), s


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(["max_tokens=", "max_tokens=x", "max_tokens=12", "max_tokens=٣", "max_tokens=1,5",
                                 "prompt_token_ids: [", "prompt_token_ids: [1, 2]", "]", "[", ", ", "prompt: '", "'", "x",
                                 "stop=['max_tokens=3']", '"', "stop=['x', \"it's\"]",
                                 "max_tokens=" + "9" * 40, "prompt_token_ids: []", "\n"]), max_size=12))
def test_a_request_is_measured_as_the_patterns_searched_it(pieces):
    """`_measure_received` finds `max_tokens=` and `prompt_token_ids: [` with str.find before the
    pattern: the same fields as searching with the patterns, whatever comes first (a `max_tokens=`
    without digits before one with, a list without its `]`) — and only after a logged prompt's
    closing quote and outside quoted parameter values (stop strings): what the user wrote is never
    read as a field, and a prompt or value whose end is not found leaves them unknown."""
    from diag.parsing.base import to_int
    from diag.parsing.formats import vllm

    rest = "".join(pieces)
    got: dict = {}
    vllm._measure_received(rest, got)
    after = rest
    if rest.startswith("prompt: ''"):  # an empty prompt (repr writes no triple quote: a third one opens the next)
        after = rest[10:]
    elif rest.startswith("prompt: '"):  # the reference: where Python's tokenizer ends the literal
        import io
        import tokenize

        try:
            tok = next(t for t in tokenize.generate_tokens(io.StringIO(rest[8:]).readline) if t.type == tokenize.STRING)
            after = rest[8 + len(tok.string):] if tok.start == (1, 0) and tok.end[0] == 1 else ""
        except (tokenize.TokenError, StopIteration, SyntaxError):
            after = ""
    want: dict = {}
    unquoted = r"""(?:[^'"]|'[^']*'|"[^"]*")*?"""  # the quoted values of the parameters are skipped whole
    mt = re.match(unquoted + r"max_tokens=(\d+)", after, re.S)
    if mt:
        want["max_tokens"] = to_int(mt.group(1))
    ids = re.match(unquoted + r"prompt_token_ids: \[([^\]]*)\]", after, re.S)
    if ids is not None:
        body = ids.group(1).strip()
        want["prompt_tokens"] = body.count(",") + 1 if body else 0
    got.pop("prompt_chars", None), got.pop("images", None)
    assert got == want


@pytest.mark.parametrize("placeholder", __import__("diag.parsing.formats.vllm", fromlist=["x"]).IMAGE_PLACEHOLDERS)
def test_images_are_counted_by_each_placeholder(placeholder):
    """count_images looks for "image" before it counts placeholders: each one must spell it, or the
    images of a model whose placeholder does not would go uncounted."""
    from diag.parsing.formats.vllm import count_images

    assert count_images(f"<|im_start|>user\n{placeholder}{placeholder}What is this?") == 2
    assert count_images("<|im_start|>user\nWhat is this?") == 0
