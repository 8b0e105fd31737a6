"""Text as Windows saves it: line ends, and UTF-16.

Logs with Windows line ends (`\\r\\n`): copied through a Windows desktop, saved by an editor or a
support tool, collected by some agents. Every line of such a file ends in `\\r`, which in a log
with Unix line ends is vLLM's mark of a record going on (`Line.cr`). Taken as that, lines of one
source within the same second were joined into one record: a busy server's Received lines
vanished into one another, and with them their requests. And every line went the full parser's
way (the fast path's classifier leaves any `\\r` to it), at half the speed.

`diag.ingest.reader.crlf_ends` judges a source's line ends from the first bytes read; the line
splitter then reads a \\r before a newline as the line end, and the fast path classifies lines
without it. A log reads the same with either line end, on both ways.

UTF-16 (Windows PowerShell 5.1's `>` and `Out-File`, Notepad's "Unicode"): read as bytes, every
other byte a NUL, nothing in such a file was found and nothing said so. A file that starts with a
UTF-16 byte-order mark is read as the text it holds (`diag.ingest.utf16`).
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CANARY, CORPUS, scan

from diag.analysis.rules import ruleset as rules
from diag.ingest.fastpath import FastSource
from diag.ingest.reader import LineSplitter, crlf_ends, read_lines
from diag.parsing.source import SourceParser
from diag.pipeline import Pipeline
from diag.ingest.utf16 import Utf16Source
from diag.report.document import to_json

FIELD = Path(__file__).parent / "data" / "field"
LOGS = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix not in (".md", ".json", ".txt"))
LOGS += sorted(p for p in FIELD.rglob("*") if p.is_file() and p.suffix not in (".md", ".json", ".toml"))
TS = "(APIServer pid=1) INFO 11-22 18:27:00 "


def _doc(pipe: Pipeline, renamed: dict[Path, Path] | None = None) -> dict:
    """The scan's document; `renamed`: the directory of each copy named as its original's."""
    d = to_json(pipe)
    d["stats"].pop("seconds")
    if renamed:
        text = json.dumps(d)
        for copy, log in renamed.items():
            text = text.replace(json.dumps(str(copy))[1:-1], json.dumps(str(log))[1:-1])
        d = json.loads(text)
    return d


def _scan(paths: list[Path], fast: bool) -> Pipeline:
    pipe = Pipeline(rules.load(), fast=fast)
    for p in paths:
        pipe.scan_path(str(p))
    pipe.finish()
    return pipe


def _windows(log: Path, tmp: Path) -> Path:
    """A copy with \\r\\n line ends, under the same name (trace ids carry it) in a copy of its directories."""
    root = CORPUS if log.is_relative_to(CORPUS) else FIELD
    out = tmp / root.name / log.relative_to(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(log.read_bytes().replace(b"\n", b"\r\n"))
    return out


ROOTS = (CORPUS, FIELD)


def _requests(n: int, crlf: bool) -> bytes:
    """n requests in one second from one source, their Received lines back to back: the lines a
    record's continuation repeats the prefix of."""
    lines = [f"{TS}[request_logger.py:65] Received request chatcmpl-{i:04x}: params: SamplingParams(n=1, max_tokens={i + 1}), "
             "lora_request: None." for i in range(n)]
    lines += [f"{TS}[async_llm.py:578] Added request chatcmpl-{i:04x}-0000abcd." for i in range(n)]
    lines += [f'INFO:     127.0.0.1:{5000 + i} - "POST /v1/chat/completions HTTP/1.1" 200 OK' for i in range(n)]
    end = "\r\n" if crlf else "\n"
    return "".join(line + end for line in lines).encode()


@pytest.mark.parametrize("fast", (True, False), ids=("fast path", "full parser"))
def test_a_busy_second_in_a_windows_line_ended_log_keeps_every_request(tmp_path, fast):
    log = tmp_path / "vllm.log"
    log.write_bytes(_requests(5, crlf=True))
    traces = _scan([log], fast).traces
    assert [(t.id, t.max_tokens, t.http_status) for t in traces] == [(f"chatcmpl-{i:04x}", i + 1, 200) for i in range(5)]


def test_every_corpus_log_reads_the_same_with_windows_line_ends(tmp_path):
    """Each recorded and field log, its newlines made \\r\\n: the same document as the log itself,
    on the fast path and the full parser's way (a log that holds a \\r of its own is left out of
    the first: there \\r\\n cannot be told from a record's continuation any more)."""
    plain = [log for log in LOGS if b"\r" not in log.read_bytes()]
    assert len(plain) > 150
    copies = [_windows(log, tmp_path) for log in plain]
    want = _doc(_scan(plain, fast=True))
    for fast in (True, False):
        assert _doc(_scan(copies, fast), {tmp_path / r.name: r for r in ROOTS}) == want, "fast path" if fast else "full parser"


def test_fast_path_and_full_parser_agree_on_every_corpus_log_with_windows_line_ends(tmp_path):
    """Those with a \\r of their own too (vLLM's multi-line records, progress bars)."""
    copies = [_windows(log, tmp_path) for log in LOGS]
    assert _doc(_scan(copies, fast=True)) == _doc(_scan(copies, fast=False))


def test_the_fast_path_takes_a_windows_line_ended_logs_lifecycle_lines_fed_in_any_chunks(tmp_path):
    """A real server's log with \\r\\n: its plain requests go the fast way as they do with \\n, also
    when fed in chunks that cut lines (and their \\r\\n) anywhere, as a follower reads a growing file."""
    log = CORPUS / "vllm" / "real-0.32.0-cpu" / "text.log"
    copy = _windows(log, tmp_path)
    counts, docs = [], []
    for path, chunk in ((log, 1 << 20), (copy, 1 << 20), (copy, 1), (copy, 97), (copy, 4096)):
        pipe = Pipeline(rules.load())
        src = FastSource(pipe, SourceParser(str(path), 1.7e9), LineSplitter())
        src.read(io.BytesIO(path.read_bytes()), chunk=chunk)
        pipe.finish()
        counts.append(src.plain)
        d = _doc(pipe, {tmp_path / r.name: r for r in ROOTS})
        del d["files"], d["stats"]
        docs.append(d)
    assert counts[0] >= 20 and counts[1] == counts[0]  # a block read whole: every line the fast way takes with \n
    assert counts[4] > 0  # 4 KiB reads: most lines whole in one (a line cut by a read takes the full parser's way)
    assert all(d == docs[0] for d in docs[1:])


def test_a_log_with_unix_line_ends_keeps_vllms_multi_line_records(tmp_path):
    """vLLM ends each line of a multi-line record but the last with \\r\\n: a log that starts with
    such a record (0.32's banner does) is no Windows file, and its records are still one event."""
    log = tmp_path / "vllm.log"
    record = (f"{TS}[serving_chat.py:90] Error in preprocessing prompt inputs\r\n"
              f"{TS}[serving_chat.py:90] Traceback (most recent call last):\r\n"
              f"{TS}[serving_chat.py:90] ValueError: bad things\n")
    log.write_bytes(record.encode() + _requests(2, crlf=False))
    joined = [ev for ev in _events(log) if "Error in preprocessing" in ev.text]
    assert len(joined) == 1 and "ValueError: bad things" in joined[0].text
    for fast in (True, False):
        assert [t.http_status for t in _scan([log], fast).traces] == [200, 200]


@pytest.mark.parametrize("data, want", [
    (b"a\r\nb\r\n", True), (b"a\r\nb\r\nc", True), (b"a\r\nb\n", False), (b"a\nb\r\n", False),
    (b"a\r\r\n", True), (b"", None), (b"no newline yet\r", None),
])
def test_line_ends_are_judged_from_the_first_complete_lines(data, want):
    assert crlf_ends(data) is want


def _events(log: Path) -> list:
    sp = SourceParser(str(log))
    out = []
    for line in read_lines(io.BytesIO(log.read_bytes())):
        out.extend(sp.feed(line))
    out.extend(sp.flush())
    return out


def test_a_random_mix_of_line_ends_reads_the_same_on_both_ways(tmp_path):
    """Whatever mixes of \\r\\n and \\n a file has, the fast path's document is the full parser's."""
    r = random.Random(5)
    body = _requests(40, crlf=False).split(b"\n")[:-1]
    for seed in range(6):
        r.seed(seed)
        mixed = b"".join(line + r.choice((b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r\r\n")) for line in body)
        log = tmp_path / f"mixed{seed}.log"
        log.write_bytes(mixed)
        assert _doc(_scan([log], fast=True)) == _doc(_scan([log], fast=False))


# -- UTF-16 ----------------------------------------------------------------------------------------
def _powershell(log: Path, tmp: Path, encoding: str = "utf-16-le", ends: bytes = b"\r\n") -> Path:
    """The log as `Get-Content`/`>` in Windows PowerShell 5.1 saves it: a byte-order mark, UTF-16, \\r\\n."""
    root = CORPUS if log.is_relative_to(CORPUS) else FIELD
    out = tmp / root.name / log.relative_to(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = log.read_bytes().replace(b"\n", ends).decode("utf-8", "replace")
    out.write_bytes(codecs.BOM_UTF16_LE + text.encode(encoding) if encoding == "utf-16-le" else codecs.BOM_UTF16_BE + text.encode(encoding))
    return out


def test_every_corpus_log_saved_as_utf16_reads_as_the_log(tmp_path):
    """Each valid-UTF-8 recorded and field log in UTF-16 (little-endian with \\r\\n as PowerShell
    writes it; big-endian with \\n): the document of the same text in UTF-8, on both ways."""
    logs = [log for log in LOGS if b"\r" not in log.read_bytes() and _utf8(log)]
    assert len(logs) > 150
    want = _doc(_scan(logs, fast=True))
    for encoding, ends in (("utf-16-le", b"\r\n"), ("utf-16-be", b"\n")):
        copies = [_powershell(log, tmp_path / encoding, encoding, ends) for log in logs]
        for fast in (True, False):
            got = _doc(_scan(copies, fast), {tmp_path / encoding / r.name: r for r in ROOTS})
            assert got == want, (encoding, fast)


def _utf8(log: Path) -> bool:
    try:
        log.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_a_gzipped_or_piped_utf16_log_reads_too(tmp_path):
    log = CORPUS / "vllm" / "real-0.32.0-cpu" / "text-logoutputs.log"
    u16 = _powershell(log, tmp_path)
    want = _doc(_scan([_windows(log, tmp_path / "crlf")], fast=True), {tmp_path / "crlf" / "corpus": CORPUS})
    gz = tmp_path / "corpus" / "vllm" / "real-0.32.0-cpu" / "text-logoutputs.log.gz"
    gz.write_bytes(gzip.compress(u16.read_bytes()))
    got = _doc(_scan([gz], fast=True), {gz: log})
    assert got["traces"] == want["traces"] and got["findings"] == want["findings"] and len(want["traces"]) > 10
    r = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", "-"], input=u16.read_bytes(), capture_output=True, timeout=120)
    piped = json.loads(r.stdout)
    assert [t["id"] for t in piped["traces"]] == [t["id"] for t in want["traces"]]
    assert piped["files"][0]["format"] == "vllm"


def test_utf16_is_decoded_whatever_the_reads_cut_and_a_broken_end_is_replaced():
    text = "INFO 11-22 18:27:00 [a.py:1] 中文 ok 😀\r\n" * 50
    data = codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    for size in (1, 2, 3, 7, 4096):
        src = Utf16Source(io.BytesIO(data[2:]), "utf-16-le")
        assert b"".join(iter(lambda: src.read(size), b"")) == text.encode()
    src = Utf16Source(io.BytesIO(data[2:] + b"\x41"), "utf-16-le")  # an odd last byte: half a character
    assert src.read(-1) == text.encode() + "\ufffd".encode()


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_line(tmp_path):
    """Notepad and PowerShell's `Out-File -Encoding utf8` put one before the first line: that line
    (here a Received line) is read as what it is, on both ways."""
    log = tmp_path / "vllm.log"
    log.write_bytes(codecs.BOM_UTF8 + _requests(2, crlf=False))
    for fast in (True, False):
        assert [(t.max_tokens, t.http_status) for t in _scan([log], fast).traces] == [(1, 200), (2, 200)]


@pytest.mark.parametrize("kind", ["tgz", "tar", "zip"])
def test_a_bundle_of_logs_is_read_member_by_member_not_run_together(kind, tmp_path):
    """A support bundle (`tar czf logs.tgz /var/log/vllm/`, a zip made on Windows): read as one log,
    a tar's members ran together between binary headers (one source, requests of two files mixed)
    and a zip's were compressed noise. Each member is a source of its own (`diag.ingest.archive`,
    tests/test_archive.py), with the requests of that file alone."""
    import tarfile
    import zipfile

    logs = [CORPUS / "vllm" / "real-0.32.0-cpu" / "text.log", CORPUS / "vllm" / "real-0.32.0-cpu" / "text-logoutputs.log"]
    bundle = tmp_path / f"logs.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as z:
            for log in logs:
                z.write(log, log.name)
    else:
        with tarfile.open(bundle, "w:gz" if kind == "tgz" else "w") as t:
            for log in logs:
                t.add(log, log.name)
    r = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", str(bundle)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr == ""  # (the logs' own error findings)
    doc = json.loads(r.stdout)
    assert [f["path"] for f in doc["files"]] == [f"{bundle}:{log.name}" for log in logs]
    for log in logs:
        alone = scan(log)
        assert sorted(t["id"].split("@")[0] for t in doc["traces"] if t["source"] == f"{bundle}:{log.name}") == sorted(t["id"] for t in alone["traces"])


def test_a_follower_resumed_inside_a_multi_line_record_still_reads_unix_line_ends(tmp_path):
    """The daemon commits the start of a record still being assembled, and a restarted daemon reads
    it again from there. When the server had written only the first lines of that record (a
    traceback flushed in blocks), every line the new reader first sees ends in vLLM's \\r\\n: judged
    from them, the rest of the file was read as a Windows one, and its multi-line records fell
    apart into lines. Resumed, the reader judges line ends from the file's first bytes."""
    from diag.daemon import config
    from diag.ingest import follow

    def line(i: int, text: str) -> str:
        return f"{TS}[serving_chat.py:{i}] {text}"

    def record(i: int) -> list[str]:
        return [line(i, "Error in preprocessing prompt inputs\r\n"), line(i, "Traceback (most recent call last):\r\n"),
                line(i, f'  File "/x{i}.py", line 1, in f\r\n'), line(i, f"ValueError: bad things {i}\n")]

    first = [line(1, f"Added request chatcmpl-{i}.\n") for i in range(3)] + record(2)[:2]
    rest = record(2)[2:] + [line(3, "Added request chatcmpl-9.\n")] + record(4) + [line(5, "Added request chatcmpl-8.\n")]
    log = tmp_path / "vllm.log"
    log.write_bytes("".join(first).encode())

    def daemon(stored: list) -> tuple[follow.Follower, list]:
        seen: list = []

        def consume(r, lines, flush):
            for item in lines:
                seen.extend((ev.lineno, ev.text) for ev in r.parser.feed(item))
            if flush:
                seen.extend((ev.lineno, ev.text) for ev in r.parser.flush())

        cfg = config.Config(logs=[config.LogSpec(str(log))], state_dir=tmp_path / "state", from_beginning=True, use_inotify=False)
        f = follow.Follower(cfg, stored, consume=consume)
        f.discover(force=True)
        for r, lines in f.poll():
            consume(r, lines, False)
        return f, seen

    f, _ = daemon([])
    states = f.states()
    f.close()
    assert states[0].lineno == 3  # the record's first lines are read again after a restart
    g, seen = daemon(states)  # (restarted before the server wrote the rest of the record)
    with open(log, "ab") as fh:
        fh.write("".join(rest).encode())
    for r, lines in g.poll():
        for item in lines:
            seen.extend((ev.lineno, ev.text) for ev in r.parser.feed(item))
    for r in list(g.readers.values()):
        for ev in r.parser.flush():
            seen.append((ev.lineno, ev.text))
    g.close()
    errors = [text for _n, text in seen if "Error in preprocessing" in text]
    assert len(errors) == 2 and all("Traceback" in t and "ValueError: bad things" in t for t in errors), seen


def test_a_log_whose_every_newline_was_made_crlf_keeps_vllms_multi_line_records(tmp_path):
    """A byte-wise conversion (every \\n made \\r\\n: a script's text-mode write on Windows) leaves
    vLLM's own \\r before the line end (\\r\\r\\n): each recorded and field log that has such
    records reads the same as the log itself, on both ways. Taken as a line end alone, the
    continuation lines of a record were lines of their own: a client's request id with a newline
    in it (vLLM 0.6.4+ takes it from the body) and a pretty-printed JSON body (DEBUG) were read
    as the server's lines, and the canary text in them raised critical findings."""
    from conftest import CANARY, plant_canaries, scan, severe

    marked = [log for log in LOGS if b"\r\n" in log.read_bytes()]
    assert len(marked) >= 5
    copies = []
    for log in marked:
        root = CORPUS if log.is_relative_to(CORPUS) else FIELD
        out = tmp_path / root.name / log.relative_to(root)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(log.read_bytes().replace(b"\n", b"\r\n"))
        copies.append(out)
    want = _doc(_scan(marked, fast=True))
    for fast in (True, False):
        assert _doc(_scan(copies, fast), {tmp_path / r.name: r for r in ROOTS}) == want, "fast path" if fast else "full parser"
    c = plant_canaries(tmp_path / "canary")
    for planted, clean in zip(c.planted, c.clean):
        for p in (planted, clean):
            p.write_bytes(p.read_bytes().replace(b"\n", b"\r\n"))
        doc = scan(planted)
        assert CANARY not in json.dumps(doc), planted.name
        assert severe(doc) <= severe(scan(clean)), planted.name


@pytest.mark.parametrize("how", ["cut between the first line's \\r and \\n", "a byte at a time"])
def test_line_ends_are_judged_also_when_the_first_reads_cut_a_lines_cr_from_its_newline(how, tmp_path):
    """A follower reads what has been written (a writer that ends a line in two writes, a first
    line longer than a read): the first read may end in a line's \\r and the next start with its
    \\n. Judged from that read alone, its \\n had no \\r: a Windows file was read as a Unix one,
    and the busy second's requests vanished into one another again."""
    data = _requests(5, crlf=True)
    first = data.index(b"\n")
    chunks = [data[:first], data[first:]] if how.startswith("cut") else [data[i:i + 1] for i in range(len(data))]
    want = [(f"chatcmpl-{i:04x}", i + 1, 200) for i in range(5)]
    for fast in (True, False):
        pipe, parser, sp = Pipeline(rules.load()), SourceParser("vllm.log", 1.7e9), LineSplitter()
        src = FastSource(pipe, parser, sp)
        for c in chunks:
            if fast:
                src.feed(c)
            else:
                pipe.feed_line_batch(parser, list(sp.feed(c)))
        pipe.feed_line_batch(parser, list(sp.flush()), flush=True)
        pipe.finish()
        assert [(t.id, t.max_tokens, t.http_status) for t in pipe.traces] == want, ("fast" if fast else "lines")


def test_no_canary_reaches_the_rules_in_a_canary_corpus_whose_every_line_end_was_made_crlf(tmp_path):
    """`unix2dos` and PowerShell's `Get-Content | Set-Content` end every line in \\r\\n, vLLM's own \\r\\n
    included: its mark of a record going on is gone. A 0.6.4+ Received line whose client id ran into a
    newline, and a DEBUG pretty-printed JSON body, say themselves that their message goes on
    (`user_rest`): the lines after them are the user's, as they are in the file as written."""
    from conftest import plant_canaries, severe

    corpus = plant_canaries(tmp_path / "canary")
    for p in corpus.planted + corpus.clean:
        p.write_bytes(p.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    for fast in (True, False):
        planted, clean = _doc(_scan(corpus.planted, fast)), _doc(_scan(corpus.clean, fast))
        assert CANARY not in json.dumps(planted), fast
        assert severe(planted) <= severe(clean), severe(planted) - severe(clean)
        assert [t["id"] for t in planted["traces"]] == [t["id"] for t in clean["traces"]]
