"""User content is never rule input, never stored, never printed: canaries in every free-text position.

`canary_corpus` (tests/conftest.py) plants a unique word together with error text (CUDA OOM,
EngineDeadError, tracebacks…) into prompts of each vLLM version, outputs, llama-server -v prompt
dumps, LMDeploy prompts, image URLs, query strings and error messages that echo input. The word
must appear in no output diag produces, and the error text must raise no alarm that the same files
with a harmless payload did not raise.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

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
    # what was planted is still counted, not lost: the traces and facts are the same
    assert [t["id"] for t in doc["traces"]] == [t["id"] for t in clean_doc["traces"]]
    assert {k: {f: v for f, v in d.items() if f != "model"} for k, d in doc["facts"].items()} == \
           {k.replace("/clean/", "/planted/"): {f: v for f, v in d.items() if f != "model"} for k, d in clean_doc["facts"].items()}
    human = _scan(*c.planted, human=True)
    assert "Findings" in human.stdout or "No findings" in human.stdout
    assert c.word not in human.stdout and c.word not in human.stderr


def test_no_canary_in_any_table_of_the_daemons_store_or_its_log(canary_corpus, tmp_path):
    c = canary_corpus
    state = tmp_path / "state"
    state.mkdir()
    args = [sys.executable, "-m", "diag", "daemon", "--from-beginning", "--state-dir", str(state)]
    for p in c.planted:
        args += ["--log", str(p)]
    errlog = tmp_path / "daemon.err"
    with open(errlog, "w") as err:
        d = subprocess.Popen(args, stderr=err, stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            r = subprocess.run([sys.executable, "-m", "diag", "status", "--json", "--state-dir", str(state)], capture_output=True, text=True)
            if r.returncode == 0:
                st = json.loads(r.stdout)
                if len(st["sources"]) == len(c.planted) and all(s["lag_bytes"] == 0 for s in st["sources"]):
                    break
            time.sleep(0.3)
        else:
            raise AssertionError("the daemon did not catch up")
        time.sleep(3)  # idle flushes, held hits released by the tick
    finally:
        d.send_signal(signal.SIGTERM)
        assert d.wait(timeout=30) == 0
    db = sqlite3.connect(state / "diag.sqlite3")
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert {"findings", "traces", "sources", "meta"} <= set(tables)
    rows = 0
    for t in tables:
        for row in db.execute(f"SELECT * FROM {t}"):
            rows += 1
            assert c.word not in " ".join(map(str, row)), (t, row)
    assert rows > 50
    sev = {r[0] for r in db.execute("SELECT rule FROM findings WHERE severity IN ('error', 'critical')")}
    assert sev <= severe(json.loads(_scan(*c.clean).stdout)), sev
    assert c.word not in errlog.read_text()
    for ext in ("-wal", "-shm"):
        f = state / f"diag.sqlite3{ext}"
        if f.exists():
            assert c.word.encode() not in f.read_bytes()


def test_captured_fields_and_reasons_are_bounded_and_redacted():
    from diag import rules
    from diag.parsers import SourceParser
    from diag.pipeline import Pipeline, SourceResult
    from diag.reader import iter_text_lines

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
