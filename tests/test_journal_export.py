"""`diag scan` of a journal exported as JSON (`journalctl -u vllm -o json > vllm.json`,
`diag.ingest.journalexport`): real journal files written by systemd-journal-remote and exported by
the real journalctl, with `diag scan` of the text export (`-o short-iso-precise`) of the same
journal as the reference.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import CANARY, scan
from test_journal import UNIT, append, corpus_lines, entries_of, entry, exported, pytestmark  # noqa: F401  (the skip without the tools)


def export_json(jdir: Path, out: Path) -> Path:
    """The journal as a user exports it whole: every field, `-o json`."""
    with open(out, "wb") as f:
        subprocess.run(["journalctl", f"--directory={jdir}", "-u", UNIT, "-o", "json", "--no-pager"], stdout=f, check=True)
    return out


def comparable(doc: dict, path: Path) -> str:
    """The document without what differs by the file read: its name, and the time the scan took."""
    doc = {k: v for k, v in doc.items() if k != "stats"}
    return json.dumps(doc, sort_keys=True).replace(json.dumps(str(path))[1:-1], "<log>")


def test_a_json_export_is_scanned_as_its_text_export(tmp_path):
    jdir = tmp_path / "j"
    jdir.mkdir()
    lines = corpus_lines("text.log", "oom-kv-no-blocks.log")
    odd = [entry(None, 9000), entry(b"bin \xff\xfe x", 9001), entry(b"multi\nline", 9002, _HOSTNAME=None)]
    append(jdir, entries_of(lines, 0) + odd)
    js, text = export_json(jdir, tmp_path / "vllm.json"), exported(jdir, tmp_path / "vllm.log")
    assert b'"MESSAGE":[98,105,110' in js.read_bytes()  # (the bytes entry: journalctl writes such a MESSAGE as its byte values)
    got, want = scan(js), scan(text)
    assert want["traces"] and "kv-cache-no-blocks" in {f["rule"] for f in want["findings"]}  # (what is compared is there)
    assert comparable(got, js) == comparable(want, text)
    assert got["files"][0]["format"] == "vllm" and got["files"][0]["lines"] == text.read_bytes().count(b"\n")


def test_a_json_export_from_stdin_and_a_line_that_is_no_entry(tmp_path):
    jdir = tmp_path / "j"
    jdir.mkdir()
    append(jdir, entries_of(corpus_lines("oom-kv-no-blocks.log"), 0))
    js = export_json(jdir, tmp_path / "vllm.json")
    # an export cut in the middle of an entry, then something else appended: passed on as lines
    cut = js.read_bytes() + b'{"__CURSOR":"s=cut","MESSAGE":"' + CANARY.encode() + b"\n" + b"a line of something else\n"
    (tmp_path / "cut.json").write_bytes(cut)
    doc = scan(tmp_path / "cut.json")
    assert doc["files"][0]["lines"] == exported(jdir, tmp_path / "vllm.log").read_bytes().count(b"\n") + 2
    r = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", "-"], input=js.read_bytes(), capture_output=True, check=False)
    assert r.returncode in (0, 1), r.stderr
    piped = json.loads(r.stdout)
    assert [(f["rule"], f["count"]) for f in piped["findings"]] == [(f["rule"], f["count"]) for f in scan(js)["findings"]]
    assert piped["findings"] and piped["files"][0]["format"] == "vllm"


def test_an_entry_whose_time_is_not_ascii_digits_loses_nothing_else(tmp_path):
    """A damaged export: an entry whose time is digits Python's str.isdigit() takes but int() does
    not (a superscript two). It is passed on as the line it is; every other entry is still read."""
    jdir = tmp_path / "j"
    jdir.mkdir()
    append(jdir, entries_of(corpus_lines("oom-kv-no-blocks.log"), 0))
    js = export_json(jdir, tmp_path / "vllm.json")
    damaged = tmp_path / "damaged.json"
    damaged.write_bytes(js.read_bytes() + b'{"__CURSOR":"s=x","__REALTIME_TIMESTAMP":"\\u00b2","MESSAGE":"x"}\n')
    doc = scan(damaged)
    assert doc["files"][0]["lines"] == exported(jdir, tmp_path / "vllm.log").read_bytes().count(b"\n") + 1
    assert "kv-cache-no-blocks" in {f["rule"] for f in doc["findings"]}


def test_a_json_export_whose_first_entry_is_longer_than_what_judges_a_file(tmp_path):
    # `--all` prints a MESSAGE over 64 KiB (without it: null); the entry's cursor and time may come
    # after it in the line. journalctl's order of a line's fields differs from one journal file to
    # the next (systemd 252 puts the entry's own fields first, in the file's order), so the real
    # first line is written again with its MESSAGE first, the order this case is about.
    jdir = tmp_path / "j"
    jdir.mkdir()
    long = b"(APIServer pid=1) INFO 11-22 17:27:00 [api_server.py:1] " + b"x" * 100_000
    append(jdir, [entry(long, 0)] + entries_of(corpus_lines("oom-kv-no-blocks.log"), 1))
    real = subprocess.run(["journalctl", f"--directory={jdir}", "-u", UNIT, "-o", "json", "--all", "--no-pager"],
                          capture_output=True, check=True).stdout
    head, rest = real.split(b"\n", 1)
    e = json.loads(head)
    first = json.dumps({"MESSAGE": e.pop("MESSAGE"), **e}, separators=(",", ":")).encode()
    assert len(first) > 100_000 and min(first.find(b'"__CURSOR"'), first.find(b'"__REALTIME_TIMESTAMP"')) > 65536
    js = tmp_path / "vllm.json"
    js.write_bytes(first + b"\n" + rest)
    text = tmp_path / "vllm.log"
    with open(text, "wb") as f:
        subprocess.run(["journalctl", f"--directory={jdir}", "-u", UNIT, "-o", "short-iso-precise", "--all", "--no-pager"],
                       stdout=f, check=True)
    assert comparable(scan(js), js) == comparable(scan(text), text)
