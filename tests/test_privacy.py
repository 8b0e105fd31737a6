"""No prompt or generated text from the corpus reaches `diag scan --json` or the human report."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

from conftest import CORPUS

ALL_LOGS = sorted(str(p) for p in CORPUS.rglob("*.log"))


def corpus_user_text() -> set[str]:
    """Every prompt/output the corpus logs, split into its user-written parts."""
    found: set[str] = set()
    rx = re.compile(r"(?:prompt|output): ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")
    for p in ALL_LOGS:
        for line in open(p, encoding="utf-8", errors="replace"):
            for m in rx.finditer(line):
                try:
                    s = ast.literal_eval(m.group(1))
                except (ValueError, SyntaxError):
                    continue
                for part in re.split(r"<\|[^|]*\|>|\n", s):
                    part = part.strip()
                    if len(part) >= 8 and part not in ("system", "user", "assistant"):
                        found.add(part)
    return found


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
