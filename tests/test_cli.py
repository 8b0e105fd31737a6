"""`diag scan` and `diag rules` as a user runs them: exit codes, stdin, JSON shape, errors."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys

import pytest

from conftest import CORPUS, ROOT, VLLM


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
    doc = json.loads(r.stdout)  # read to the end, and said to be no server log (nothing analysed: exit status 2)
    assert doc["files"][0]["path"] == "-" and doc["files"][0]["recognised"] is False
    assert r.returncode == 2 and r.stderr.decode().startswith("diag: -: not recognised as a server log: none of its ")


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


# -- a scan that analysed nothing says so -------------------------------------------------------

KNOWN = "vllm, llamacpp, lmdeploy, uvicorn, nginx or proxy"


def _no_server_logs(tmp_path):
    """Two files that are no server log: a program and a text file of another kind."""
    prog = tmp_path / "true"
    prog.write_bytes(open("/bin/true", "rb").read() if os.path.exists("/bin/true") else b"\x7fELF\x02\x01\x01" + os.urandom(30000))
    services = tmp_path / "services"
    services.write_text("# Network services, Internet style\n" + "".join(f"svc{i}\t\t{i}/tcp\t\t\t# service {i}\n" for i in range(1, 300)))
    return prog, services


def test_a_file_that_is_no_server_log_is_said_to_be_unrecognised(tmp_path):
    """`diag scan` of a file diag reads no line of (a program, /etc/services) printed format
    `unknown` and "No findings." with exit status 0: an on-call engineer read "healthy". Now the
    report, the JSON document and a line on stderr say no line of it was read as a server log line,
    which formats diag reads and --format; with nothing recognised at all, the exit status is 2."""
    for f in _no_server_logs(tmp_path):
        lines = sum(1 for _ in open(f, "rb"))
        r = diag("scan", str(f))
        assert r.returncode == 2, (f, r.stdout, r.stderr)
        assert r.stderr.splitlines() == [
            f"diag: {f}: not recognised as a server log: none of its {lines} lines is a {KNOWN} log line, and no rule "
            "matched any (--format NAME forces a format)"]
        out = " ".join(r.stdout.split())
        assert r.stderr.splitlines()[0].removeprefix("diag: ") in out  # the report says it too
        assert "not recognised as a server log" in out and "No findings." not in out
        assert "Nothing was read as a server log: no findings does not mean healthy." in out
        r = diag("scan", "--json", str(f))
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not recognised as a server log" in r.stderr
        doc = json.loads(r.stdout)
        assert doc["files"] == [{"path": str(f), "format": "unknown", "lines": lines, "truncated_lines": 0, "recognised": False}]
        assert doc["warnings"] == [r.stderr.strip().removeprefix("diag: ")]
    # both at once: one line for both
    prog, services = _no_server_logs(tmp_path)
    r = diag("scan", str(prog), str(services))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"diag: 2 files not recognised as server logs: {prog} and 1 more: none of their lines is a {KNOWN} log line")


def test_an_unrecognised_file_beside_a_server_log_is_said_and_the_findings_decide(tmp_path):
    _prog, services = _no_server_logs(tmp_path)
    r = diag("scan", "--json", str(VLLM / "vl.log"), str(services))
    assert r.returncode == 0 and r.stderr.startswith(f"diag: {services}: not recognised as a server log")
    files = json.loads(r.stdout)["files"]
    assert "recognised" not in files[0] and files[1]["recognised"] is False


def test_a_forced_format_that_reads_no_line_is_said(tmp_path):
    _prog, services = _no_server_logs(tmp_path)
    r = diag("scan", "--format", "vllm", str(services))
    assert r.returncode == 2 and r.stderr.startswith(f"diag: {services}: not recognised as a server log: none of its 300 lines is a vllm log line")


def test_a_server_log_without_requests_or_findings_is_not_called_unrecognised(tmp_path):
    """A startup log (no request, no finding), a kernel log that a rule reads (no server format,
    but analysed), an empty file, stdin: none is "not recognised"."""
    startup = tmp_path / "startup.log"
    startup.write_text("".join((CORPUS / "vllm" / "real-0.32.0-cpu" / "text.log").read_text().splitlines(True)[:97]))
    empty = tmp_path / "empty.log"
    empty.write_text("")
    kernel = ROOT / "tests" / "data" / "field" / "oom" / "kernel-oom-dmesg-iso.log"
    r = diag("scan", "--json", str(startup), str(empty))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    doc = json.loads(r.stdout)
    assert doc["warnings"] == [] and [f["format"] for f in doc["files"]] == ["vllm", "unknown"]
    assert all("recognised" not in f for f in doc["files"])
    r = diag("scan", str(startup))
    assert r.returncode == 0 and "No findings." in r.stdout and "not recognised" not in r.stdout
    r = diag("scan", "--json", str(kernel))
    assert r.returncode == 1 and r.stderr == "" and json.loads(r.stdout)["warnings"] == []


def test_no_corpus_log_is_called_unrecognised():
    logs = sorted(str(p) for p in CORPUS.rglob("*.log"))
    assert len(logs) > 30
    r = diag("scan", "--json", *logs)
    assert r.returncode in (0, 1) and "recognised" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    assert doc["warnings"] == [] and not [f["path"] for f in doc["files"] if "recognised" in f]


def test_a_window_that_leaves_every_line_out_says_so():
    """`--since 2h` over a log of last year printed "No findings. Requests: 0 traced" and nothing
    about the window: the report now says how many lines it left out, the window and the logs' times."""
    log = CORPUS / "vllm" / "real-0.32.0-cpu" / "text.log"  # (vLLM logs no year: the file's is used)
    r = diag("scan", "--since", "2h", str(log))
    assert r.returncode == 0, r.stderr
    [line] = r.stderr.splitlines()
    assert re.fullmatch(
        r"diag: --since 2h: none of the 216 lines read has a time in the window \(from \S+ on\): 214 lines fall "
        r"outside it, their times from \d{4}-11-22T18:27:00\S* to \d{4}-11-22T18:28:02\S*; widen the window", line), line
    out = " ".join(r.stdout.split())  # (the report's lines are cut at 160 columns in a pipe)
    assert "No findings." not in out and "Window: from " in out and "(--since 2h): 214 of 216 lines read fell outside it" in out
    assert "none of the 216 lines read has a time in the window" in out  # (the first line has no time, the 40th is blank)
    assert "Nothing was read in the window: no findings does not mean healthy." in out
    doc = json.loads(diag("scan", "--json", "--until", "2020-01-01", str(log)).stdout)
    assert doc["stats"]["outside_window"] == 214 and doc["traces"] == []
    assert doc["warnings"][0].startswith("--until 2020-01-01: none of the 216 lines read has a time in the window (up to 2020-01-01T00:00:00")


def test_a_window_that_leaves_some_lines_out_says_how_many():
    log = CORPUS / "vllm" / "real-0.32.0-cpu" / "text.log"
    r = diag("scan", "--since", "2026-11-22T18:27:50", "--until", "2026-11-22T18:27:53", str(log))
    out = " ".join(r.stdout.split())
    assert r.stderr == "" and re.search(r"Window: from 2026-11-22T18:27:50\S* to 2026-11-22T18:27:53\S* \(--since 2026-11-22T18:27:50 "
                                        r"--until 2026-11-22T18:27:53\): 208 of 216 lines read fell outside it", out), out
    assert "No findings." in out and "Requests: 2 traced" in out
    doc = json.loads(diag("scan", "--json", "--since", "2026-11-22T18:27:50", str(log)).stdout)
    assert 0 < doc["stats"]["outside_window"] < 216 and doc["warnings"] == []
    doc = json.loads(diag("scan", "--json", str(log)).stdout)
    assert doc["stats"]["outside_window"] == 0 and doc["warnings"] == []


@pytest.mark.parametrize("args, message", [
    (["--until", "2h", "--since", "1h"], r"--since 1h \(\S+\) is after --until 2h \(\S+\): the window is empty"),
    (["--since", ""], r"cannot read time '': use ISO 8601 \(2026-11-22T18:27:00\), epoch seconds or a duration like 15m"),
    (["--until", " "], r"cannot read time ' ': use ISO 8601 \(2026-11-22T18:27:00\), epoch seconds or a duration like 15m"),
    (["--compact"], r"--compact is for --json \(the JSON document on one line\); the report has no compact form"),
])
def test_option_misuse_is_refused_in_one_line(args, message):
    r = diag("scan", *args, str(VLLM / "vl.log"))
    assert (r.returncode, r.stdout) == (2, ""), r.stdout[:500]
    [line] = r.stderr.splitlines()
    assert re.fullmatch("diag: " + message, line), line
