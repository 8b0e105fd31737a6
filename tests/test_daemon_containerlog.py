"""The daemon following container runtimes' log files (`diag.ingest.containerfollow`): a real daemon
process, real files, the real store, and `diag scan --json` of the same file as the reference.

The files are written here as containerd/CRI-O and dockerd write them, from real vLLM 0.32 logs
(tests/data/corpus/vllm/real-0.32.0-cpu): each line becomes one record, `<RFC 3339 nano time>
<stream> F <line>` (CRI, kubelet's kuberuntime/logs format) or `{"log":"<line>\\n","stream":…,
"time":…}` (Docker's json-file driver), and a line longer than the runtimes' 16 KiB buffer is cut
into pieces (`P` on all but the last; no "\\n" at the end of the log of all but the last). That
wrapping is exactly what those runtimes write; the bytes are then appended in arbitrary writes, so
the daemon sees half records and a line's first pieces without the last.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path

import pytest

from conftest import CANARY, CANARY_TEXT, CORPUS, wait_for

from diag.ingest.containerlog import ContainerRecords
from diag.ingest.containerlog import ContainerLogSource
from diag.store import counters
from diag.store.db import Store

REAL = CORPUS / "vllm" / "real-0.32.0-cpu"
PIECE = 16 * 1024  # where both runtimes cut a long line


def _lines(*names: str) -> list[str]:
    return [ln for n in names for ln in (REAL / n).read_text().split("\n")[:-1]]


def _long_received(i: int) -> str:
    """A Received line whose prompt (the client's text: an error log pasted into it) is 40 KiB: three pieces."""
    prompt = (CANARY_TEXT + " ") * (40 * 1024 // (len(CANARY_TEXT) + 1))
    return (f"(APIServer pid=1) INFO 11-22 18:27:00 [logger.py:39] Received request chatcmpl-long{i}: prompt: {prompt!r}, "
            "params: SamplingParams(n=1, max_tokens=9), prompt_token_ids: None, lora_request: None.")


def wrap(lines: list[str], fmt: str, start: int = 0, stream=lambda i: "stdout") -> list[bytes]:
    """Each line as the runtime writes it: its records (a long line's pieces), one bytes each."""
    out = []
    for i, line in enumerate(lines, start):
        ts = f"2026-11-22T18:{27 + i // 6000:02d}:{(i // 100) % 60:02d}.{i:09d}Z"
        raw = line.encode("utf-8", "surrogateescape")
        parts = [raw[k:k + PIECE] for k in range(0, len(raw), PIECE)] or [b""]
        for k, piece in enumerate(parts):
            last = k == len(parts) - 1
            if fmt == "cri":
                out.append(f"{ts} {stream(i)} {'F' if last else 'P'} ".encode() + piece + b"\n")
            else:
                log = piece.decode("utf-8", "replace") + ("\n" if last else "")
                out.append(json.dumps({"log": log, "stream": stream(i), "time": ts}).encode() + b"\n")
    return out


def content(fmt: str) -> bytes:
    """Real logs' records with what a runtime's file also holds: long lines in pieces (one past the
    1 MiB line cap), a line that is not a record (invalid UTF-8, broken JSON)."""
    lines = _lines("text.log", "oom-kv-no-blocks.log")
    recs = wrap(lines[:60], fmt)
    recs += wrap([_long_received(1)], fmt, 60)
    recs += [b"garbage \xff\xfe not a record\n", b'{"log": "broken\n']
    recs += wrap(lines[60:200] + ["(APIServer pid=1) INFO 11-22 18:27:00 [x.py:1] " + "y" * (1100 * 1024)], fmt, 61)
    recs += wrap(lines[200:] + _lines("vl.log"), fmt, 400)
    return b"".join(recs)


def start(state: Path, log: Path) -> tuple[subprocess.Popen, Path]:
    err = state.parent / f"daemon-{time.time_ns()}.err"
    cfg = state.parent / "diag.toml"
    # the logs' times are days old: a request in flight at a turn of the daemon is not "stuck" (scan knows no such finding)
    cfg.write_text("[daemon]\nstuck_after = 100000000\n")
    p = subprocess.Popen([sys.executable, "-m", "diag", "daemon", "--config", str(cfg), "--state-dir", str(state), "--log", str(log),
                          "--no-web", "--from-beginning"], stderr=open(err, "w"), stdout=subprocess.DEVNULL)
    return p, err


def stop(p: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    p.send_signal(sig)
    p.wait(timeout=30)


def status(state: Path) -> dict:
    r = subprocess.run([sys.executable, "-m", "diag", "status", "--json", "--state-dir", str(state)], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else {"sources": []}


def caught_up(state: Path, log: Path) -> bool:
    size = log.stat().st_size
    return any(s["offset"] == size for s in status(state)["sources"])  # (one source: the followed name, the file it reads now)


def scan(*paths: Path) -> dict:
    r = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", *map(str, paths)], capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def _epoch(iso: str | None) -> float | None:
    return None if iso is None else datetime.fromisoformat(iso).timestamp()


def stored(state: Path) -> tuple[dict, list, dict]:
    """(traces by id, findings as (rule, line), cumulative counters: requests and findings by rule)."""
    db_path = state / "diag.sqlite3"
    with closing(Store(db_path, readonly=True)) as s:
        traces = {t: s.trace(t) for t in s.trace_ids()}
        found = sorted((f["rule"], f["line"]) for f in s.findings())
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        counts = {"requests": sum(v for _, v in counters.read(db, "requests"))}
        for lab, v in counters.read(db, "findings"):
            counts[lab["rule"]] = counts.get(lab["rule"], 0) + v
    return traces, found, counts


def assert_as_scanned(state: Path, doc: dict, lines: bool = True) -> None:
    """The store holds what `diag scan --json` of the same stream finds, each line applied once:
    trace ids, statuses, times and line numbers, findings and where they are, the counters."""
    traces, found, counts = stored(state)
    want = {t["id"]: t for t in doc["traces"]}
    assert sorted(traces) == sorted(want) and len(want) > 15
    for tid, t in want.items():
        got = traces[tid]
        assert got["status"] == t["status"], tid
        assert got.get("received_at") == _epoch(t["received_at"]), tid
        assert got.get("http_status") == t["http_status"], tid
        if lines:
            assert [(e["kind"], e["line"]) for e in got["timeline"]] == [(e["kind"], e["line"]) for e in t["timeline"]], tid
    want_counts = {"requests": len(want)}
    for f in doc["findings"]:
        want_counts[f["rule"]] = f["count"]
    assert counts == want_counts  # none lost, none read twice, over every run
    if lines:
        assert found == sorted((f["rule"], loc["line"]) for f in doc["findings"] for loc in f["locations"])
    assert CANARY not in json.dumps([traces, found])


def no_tracebacks(*errs: Path) -> None:
    for e in errs:
        assert "Traceback" not in e.read_text(), e.read_text()[-3000:]


def _interleaved_long(fmt: str, lines: list[str], at: int) -> list[bytes]:
    """A long line's pieces (stdout) with `lines` of the other stream after its first piece: the
    runtime copies each stream on its own, so their records interleave."""
    block = wrap([_long_received(at)], fmt, at)
    return block[:1] + wrap(lines, fmt, at + 1, stream=lambda i: "stderr") + block[1:]


@pytest.mark.parametrize("fmt", ["cri", "docker-json"])
def test_the_raw_offset_committed_for_a_decoded_line_resumes_with_exactly_the_lines_after_it(fmt):
    """Whatever a read cut (a record, a line's pieces), the raw offset committed for a decoded line's
    end resumes with exactly the lines after it, as the file read whole decodes them; where another
    stream's lines came between a long line's pieces, with the lines from the last point where no
    piece was held (a few read again, none lost)."""
    lines = _lines("text.log")[:40]
    data = b"".join(wrap(lines[:20], fmt) + wrap([_long_received(1)], fmt, 20) + [b"not a record \xff\n"]
                    + wrap(lines[20:30], fmt, 21) + _interleaved_long(fmt, lines[30:33], 31) + wrap(lines[33:], fmt, 35))
    whole = ContainerLogSource(io.BytesIO(data), fmt).read(-1)
    rng = random.Random(7)
    cuts = sorted(rng.sample(range(1, len(data)), 80))
    dec = ContainerRecords(fmt, 0, 0)
    got, prev, asked, again = b"", 0, 0, 0
    for cut in cuts + [len(data)]:
        got += dec.feed(data[prev:cut])
        prev = cut
        for end in [k + 1 for k in range(asked, len(got)) if got[k] == 10]:
            asked = end
            lineno = got[:end].count(b"\n")
            raw, at = dec.raw_at(end, lineno)
            rest = ContainerRecords(fmt, raw, at).feed(data[raw:])
            if rest == whole[end:]:
                assert at == lineno
            else:  # inside the interleaved block: from its start
                assert rest.endswith(whole[end:]) and at == lineno - rest[:len(rest) - len(whole) + end].count(b"\n")
                again += 1
    assert got == whole and 0 < again <= 3


@pytest.mark.parametrize("fmt", ["cri", "docker-json"])
def test_a_file_written_in_pieces_through_a_kill9_and_a_sigterm_is_stored_as_scan_reads_it(fmt, tmp_path):
    state, logs = tmp_path / "state", tmp_path / "logs"
    state.mkdir()
    logs.mkdir()
    log = logs / ("0.log" if fmt == "cri" else "abc-json.log")
    data = content(fmt)
    rng = random.Random(fmt)
    cuts = rng.sample(range(1, len(data)), 30)
    # killed (-9) while a long Received line's first pieces are read and its last not yet written;
    # stopped (SIGTERM) just after a Received record, which the parser holds until the next line comes
    kill_at = data.index(b"chatcmpl-long1") + 20 * 1024
    received = data.index(b"Received request chatcmpl-", data.index(b"y" * 1000))
    term_at = data.index(b"\n", received) + 1
    long_at = data.rindex(b"\n", 0, kill_at - 20 * 1024)
    # the write before the kill: whole lines, the first piece and half the second (the commit after
    # it is at the boundary before the pieces), then a write that ends inside a record
    cuts = [c for c in cuts if not long_at - 3000 < c < kill_at]
    cuts = sorted(set(cuts + [kill_at, term_at, received + 100]))
    d, err = start(state, log)
    errs = [err]
    with open(log, "ab") as f:
        for a, b in zip([0, *cuts], [*cuts, len(data)]):
            f.write(data[a:b])
            f.flush()
            if b in (kill_at, term_at):
                wait_for(lambda: status(state)["sources"], 10, "a commit")
                time.sleep(0.4 if b == kill_at else 0.1)  # (record_quiet is 0.25 s)
                stop(d, signal.SIGKILL if b == kill_at else signal.SIGTERM)
                d, err = start(state, log)
                errs.append(err)
            else:
                time.sleep(0.05 if b % 3 else 0.3)  # (less than flush_after: a half record waits for its end)
    wait_for(lambda: caught_up(state, log), 30, "the daemon to read the whole file")
    stop(d)
    no_tracebacks(*errs)
    assert_as_scanned(state, scan(log))


@pytest.mark.parametrize("fmt, linked", [("cri", False), ("cri", True), ("docker-json", False)], ids=["cri", "cri-symlink", "docker-json"])
def test_rotation_as_the_runtime_does_it_while_the_daemon_runs_and_while_it_is_killed(fmt, linked, tmp_path):
    """kubelet renames `0.log` to `0.log.<time>`, starts a new `0.log` and later gzips the old one;
    dockerd renames `<id>-json.log` to `<id>-json.log.1` (and `.1` to `.2`). The runtime's last
    writes may still go to the renamed file. Rotated once while the daemon runs, once while it is
    killed (kill -9), the stream is stored once, as scan reads it whole. `linked`: the daemon
    follows kubelet's `/var/log/containers/<pod>_<ns>_<container>-<id>.log`, a symlink to the pod's `0.log`."""
    state, logs = tmp_path / "state", tmp_path / "pods" / "ns_vllm-0_uid" / "vllm"
    state.mkdir()
    logs.mkdir(parents=True)
    lines = _lines("text.log", "oom-kv-no-blocks.log", "vl.log")
    parts = [wrap(lines[:100], fmt), wrap(lines[100:110], fmt, 100), wrap(lines[110:150], fmt, 110),
             _interleaved_long(fmt, lines[150:153], 150) + wrap(lines[153:300], fmt, 154),
             wrap(lines[300:400], fmt, 300), wrap(lines[400:], fmt, 400)]
    log = logs / ("0.log" if fmt == "cri" else "abc-json.log")
    old1 = logs / ("0.log.20261122-182700" if fmt == "cri" else "abc-json.log.1")
    old2 = logs / ("0.log.20261122-183700" if fmt == "cri" else "abc-json.log.1")
    followed = log
    if linked:
        (tmp_path / "containers").mkdir()
        followed = tmp_path / "containers" / "vllm-0_ns_vllm-0123abcd.log"
        followed.symlink_to(log)
    d, err = start(state, followed)
    errs = [err]
    log.write_bytes(b"".join(parts[0]))
    wait_for(lambda: caught_up(state, log), 30, "the first part")
    log.rename(old1)
    with open(old1, "ab") as f:
        f.write(b"".join(parts[1]))  # still written to the renamed file
    log.write_bytes(b"".join(parts[2]))
    wait_for(lambda: caught_up(state, log), 30, "the new file")
    stop(d, signal.SIGKILL)
    with open(log, "ab") as f:
        f.write(b"".join(parts[3]))  # a long line in pieces, the other stream's lines between
    if fmt == "docker-json":
        old1.rename(old1.with_name("abc-json.log.2"))
    log.rename(old2)
    log.write_bytes(b"".join(parts[4]))
    if fmt == "cri":
        for o in (old1, old2):  # kubelet compresses the rotated files: the one not finished is read from its archive
            o.with_name(o.name + ".gz").write_bytes(gzip.compress(o.read_bytes()))
            o.unlink()
    d, err = start(state, followed)
    errs.append(err)
    with open(log, "ab") as f:
        f.write(b"".join(parts[5]))
    wait_for(lambda: caught_up(state, log), 30, "the rest")
    stop(d)
    no_tracebacks(*errs)
    whole = tmp_path / ("whole.log" if fmt == "cri" else "whole-json.log")  # the stream, one file: scan's reference
    whole.write_bytes(b"".join(b"".join(p) for p in parts))
    assert_as_scanned(state, scan(whole), lines=False)  # (line numbers are each file's own)
    srcs = status(state)["sources"]
    assert [(s["rotations"], s["format"]) for s in srcs] == [(2, "vllm")], srcs


def test_a_docker_json_file_rotated_by_logrotate_copytruncate_is_read_once(tmp_path):
    """logrotate's `copytruncate` over `/var/lib/docker/containers/*/*.log` (what hosts did before
    json-file's own max-size): the lines not read yet are decoded from the copy, then the file from 0."""
    state, logs = tmp_path / "state", tmp_path / "logs"
    state.mkdir()
    logs.mkdir()
    lines = _lines("text.log", "oom-kv-no-blocks.log", "vl.log")
    parts = [wrap(lines[:150], "docker-json"), _interleaved_long("docker-json", lines[150:153], 150) + wrap(lines[153:300], "docker-json", 154),
             wrap(lines[300:], "docker-json", 300)]
    log = logs / "abc-json.log"
    d, err = start(state, log)
    log.write_bytes(b"".join(parts[0]))
    wait_for(lambda: caught_up(state, log), 30, "the first part")
    with open(log, "ab") as f:
        f.write(b"".join(parts[1]))
    (logs / "abc-json.log.1").write_bytes(log.read_bytes())  # copy, then truncate: what the daemon had not read is in the copy
    os.truncate(log, 0)
    with open(log, "ab") as f:
        f.write(b"".join(parts[2]))
    wait_for(lambda: caught_up(state, log), 30, "the file after its truncation")
    stop(d)
    no_tracebacks(err)
    whole = tmp_path / "whole-json.log"
    whole.write_bytes(b"".join(b"".join(p) for p in parts))
    assert_as_scanned(state, scan(whole), lines=False)


@pytest.mark.parametrize("fmt", ["plain", "cri"])
def test_a_new_files_unterminated_first_line_waits_and_is_taken_as_it_is_when_flushed(fmt, tmp_path):
    """Whether a file is a runtime's is decided from its first line: until that line is complete its
    bytes wait, and the writer going quiet (`Follower.idle_flush`) takes them as they are, as before."""
    from diag.ingest.filereader import FileReader
    from diag.ingest.reader import LineSplitter
    from diag.parsing.source import SourceParser
    from diag.store.db import SourceState

    line = "(APIServer pid=1) INFO 11-22 18:27:00 [x.py:1] Loading weights"
    data = (wrap([line], "cri")[0] if fmt == "cri" else line.encode() + b"\n")[:-1]
    log = tmp_path / "0.log"
    log.write_bytes(b"")
    with open(log, "rb", buffering=0) as f:
        r = FileReader(SourceState("1:2", str(log)), f, LineSplitter(), SourceParser(str(log)))
        log.write_bytes(data)
        assert r.read() == [] and r.holding
        (got,) = r.flush()
        assert got.text == (("2026-11-22T18:27:00.000000000Z " if fmt == "cri" else "") + line) and not r.holding
        r.parser.feed(got)
        r.parser.flush()
        assert r.sync_state().offset == len(data)  # (a raw offset, through the decoder)


@pytest.mark.parametrize("fmt", ["plain", "cri"])
def test_copytruncate_while_a_new_files_first_line_is_incomplete_keeps_its_start(fmt, tmp_path):
    """The bytes of a first line read before it was complete (kept to decide what the file is) go
    on with the copy's bytes after them: the line is whole, once."""
    from diag.daemon import config
    from diag.ingest import follow

    line = "(APIServer pid=1) INFO 11-22 18:27:00 [x.py:1] Loading weights"
    more = "(APIServer pid=1) INFO 11-22 18:27:01 [x.py:1] Loaded"
    data = b"".join(wrap([line, more], "cri")) if fmt == "cri" else f"{line}\n{more}\n".encode()
    log = tmp_path / "0.log"
    log.write_bytes(data[:50])  # (a runtime writes a record at once: a read may still see part of it)
    cfg = config.Config(logs=[config.LogSpec(str(log))], state_dir=tmp_path / "state", from_beginning=True, use_inotify=False)
    got: list = []
    f = follow.Follower(cfg, [], consume=lambda r, lines, flush: got.extend(lines))
    got += [ln for r in f.discover(force=True) for ln in r.read()]
    assert got == []
    with open(log, "ab") as w:
        w.write(data[50:])
    (tmp_path / "0.log.1").write_bytes(log.read_bytes())
    os.truncate(log, 0)
    for _r, lines in f.poll():
        got += lines
    stamp = "2026-11-22T18:27:00.00000000{}Z " if fmt == "cri" else ""
    assert [ln.text for ln in got] == [stamp.format(0) + line, stamp.format(1) + more]
    f.close()
