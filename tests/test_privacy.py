"""No prompt or generated text from the corpus reaches `diag scan --json` or the human report."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ALL_LOGS, corpus_user_text


def test_corpus_has_user_text_to_leak():
    text = corpus_user_text()
    assert "hello world" in text or any("hello world" in t for t in text)
    assert len(text) > 20


def test_scan_json_contains_no_prompt_or_output_text():
    out = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", *ALL_LOGS], capture_output=True, text=True, check=False)
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert doc["traces"] and doc["findings"]
    blob = out.stdout
    leaked = [t for t in corpus_user_text() if t in blob or json.dumps(t)[1:-1] in blob]
    assert leaked == []
    # generated text the guide-style log streams token by token, and llama.cpp -v prompt lines
    for s in ("抱歉", "我看不到图片", "What is in this image?", "odusoiduzaite"):
        assert s not in blob and json.dumps(s)[1:-1] not in blob


def test_human_report_contains_no_prompt_text():
    out = subprocess.run([sys.executable, "-m", "diag", "scan", "-v", *ALL_LOGS], capture_output=True, text=True, check=False)
    assert "Findings" in out.stdout
    leaked = [t for t in corpus_user_text() if t in out.stdout]
    assert leaked == []
