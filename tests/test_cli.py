"""`diag scan` and `diag rules` as a user runs them: exit codes, stdin, JSON shape, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import CORPUS, VLLM


def diag(*args, stdin=None, env=None):
    return subprocess.run([sys.executable, "-m", "diag", *args], input=stdin, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)


def test_exit_0_on_healthy_log_and_json_shape():
    r = diag("scan", "--json", str(VLLM / "vl.log"))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) >= {"diag_version", "files", "findings", "traces", "facts", "stats"}
    assert doc["files"] == [{"path": str(VLLM / "vl.log"), "format": "vllm", "lines": 335, "truncated_lines": 0}]
    f = doc["findings"][0]
    assert set(f) >= {"rule", "category", "severity", "count", "first_seen", "last_seen", "summary", "remedy", "fields",
                      "request_ids", "locations"}
    t = doc["traces"][0]
    assert set(t) >= {"id", "server", "model", "status", "http_status", "images", "prompt_tokens", "output_tokens",
                      "latency_s", "received_at"}
    assert t["model"] == "tinyvl"
    assert doc["stats"]["lines"] == 335


def test_exit_1_on_error_findings_and_human_output():
    r = diag("scan", str(VLLM / "kv-pressure-then-worker-sigkill.log"))
    assert r.returncode == 1
    assert "worker-killed" in r.stdout and "fix:" in r.stdout and "Startup facts" in r.stdout


def test_exit_2_on_unreadable_input_with_one_line_reason(tmp_path):
    r = diag("scan", str(tmp_path / "missing.log"))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"diag: {tmp_path / 'missing.log'}: no such file"
    locked = tmp_path / "locked.log"
    locked.write_text("x\n")
    locked.chmod(0)
    if os.geteuid() != 0:
        assert diag("scan", str(locked)).returncode == 2
    (tmp_path / "empty").mkdir()
    assert diag("scan", str(tmp_path / "empty")).returncode == 2  # a directory with no file in it (one with files: test_scan_directories.py)
    assert diag("scan", "--format", "nope", str(VLLM / "vl.log")).returncode == 2
    assert diag("scan", "--since", "yesterday-ish", str(VLLM / "vl.log")).returncode == 2
    assert diag("scan").returncode == 2
    # a rule set asked for that is not there: no report without it (a script would not notice the missing findings)
    r = diag("scan", "--rules", str(tmp_path / "my-rules"), str(VLLM / "vl.log"))
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.strip().splitlines() == [f"diag: --rules {tmp_path / 'my-rules'}: no such rule file or directory"]
    # one that is there but broken: reported, and the scan runs with the rest
    broken = tmp_path / "broken.toml"
    broken.write_text("[[rule]\n")
    r = diag("scan", "--json", "--rules", str(broken), str(VLLM / "vl.log"))
    assert r.returncode == 0 and json.loads(r.stdout)["findings"] and "rule error" in r.stderr


def test_stdin_and_binary_garbage():
    data = (VLLM / "text.log").read_text()
    r = diag("scan", "--json", "-", stdin=data)
    assert r.returncode == 1 and len(json.loads(r.stdout)["traces"]) == 12
    r = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", "-"], input=os.urandom(200_000), capture_output=True, check=False)
    assert r.returncode in (0, 1) and json.loads(r.stdout)["files"][0]["path"] == "-"


def test_since_until_window():
    r = diag("scan", "--json", "--since", "2026-11-22T18:27:50", "--until", "2026-11-22T18:27:53", str(VLLM / "text.log"))
    ids = {t["id"] for t in json.loads(r.stdout)["traces"]}
    assert ids == {"chatcmpl-9ae3f7091be22451", "chatcmpl-889f3af5b40d3f0c"}


def test_forced_format_and_long_lines(tmp_path):
    p = tmp_path / "long.log"
    p.write_bytes(b"INFO 01-24 10:00:00 [x.py:1] " + b"y" * 3_000_000 + b"\nRuntimeError: NCCL error: unhandled cuda error\n")
    doc = json.loads(diag("scan", "--json", "--max-line-bytes", "65536", str(p)).stdout)
    assert doc["files"][0]["truncated_lines"] == 1
    assert [f["rule"] for f in doc["findings"]] == ["nccl-error"]


def test_rules_commands(tmp_path):
    r = diag("rules", "list")
    assert r.returncode == 0 and "cuda-oom" in r.stdout
    listed = json.loads(diag("rules", "list", "--json").stdout)
    assert any(x["id"] == "zero-image-request" and x["scope"] == "trace" for x in listed)
    r = diag("rules", "test")
    assert r.returncode == 0 and " 0 failed" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nid = "b"\ntitle = "t"\ncategory = "other"\nseverity = "error"\nmatch = "zzz"\nsummary = "s"\n'
                   'remedy = "a remedy that is long enough"\nexamples = ["nope"]\ncounter_examples = ["zzz"]\n')
    r = diag("rules", "test", str(bad))
    assert r.returncode == 1 and "FAIL b" in r.stdout and "2 failed" in r.stdout
    assert diag("rules", "lint").returncode == 0


@pytest.mark.parametrize("log", sorted(p.name for p in (CORPUS / "llamacpp" / "real-b0c1e57-cpu").glob("*.log")))
def test_every_llamacpp_log_scans(log):
    r = diag("scan", "--json", str(CORPUS / "llamacpp" / "real-b0c1e57-cpu" / log))
    assert r.returncode in (0, 1) and json.loads(r.stdout)["files"][0]["format"] == "llamacpp"


def test_one_duration_reader_for_since_and_silences():
    from diag.alerts.silences import MatcherError, parse_duration
    from diag.parsing.clock import duration_seconds, parse_user_time

    assert duration_seconds("1d12h") == 129600 and duration_seconds("90s") == 90 and duration_seconds("1w") == 604800
    assert duration_seconds("12") is None and duration_seconds("2026-11-22") is None and duration_seconds("h") is None
    assert parse_user_time("1d12h", now=200000.0) == 200000.0 - 129600
    assert parse_user_time("1.5h", now=10000.0) == 10000.0 - 5400
    assert parse_duration("1d12h") == 129600 and parse_duration("30") == 30.0
    with pytest.raises(MatcherError):
        parse_duration("soon")


def test_findings_since_says_what_it_left_out(tmp_path):
    """A post-mortem store holds findings from the log's own (past) times: `diag findings --since 1h`
    finding none must say that none is that recent, not that none is stored."""
    state = str(tmp_path / "state")
    assert diag("scan", "--store", state, str(VLLM / "text.log")).returncode == 1  # the log's 404 error finding
    everything = diag("findings", "--state-dir", state)
    assert "unknown-model" in everything.stdout
    recent = diag("findings", "--since", "1h", "--state-dir", state)
    assert recent.returncode == 0 and recent.stdout.strip() == "No findings stored since 1h (without --since: all of them)."
