"""A log file (or rule file, or config file) whose name is not valid UTF-8 (Linux allows any bytes),
and log text that JSON decodes to a lone surrogate.

Python hands such a name over as a str with lone surrogates; every place diag writes text (UTF-8
JSON, SQLite, HTML, metrics labels, alerts, a terminal whose encoding is strict) refused it and
diag died with a traceback. Now the name is shown as its display form (the undecodable bytes as
`\\xHH`, diag.fsname) and the daemon finds the file again after a restart by the name's bytes.
The commands run as users run them, over real files with such names, a real store and the real
daemon; `PYTHONIOENCODING=utf-8` gives them the strict standard output of a UTF-8 locale.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from contextlib import closing
from functools import partial
from pathlib import Path

import pytest

from conftest import VLLM, Receiver, free_port, vllm_request_lines, wait_for
from diag.store.db import Store

RAW = b"vllm-\xff.log"  # 0xff never occurs in UTF-8
NAME = os.fsdecode(RAW)  # 'vllm-\udcff.log', as os.listdir and glob give it
SHOWN = "vllm-\\xff.log"  # what diag prints: the byte spelled out
LOOK_ALIKE = b"vllm-\\xff.log"  # a valid UTF-8 name spelling the byte's display form: backslash, x, f, f
LOOK_ALIKE_SHOWN = "vllm-\\\\xff.log"  # its backslash doubled: never the same display name as RAW's
# stdout that refuses surrogates, as under en_US.UTF-8; wide enough that report tables keep a path on one line
STRICT = {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "400"}
CORPUS_LOG = VLLM / "text-logoutputs.log"
OOM = ("(APIServer pid=1) ERROR 01-24 10:03:33 [serving_chat.py:1012] Error in chat completion stream generator: CUDA out of memory. "
       "Tried to allocate 11.72 GiB. GPU 0 has a total capacity of 79.19 GiB of which 7.04 GiB is free.\n")


def diag(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "diag", *args], capture_output=True, env=STRICT, timeout=120)
    assert b"Traceback" not in r.stderr, r.stderr.decode("utf-8", "replace")
    if check:
        assert r.returncode in (0, 1), r.stderr.decode("utf-8", "replace")  # 1: the corpus has an error finding
    return r


def copy_corpus(directory: Path, raw_name: bytes = RAW) -> str:
    path = os.path.join(os.fsencode(directory), raw_name)
    shutil.copyfile(CORPUS_LOG, path)
    return os.fsdecode(path)


def test_scan_json_names_the_file_by_its_display_name(tmp_path):
    log = copy_corpus(tmp_path)
    doc = json.loads(diag("scan", "--json", log).stdout.decode("utf-8"))
    shown = f"{tmp_path}/{SHOWN}"
    assert [f["path"] for f in doc["files"]] == [shown]
    assert doc["files"][0]["lines"] > 200
    assert doc["traces"] and {t["source"] for t in doc["traces"]} == {shown}
    assert {loc["path"] for f in doc["findings"] for loc in f.get("locations", [])} <= {shown}
    # the same scan of the file under a UTF-8 name finds the same (only the name differs)
    plain = json.loads(diag("scan", "--json", copy_corpus(tmp_path, b"vllm-plain.log")).stdout.decode("utf-8"))
    assert len(plain["traces"]) == len(doc["traces"]) and [f["rule"] for f in plain["findings"]] == [f["rule"] for f in doc["findings"]]


def test_scan_report_on_a_strict_utf8_terminal(tmp_path):
    log = copy_corpus(tmp_path)
    out = diag("scan", log).stdout.decode("utf-8")
    assert f" {tmp_path}/{SHOWN} " in out  # the table of files
    assert f"{SHOWN}:144" in out
    # a file that cannot be read: one line naming it, no traceback
    missing = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"gone-\xfe.log"))
    r = diag("scan", missing, check=False)
    assert r.returncode == 2 and r.stderr.decode("utf-8").strip() == f"diag: {tmp_path}/gone-\\xfe.log: no such file"


def test_scan_store_keeps_the_name_apart_from_its_look_alike_and_rescans_replace(tmp_path):
    log = copy_corpus(tmp_path)
    # a valid UTF-8 name spelling the other's display form: its own file (its own requests: a trace's id
    # is its key in the store), whose rows a rescan of the other must keep
    look_alike = os.path.join(str(tmp_path), LOOK_ALIKE.decode())
    Path(look_alike).write_bytes(CORPUS_LOG.read_bytes().replace(b"cmpl-", b"cmpl-look-"))
    state = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"state-\xfe")))
    r = diag("scan", "--store", str(state), log)
    assert r.stderr.decode("utf-8").endswith(f"findings in {tmp_path}/state-\\xfe/diag.sqlite3\n")

    def rows() -> tuple[Counter, int]:
        with closing(sqlite3.connect(state / "diag.sqlite3")) as db:
            return (Counter(r[0] for r in db.execute("SELECT source FROM traces")),
                    db.execute("SELECT count(*) FROM findings").fetchone()[0])

    one = rows()[1]
    diag("scan", "--store", str(state), look_alike)
    traces, findings = rows()
    n = traces[f"{tmp_path}/{SHOWN}"]
    assert n > 0 and traces == {f"{tmp_path}/{SHOWN}": n, f"{tmp_path}/{LOOK_ALIKE_SHOWN}": n}
    assert one > 0 and findings == 2 * one  # each its own
    diag("scan", "--store", str(state), log)  # scanning it again replaces what its first scan stored
    assert rows() == (traces, findings)
    with closing(Store(state / "diag.sqlite3", readonly=True)) as s:
        assert [[f["path"] for f in sc["sources"]] for sc in s.meta()["scanned"]] == [
            [f"{tmp_path}/{SHOWN}"], [f"{tmp_path}/{LOOK_ALIKE_SHOWN}"], [f"{tmp_path}/{SHOWN}"]]
    st = json.loads(diag("status", "--json", "--state-dir", str(state)).stdout.decode("utf-8"))
    assert st["state"] == f"{tmp_path}/state-\\xfe/diag.sqlite3" and st["traces"] == sum(traces.values())


def test_doctor_log_check_names_the_files(tmp_path):
    log = copy_corpus(tmp_path)
    missing = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"gone-\xfe.log"))
    r = diag("doctor", "--check", "logs", "--log", log, "--log", missing, "--json", check=False)
    (check,) = json.loads(r.stdout.decode("utf-8"))["checks"]
    assert check["status"] == "fail" and check["summary"].startswith(f"{tmp_path}/gone-\\xfe.log does not exist")
    assert any(d.startswith(f"{tmp_path}/{SHOWN}: 43735 bytes") for d in check["details"])
    r = diag("doctor", "--check", "logs", "--log", missing, check=False)
    assert f"logs: {tmp_path}/gone-\\xfe.log does not exist" in r.stdout.decode("utf-8")


def test_rule_files_and_config_named_in_bytes(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    good = (b'[[rule]]\nid = "fsname-probe"\ntitle = "probe"\ncategory = "other"\nseverity = "info"\nmatch = "does not exist"\n'
            b'summary = "probe"\nremedy = "none"\nexamples = [{ text = "The model `x` does not exist." }]\n'
            b'counter_examples = ["fine"]\n')
    for raw, text in ((b"good-\xff.toml", good), (b"broken-\xfe.toml", b"[[rule]\n")):
        Path(os.fsdecode(os.path.join(os.fsencode(rules), raw))).write_bytes(text)
    log = copy_corpus(tmp_path, b"vllm.log")  # only the rule files' names are not UTF-8 here
    r = diag("scan", "--json", "--rules", str(rules), log)
    doc = json.loads(r.stdout.decode("utf-8"))
    assert [e.split(": ")[0] for e in doc["rule_errors"]] == [f"{rules}/broken-\\xfe.toml"]
    assert f"diag: rule error: {rules}/broken-\\xfe.toml: invalid TOML" in r.stderr.decode("utf-8")
    listed = json.loads(diag("rules", "list", "--json", "--rules", str(rules)).stdout.decode("utf-8"))
    (probe,) = [x for x in listed if x["id"] == "fsname-probe"]
    assert probe["file"] == f"{rules}/good-\\xff.toml"
    config = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"diag-\xfd.toml"))
    Path(config).write_text("[daemon]\n")
    r = diag("daemon", "--check-config", "--config", config, "--state-dir", str(tmp_path / "state"), check=False)
    assert r.returncode == 0 and f"config {tmp_path}/diag-\\xfd.toml:" in r.stdout.decode("utf-8")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode("utf-8")


def _requests(first: int, n: int) -> str:
    return "".join(vllm_request_lines(f"chatcmpl-{i:016x}", 40000 + i % 1000) for i in range(first, first + n))


def daemon_status(state: Path) -> dict:
    """`diag status --json`, or an empty one before the daemon has created its store."""
    r = diag("status", "--json", "--state-dir", str(state), check=False)
    return json.loads(r.stdout) if r.returncode == 0 else {"sources": [], "traces": 0, "findings": 0}


def stored_once(state: Path, n: int) -> dict:
    """The traces the daemon stored: requests 0..n-1 (`_requests`), none lost, none extra, none with a line twice."""
    with closing(Store(state / "diag.sqlite3", readonly=True)) as s:
        traces = {tid: s.trace(tid) for tid in s.trace_ids()}
    assert set(traces) == {f"chatcmpl-{i:016x}" for i in range(n)}
    once = Counter({"request.received": 1, "request.added": 1, "http.access": 1})
    assert [tid for tid, t in traces.items() if Counter(e["kind"] for e in t["timeline"]) != once] == []
    return traces


def run_until(args: list[str], stderr, cond, what: str, settle: float) -> None:
    """Start the daemon, wait until `cond()`, give it `settle` seconds (to show a line read twice or
    late), and stop it with SIGTERM: it must exit 0."""
    d = subprocess.Popen(args, stderr=stderr, stdout=subprocess.DEVNULL, env=STRICT)
    try:
        wait_for(cond, 30, what)
        time.sleep(settle)
        d.send_signal(signal.SIGTERM)
        assert d.wait(timeout=30) == 0
    finally:
        if d.poll() is None:
            d.kill()


def test_daemon_follows_restarts_and_shows_a_file_named_in_bytes(tmp_path):
    """Through a glob, with the dashboard, /metrics and a webhook; killed (-9), the file renamed away
    (logrotate) and a new one written while it is down: after the restart every request is stored
    exactly once, the old file finished from its committed offset, found by the name's bytes."""
    logs = tmp_path / "logs"
    logs.mkdir()
    state = tmp_path / "state"
    log = os.fsdecode(os.path.join(os.fsencode(logs), RAW))
    shown = f"{logs}/{SHOWN}"
    n1, n2, n3 = 40, 30, 20
    Path(log).write_text(_requests(0, n1) + OOM)
    rec = Receiver()
    port = free_port()
    config = tmp_path / "diag.toml"
    config.write_text(f'[alerts]\ngroup_wait = 0\n[[alerts.sink]]\nname = "hook"\ntype = "webhook"\nurl = "{rec.url}"\n')
    absent = os.fsdecode(os.path.join(os.fsencode(logs), b"later-\xfe.log"))  # a plain --log not there yet
    args = [sys.executable, "-m", "diag", "daemon", "--config", str(config), "--state-dir", str(state), "--log", str(logs / "vllm-*.log"),
            "--log", absent, "--from-beginning", "--web", f"127.0.0.1:{port}"]
    errs = [tmp_path / "d0.err", tmp_path / "d1.err"]

    status = partial(daemon_status, state)
    d = subprocess.Popen(args, stderr=open(errs[0], "w"), stdout=subprocess.DEVNULL, env=STRICT)
    try:
        wait_for(lambda: status()["traces"] == n1 and status()["findings"], 30, "the first file's requests and the OOM")
        st = status()
        assert [(s["path"], s["lines_read"], s["last_error"]) for s in st["sources"]] == [
            (shown, 3 * n1 + 1, None), (f"{logs}/later-\\xfe.log", 0, "waiting for the file to appear")]
        human = diag("status", "--state-dir", str(state)).stdout.decode("utf-8")
        # the path column, folded over lines by the table
        assert "".join(ln.split("│")[0].strip() for ln in human.splitlines() if "│" in ln) == shown + f"{logs}/later-\\xfe.log"
        # the dashboard's pages and APIs, /metrics
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(base + "/api/status") and True, 20, "the dashboard")
        assert [s["path"] for s in json.loads(_get(base + "/api/status"))["sources"]] == [shown, f"{logs}/later-\\xfe.log"]
        assert shown in _get(base + "/")
        tid = f"chatcmpl-{0:016x}"
        assert json.loads(_get(f"{base}/api/traces/{tid}"))["source"] == shown
        assert shown in _get(f"{base}/trace/{tid}")
        assert f"{shown}:{3 * n1 + 1}" in _get(base + "/findings")  # where the OOM line is
        metrics = _get(base + "/metrics")
        assert f'diag_lines_read_total{{path="{logs}/vllm-\\\\xff.log"}} {3 * n1 + 1}.0' in metrics  # the label escapes "\"
        # the OOM alert names the file
        (body,) = rec.wait(1)
        assert {a["labels"]["source"] for a in body["alerts"]} == {shown}
        assert shown in _get(base + "/alerts")
        d.send_signal(signal.SIGKILL)
        d.wait(timeout=30)
        # while diag is down: more lines, then logrotate renames the file away and a new one is written
        with open(log, "a") as f:
            f.write(_requests(n1, n2))
        os.rename(log, log + ".1")
        Path(log).write_text(_requests(n1 + n2, n3))
        run_until(args, open(errs[1], "w"),
                  lambda: status()["traces"] == n1 + n2 + n3 and all(s["lag_bytes"] in (0, None) for s in status()["sources"]),
                  "the restarted daemon to catch up", settle=0.5)
    finally:
        if d.poll() is None:
            d.kill()
        rec.close()
    stderr = "".join(e.read_text(encoding="utf-8") for e in errs)
    assert "Traceback" not in stderr and "rotated while diag was down" in stderr, stderr
    traces = stored_once(state, n1 + n2 + n3)
    assert {t["source"] for t in traces.values()} == {shown}
    src = status()["sources"][0]
    assert (src["path"], src["rotations"], src["lines_read"]) == (shown, 1, 3 * (n1 + n2 + n3) + 1)
    with closing(sqlite3.connect(state / "diag.sqlite3")) as db:
        stored = sorted(db.execute("SELECT path, path_bytes, state FROM sources"))
    assert [row[:2] for row in stored] == [(shown, os.fsencode(log))] * 2  # the new file and the one rotated away
    assert sorted(row[2] for row in stored) in (["active", "done"], ["active", "rotated"])


TRICKY = [  # (a name's last part, its display form): each byte that is not part of a printable character as \\xHH
    (b"\xff", "\\xff"),  # never UTF-8
    (b"\xed\xa0\x80", "\\xed\\xa0\\x80"),  # UTF-8's form of a surrogate: not valid UTF-8
    (b"a\\xff", "a\\\\xff"),  # valid UTF-8 spelling the first one's display form: the backslash doubled
    (b"e\x1b[31m\r\n\x07\x7f", "e\\x1b[31m\\x0d\\x0a\\x07\\x7f"),  # control characters: ESC, CR, LF, BEL, DEL
    ("csi\u009b31m".encode(), "csi\\xc2\\x9b31m"),  # C1's CSI, valid UTF-8: its two bytes
    ("caf\u00e9 \u65e5\u5fd7".encode(), "caf\u00e9 \u65e5\u5fd7"),  # printable text is itself
    ("vllm-\u202egol.txt".encode(), "vllm-\\xe2\\x80\\xaegol.txt"),  # a bidirectional override: would show "vllm-txt.log"
    ("a\u2066b\u2069".encode(), "a\\xe2\\x81\\xa6b\\xe2\\x81\\xa9"),  # isolates
]


@pytest.mark.parametrize("raw,shown", TRICKY)
def test_display_and_stored_forms(raw, shown):
    from diag import fsname

    name = os.fsdecode(b"/logs/" + raw)
    text, blob = fsname.stored(name)
    text.encode("utf-8")  # text any UTF-8 sink takes
    assert text == fsname.display(name) == fsname.display(os.fsencode(name)) == "/logs/" + shown
    assert fsname.restored(text, blob) == name
    if blob is None:  # a name that is its own display form is its own key
        assert text == name == fsname.ident(name)
    else:
        assert blob == b"/logs/" + raw
        assert fsname.ident(name) != fsname.ident(text)  # the look-alike is another key


def test_display_names_tell_every_name_apart_and_carry_no_control_character():
    """Within a run the display name keys a source (traces, facts, counts): two files must never
    share one, and none may hold a character a terminal acts on."""
    import re

    from diag import fsname

    names = [raw for raw, _ in TRICKY] + [shown.encode() for _, shown in TRICKY] + [bytes([b]) for b in range(1, 256)] + [
        b"\\", b"\\\\", b"\\x", b"\\x5c", b"\x5c", "\u0085\u2028".encode(), b"\xc2", b"\xc2\x9b\x9b"]
    shown = [fsname.display(os.fsdecode(n)) for n in names]
    assert len(set(shown)) == len(set(names))
    assert [s for s in shown if re.search("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]", s)] == []


def test_other_arguments_with_bytes_that_are_not_utf8_get_a_one_line_answer(tmp_path):
    state = tmp_path / "state"
    diag("scan", "--store", str(state), copy_corpus(tmp_path, b"vllm.log"))
    r = diag("trace", "--state-dir", str(state), os.fsdecode(b"chatcmpl-\xff"), check=False)
    assert (r.returncode, r.stderr.decode("utf-8")) == (1, f"diag: no trace 'chatcmpl-\\\\xff' in {state}/diag.sqlite3\n")
    r = diag("daemon", "--check-config", "--state-dir", str(state), "--alert-webhook", os.fsdecode(b"http://127.0.0.1:9/\xff"), check=False)
    assert r.returncode == 2 and r.stderr.decode("utf-8").splitlines() == [
        "diag: --alert-webhook: [[alerts.sink]] webhook-cli-1: url 'http://127.0.0.1:9/\\\\xff' has bytes that are not UTF-8"]


def test_a_json_log_line_escaping_a_lone_surrogate_is_text_like_any_invalid_byte(tmp_path):
    """The log text side: raw bytes are decoded with errors='replace', but llama-server's JSON lines
    are decoded by json.loads, which returns an escaped lone surrogate as is."""
    log = tmp_path / "llama.log"
    log.write_text('{"type":"log","level":"ERR","time":1000,"msg":"ggml_cuda_compute_forward: cudaMalloc failed: '
                   'out of memory \\udcff \\ud83d\\ude00"}\n{"type":"\\ud800","level":"ERR","time":1001,"msg":"x"}\n')
    doc = json.loads(diag("scan", "--json", "--format", "llamacpp", str(log)).stdout.decode("utf-8"))
    assert [f["rule"] for f in doc["findings"]] == ["llamacpp-alloc-failed"]
    out = diag("scan", "--format", "llamacpp", str(log)).stdout.decode("utf-8")
    assert "cudaMalloc failed: out of memory \ufffd \U0001f600" in out  # the escaped pair is one character
    diag("scan", "--store", str(tmp_path / "state"), "--format", "llamacpp", str(log))
    with closing(sqlite3.connect(tmp_path / "state" / "diag.sqlite3")) as db:
        assert db.execute("SELECT excerpt FROM findings").fetchall() == [("ggml_cuda_compute_forward: cudaMalloc failed: out of memory \ufffd \U0001f600",)]


@pytest.mark.parametrize("name", [b"state?mode=rw#x", b"st\xffate"])
def test_a_store_whose_path_has_uri_characters_or_undecodable_bytes_opens_read_only(tmp_path, name):
    """`diag status` and the dashboard open the store read-only through an SQLite URI: a `?` or
    `#` in the state dir's path, or bytes that are not UTF-8, must still name that file."""
    path = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), name, b"diag.sqlite3")))
    with closing(Store(path).db):
        pass
    ro = Store(path, readonly=True)
    try:
        assert ro.schema_version > 0
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.db.execute("CREATE TABLE t (x)")
    finally:
        ro.db.close()


# -- control characters, look-alikes, a file named twice ---------------------------------------------
EVIL = b"evil-\x1b[31mred\x1b[0m-\r\n\x07-\xc2\x9b-<i>.log"  # ESC sequences, CR, LF, BEL, C1's CSI, markup
EVIL_SHOWN = "evil-\\x1b[31mred\\x1b[0m-\\x0d\\x0a\\x07-\\xc2\\x9b-<i>.log"
RAW_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")  # what a terminal acts on (tab, newline aside)


def clean(r: subprocess.CompletedProcess) -> str:
    """A command's output for a terminal: no control character but newline and tab (and no undecodable byte)."""
    for out in (r.stdout, r.stderr):
        assert not RAW_CONTROL.search(out), out
    return r.stdout.decode("utf-8") + r.stderr.decode("utf-8")


def test_control_characters_in_a_file_name_never_reach_the_terminal(tmp_path):
    """A log directory anyone can write to: a file named with escape sequences must not recolour,
    clear or rewrite the terminal of whoever reads diag's report; it shows as its display form."""
    log = copy_corpus(tmp_path, EVIL)
    shown = f"{tmp_path}/{EVIL_SHOWN}"
    out = clean(diag("scan", log))
    assert f" {shown} " in out and f"{shown}:144" in out and f"Startup facts {shown}:" in out
    assert json.loads(diag("scan", "--json", log).stdout)["files"][0]["path"] == shown
    gone = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"gone-\x1b[2J\x1b]0;owned\x07.log"))
    r = diag("scan", gone, check=False)
    clean(r)
    assert r.returncode == 2 and r.stderr.decode("utf-8") == f"diag: {tmp_path}/gone-\\x1b[2J\\x1b]0;owned\\x07.log: no such file\n"
    state = str(tmp_path / "state")
    diag("scan", "--store", state, log)
    assert f"{shown}:144" in clean(diag("findings", "--state-dir", state))
    assert f"{shown}:" in clean(diag("trace", "--state-dir", state, "chatcmpl-bd32fde27c4a734b"))  # its timeline
    r = diag("doctor", "--check", "logs", "-v", "--log", log, "--log", gone, check=False)
    out = clean(r)
    assert f"- {shown}: 43735 bytes" in out and f"{tmp_path}/gone-\\x1b[2J\\x1b]0;owned\\x07.log does not exist" in out


def test_a_name_and_its_look_alike_are_two_sources_in_one_scan(tmp_path):
    """The byte 0xff displays as `\\xff`; a name spelling those four characters must not merge with it
    (one source's traces, facts and counts would be the other's)."""
    log, look_alike = copy_corpus(tmp_path), copy_corpus(tmp_path, LOOK_ALIKE)
    shown, look_shown = f"{tmp_path}/{SHOWN}", f"{tmp_path}/{LOOK_ALIKE_SHOWN}"
    doc = json.loads(diag("scan", "--json", log, look_alike).stdout)
    one = json.loads(diag("scan", "--json", log).stdout)
    n = len(one["traces"])
    assert [f["path"] for f in doc["files"]] == [shown, look_shown]
    assert Counter(t["source"] for t in doc["traces"]) == {shown: n, look_shown: n}
    assert sorted(doc["facts"]) == sorted([shown, look_shown])
    out = diag("scan", log, look_alike).stdout.decode("utf-8")
    assert f"Startup facts {shown}:" in out and f"Startup facts {look_shown}:" in out


def test_state_and_rule_directories_are_named_by_their_display_form(tmp_path):
    """Names from the command line: a state dir with a byte that is not UTF-8 or an escape sequence
    gets the same display form in every message, never a traceback or a raw escape."""
    state = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"st-\xff"))
    r = diag("daemon", "--check-config", "--state-dir", state, check=False)
    assert r.returncode == 0 and f"state {tmp_path}/st-\\xff/diag.sqlite3," in clean(r)
    r = diag("web", "--state-dir", state, check=False)
    assert r.returncode == 2 and clean(r).startswith(f"diag: {tmp_path}/st-\\xff/diag.sqlite3: no diag store here")
    escaped = str(tmp_path / "st-\x1b[2J")
    r = diag("daemon", "--check-config", "--state-dir", escaped, check=False)
    assert r.returncode == 0 and f"state {tmp_path}/st-\\x1b[2J/diag.sqlite3," in clean(r)
    rules = tmp_path / "rules-\x1b[31m"
    rules.mkdir()
    assert f" and {tmp_path}/rules-\\x1b[31m" in clean(diag("rules", "list", "--rules", str(rules))).replace("\n", "")


def test_a_file_named_twice_is_read_once(tmp_path):
    """`diag scan a.log ./a.log`, a glob and a name, a symlink: the same device and inode, read once
    (twice would double every request and finding), with one line for each name left out."""
    log = copy_corpus(tmp_path, b"vllm.log")
    (tmp_path / "link.log").symlink_to("vllm.log")
    names = [log, f"{tmp_path}/./vllm.log", str(tmp_path / "link.log"), log]
    once = json.loads(diag("scan", "--json", log).stdout)
    r = diag("scan", "--json", *names)
    doc = json.loads(r.stdout)
    assert [f["path"] for f in doc["files"]] == [log]
    assert len(doc["traces"]) == len(once["traces"]) and doc["findings"] == once["findings"]
    assert r.stderr.decode("utf-8").splitlines() == [
        f"diag: {tmp_path}/./vllm.log: the same file as {log}; read once",
        f"diag: {tmp_path}/link.log: the same file as {log}; read once",
        f"diag: {log}: given twice; read once"]
    state = tmp_path / "state"
    r = diag("scan", "--store", str(state), *names)
    assert r.stderr.decode("utf-8").splitlines()[-1] == (
        f"diag: stored {len(once['traces'])} traces and {sum(f['count'] for f in once['findings'])} findings in {state}/diag.sqlite3")


def test_daemon_follows_a_file_named_twice_once(tmp_path):
    """A glob, a symlink it also matches and a plain path all name one file that appears after the
    daemon started: its lines are read once (each OOM line one finding), the other names say why
    they are idle, and a restart resumes the file without losing or repeating a line. Its state dir's
    name holds an escape sequence, which its log shows spelled out."""
    logs = tmp_path / "logs"
    logs.mkdir()
    state = tmp_path / "state-\x1b[2J"
    log = logs / "vllm.log"
    args = [sys.executable, "-m", "diag", "daemon", "--no-web", "--state-dir", str(state), "--log", str(logs / "*.log"),
            "--log", f"{logs}/./vllm.log", "--from-beginning"]
    ooms = "".join(OOM.replace("10:03:33", f"10:03:3{i}") for i in range(3))

    status = partial(daemon_status, state)
    err = tmp_path / "d.err"
    d = subprocess.Popen(args, stderr=open(err, "w"), stdout=subprocess.DEVNULL, env=STRICT)
    try:
        wait_for(lambda: any(s["last_error"] for s in status()["sources"]), 30, "the daemon to start")
        log.write_text(_requests(0, 20) + ooms)
        (logs / "a-link.log").symlink_to("vllm.log")
        wait_for(lambda: status()["traces"] == 20 and status()["findings"] == 3, 30, "the file's requests and OOMs")
        time.sleep(1.5)  # a second reader would have caught up by now
        st = status()
        assert (st["traces"], st["findings"]) == (20, 3)
        read = [s for s in st["sources"] if s["lines_read"]]
        idle = {s["path"]: s["last_error"] for s in st["sources"] if not s["lines_read"]}
        assert len(read) == 1 and read[0]["lines_read"] == 3 * 20 + 3
        assert len(idle) == 2 and set(idle.values()) == {f"the same file as {read[0]['path']}; read once"}
        d.send_signal(signal.SIGTERM)
        assert d.wait(timeout=30) == 0
        with open(log, "a") as f:
            f.write(_requests(20, 10))
        run_until(args, open(err, "a"), lambda: status()["traces"] == 30, "the restarted daemon to catch up", settle=1.5)
    finally:
        if d.poll() is None:
            d.kill()
    stored_once(state, 30)
    assert status()["findings"] == 3 and "Traceback" not in err.read_text()
    assert not RAW_CONTROL.search(err.read_bytes()) and f"state {tmp_path}/state-\\x1b[2J/diag.sqlite3" in err.read_text()


def test_follower_resumes_a_file_named_twice_by_the_name_the_store_knows(tmp_path):
    """Of two configured names of one file, the one the store committed an offset for is followed:
    the other, first in the config, would start a new file at its end and lose what was written
    while diag was down."""
    from diag.daemon.config import Config, LogSpec
    from diag.fsname import file_key
    from diag.ingest.follow import Follower
    from diag.store.db import SourceState

    log = tmp_path / "vllm.log"
    first = _requests(0, 5)
    log.write_text(first + _requests(5, 5))
    cfg = Config()
    cfg.logs = [LogSpec(str(tmp_path / "*.log")), LogSpec(f"{tmp_path}/./vllm.log")]
    n = len(first.encode())
    stored = SourceState(file_key(os.stat(log)), f"{tmp_path}/./vllm.log", offset=n, lineno=15, format="vllm")
    f = Follower(cfg, [stored])
    try:
        (r,) = f.discover(force=True)
        lines = r.read()
        assert r.state.path == f"{tmp_path}/./vllm.log" and len(lines) == 15 and lines[0].lineno == 16
        assert f.errors == {str(log): f"the same file as {tmp_path}/./vllm.log; read once"}
    finally:
        f.close()
