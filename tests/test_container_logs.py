"""Container runtimes' log files (`diag.ingest.containerlog`): Kubernetes' CRI format and Docker's
json-file driver read as the server's own lines, as `docker logs --timestamps` prints them.

The files are built here from the recorded corpus in each runtime's format (kubelet's
kuberuntime/logs parser and Docker's jsonfilelog driver define them: `<RFC 3339 nano time>
<stream> <P|F>[:tags] <line>`; `{"log":"<line>\\n","stream":…,"time":…}`), including a line longer
than the runtimes' 16 KiB, which they cut into pieces.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest

from conftest import CANARY, CANARY_TEXT, CORPUS

from diag.analysis.rules import ruleset as rules
from diag.ingest.containerlog import ContainerLogSource, container_format
from diag.pipeline import Pipeline
from diag.report.document import to_json

LOGS = [p for p in sorted(CORPUS.rglob("*.log")) if b"\r" not in p.read_bytes()]
PIECE = 16 * 1024  # where both runtimes cut a long line


def _times(n: int) -> list[str]:
    return [f"2026-11-22T18:{27 + i // 6000:02d}:{(i // 100) % 60:02d}.{i:09d}Z" for i in range(n)]


def _pieces(line: str) -> list[str]:
    return [line[i:i + PIECE] for i in range(0, len(line), PIECE)] or [""]


def as_cri(text: str, tags: str = "") -> bytes:
    out = []
    lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    for i, (ts, line) in enumerate(zip(_times(len(lines)), lines)):
        parts = _pieces(line)
        for k, piece in enumerate(parts):
            flag = "F" if k == len(parts) - 1 else "P"
            out.append(f"{ts} {'stderr' if i % 2 else 'stdout'} {flag}{tags} {piece}\n")  # a line's pieces: one stream
    return "".join(out).encode()


def as_docker_json(text: str) -> bytes:
    out = []
    lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    for ts, line in zip(_times(len(lines)), lines):
        parts = _pieces(line)
        for k, piece in enumerate(parts):
            log = piece + ("\n" if k == len(parts) - 1 else "")
            out.append(json.dumps({"log": log, "stream": "stdout", "time": ts}) + "\n")
    return "".join(out).encode()


def as_docker_timestamps(text: str) -> bytes:
    """What `docker logs --timestamps` prints (and `kubectl logs --timestamps`): the reference."""
    lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    return "".join(f"{ts} {line}\n" for ts, line in zip(_times(len(lines)), lines)).encode()


def _doc(path: Path, fast: bool = True) -> dict:
    pipe = Pipeline(rules.load(), fast=fast)
    pipe.scan_path(str(path))
    pipe.finish()
    d = json.loads(json.dumps(to_json(pipe)).replace(str(path), "LOG"))
    d["stats"].pop("seconds")
    return d


@pytest.mark.parametrize("log", LOGS, ids=lambda p: str(p.relative_to(CORPUS)))
def test_a_container_runtimes_file_reads_as_docker_logs_timestamps_prints_it(log, tmp_path):
    text = log.read_bytes().decode("utf-8", "replace")
    ref = tmp_path / "ref.log"
    ref.write_bytes(as_docker_timestamps(text))
    want = _doc(ref)
    assert want["files"][0]["format"] != "unknown" or not want["traces"]
    for name, data in (("cri.log", as_cri(text)), ("cri-tags.log", as_cri(text, ":x")), ("json.log", as_docker_json(text))):
        f = tmp_path / name
        f.write_bytes(data)
        assert _doc(f) == want, name


def _long_request() -> tuple[str, str]:
    """A Received line with a 40 KiB prompt (the client's text: an error log pasted into it), its
    Added and access lines: (the prompt, the log text)."""
    prompt = (CANARY_TEXT + " ") * (40 * 1024 // (len(CANARY_TEXT) + 1))
    text = ("(APIServer pid=1) INFO 11-22 18:27:00 [logger.py:39] Received request chatcmpl-1: prompt: "
            f"{prompt!r}, params: SamplingParams(n=1, max_tokens=9), prompt_token_ids: None, lora_request: None.\n"
            "(APIServer pid=1) INFO 11-22 18:27:00 [engine.py:275] Added request chatcmpl-1.\n"
            'INFO:     127.0.0.1:5000 - "POST /v1/chat/completions HTTP/1.1" 200 OK\n')
    return prompt, text


def _one_masked_request(f: Path, prompt_chars: int, lines: int) -> None:
    """On both ways: the one request, its prompt measured, nothing found, the canary nowhere."""
    for fast in (True, False):
        doc = _doc(f, fast)
        (t,) = doc["traces"]
        assert (t["max_tokens"], t["prompt_chars"], t["http_status"]) == (9, prompt_chars, 200)
        assert not doc["findings"] and CANARY not in json.dumps(doc) and doc["stats"]["lines"] == lines


def test_a_long_line_cut_into_pieces_is_one_line_again_and_its_prompt_stays_masked(tmp_path):
    """A Received line with a 40 KiB prompt (the client's text: an error log pasted into it) is cut
    into three pieces by the runtime: read as one line, its prompt is one masked span, counted,
    and none of it reaches the rules or the output."""
    prompt, text = _long_request()
    for name, data in (("cri.log", as_cri(text)), ("json.log", as_docker_json(text))):
        assert data.count(b"\n") >= 5  # the long line is in (three) pieces
        f = tmp_path / name
        f.write_bytes(data)
        _one_masked_request(f, len(prompt), lines=3)


def test_what_is_not_the_runtimes_record_passes_as_it_is_and_a_last_piece_never_written_is_kept(tmp_path):
    data = (b"2026-11-22T18:27:00.000000001Z stdout F (APIServer pid=1) INFO 11-22 18:27:00 [a.py:1] one\n"
            b"garbage \xff\xfe line\n"
            b"2026-11-22T18:27:00.000000002Z stdout P (APIServer pid=1) INFO 11-22 18:27:00 [a.py:1] tw\n")
    src = ContainerLogSource(io.BytesIO(data), container_format(data))
    assert src.read(-1) == (b"2026-11-22T18:27:00.000000001Z (APIServer pid=1) INFO 11-22 18:27:00 [a.py:1] one\n"
                            b"garbage \xff\xfe line\n"
                            b"2026-11-22T18:27:00.000000002Z (APIServer pid=1) INFO 11-22 18:27:00 [a.py:1] tw\n")
    nested = b"[" * 100_000 + b"\n"  # a JSON parser's recursion limit: a line like any other
    odd = [b'{"log":"one\\n","time":"2026-11-22T18:27:00Z"}\n', nested, b'{"log":7}\n', b'["log"]\n', b'{"log":"x\\n","time":5}\n']
    src = ContainerLogSource(io.BytesIO(b"".join(odd)), "docker-json")
    assert src.read(-1) == b"2026-11-22T18:27:00Z one\n" + b"".join(odd[1:])
    # read in any sizes, the same bytes
    whole = as_cri((CORPUS / "vllm" / "real-0.32.0-cpu" / "text-logoutputs.log").read_text())
    want = ContainerLogSource(io.BytesIO(whole), "cri").read(-1)
    for size in (1, 5, 4096):
        src = ContainerLogSource(io.BytesIO(whole), "cri")
        assert b"".join(iter(lambda: src.read(size), b"")) == want


@pytest.mark.parametrize("head, want", [
    (b'2026-11-22T18:27:00.123456789Z stdout F hello\n', "cri"),
    (b'2026-11-22T18:27:00.123456789+08:00 stderr P:x hello', "cri"),
    (b'{"log":"hello\\n","stream":"stdout","time":"2026-11-22T18:27:00.1Z"}\n', "docker-json"),
    (b'2026-11-22T18:27:00.123456789Z (APIServer pid=1) INFO x\n', None),  # docker logs --timestamps: the wrappers' part
    (b'{"level":"info","msg":"x"}\n', None), (b"", None),
])
def test_a_runtimes_file_is_known_by_its_first_line(head, want):
    assert container_format(head) == want


def test_a_kubelet_rotated_and_compressed_container_log_reads_too(tmp_path):
    """kubelet compresses rotated container logs (`0.log.20261122-182700.gz`)."""
    text = (CORPUS / "vllm" / "real-0.32.0-cpu" / "text-logoutputs.log").read_text()
    ref, gz = tmp_path / "ref.log", tmp_path / "0.log.20261122-182700.gz"
    ref.write_bytes(as_docker_timestamps(text))
    gz.write_bytes(gzip.compress(as_cri(text)))
    want, got = _doc(ref), _doc(gz)
    assert got["traces"] == want["traces"] and got["findings"] == want["findings"] and len(want["traces"]) > 5


@pytest.mark.parametrize("kind", ["cri", "docker-json", "utf-16", "plain"])
def test_the_daemon_decodes_a_runtimes_file_and_says_in_one_line_when_it_follows_utf16(kind, tmp_path, caplog):
    """The daemon follows a server's log as written, and a runtime's file as the server's lines it
    holds (`diag.ingest.containerfollow`: the bytes it hands on are what scan reads); given UTF-16
    text it reads it as it is and would find nothing, so it says what the file is and what to do, once."""
    import logging

    from diag.ingest.filereader import FileReader
    from diag.ingest.reader import LineSplitter
    from diag.parsing.source import SourceParser
    from diag.store.db import SourceState

    text = (CORPUS / "vllm" / "real-0.32.0-cpu" / "text-logoutputs.log").read_text()
    data = {"cri": as_cri(text), "docker-json": as_docker_json(text), "utf-16": "\ufeff".encode("utf-16-le") + text.encode("utf-16-le"),
            "plain": text.encode()}[kind]
    log = tmp_path / "vllm.log"
    log.write_bytes(data)
    handed = []
    with open(log, "rb") as f, caplog.at_level(logging.WARNING, logger="diag"):
        r = FileReader(SourceState("1:2", str(log)), f, LineSplitter(), SourceParser(str(log)), raw=True)
        while chunk := r.read(4096):
            handed += chunk
    said = [rec.getMessage() for rec in caplog.records if "vllm.log" in rec.getMessage()]
    if kind != "utf-16":
        assert said == []
        want = ContainerLogSource(io.BytesIO(data), kind).read(-1) if kind != "plain" else data
        assert b"".join(handed) == want
    else:
        assert len(said) == 1 and "diag scan" in said[0] and "\n" not in said[0] and "UTF-16" in said[0]


def _interleaved(text: str, fmt: str) -> bytes:
    """`text`'s lines in the runtime's format with each long line's pieces on stdout, and between its
    first two pieces a line of the other stream (uvicorn writes its access lines to stderr, vLLM its
    own to stdout; the runtime copies each stream on its own, so their records interleave)."""
    other = 'INFO:     127.0.0.1:6000 - "GET /health HTTP/1.1" 200 OK'
    out = []
    for ts, line in zip(_times(len(text.splitlines())), text.splitlines()):
        parts = _pieces(line)
        for k, piece in enumerate(parts):
            last = k == len(parts) - 1
            if fmt == "cri":
                out.append(f"{ts} stdout {'F' if last else 'P'} {piece}\n")
            else:
                out.append(json.dumps({"log": piece + ("\n" if last else ""), "stream": "stdout", "time": ts}) + "\n")
            if k == 0 and not last:
                out.append(f"{ts} stderr F {other}\n" if fmt == "cri" else
                           json.dumps({"log": other + "\n", "stream": "stderr", "time": ts}) + "\n")
    return "".join(out).encode()


@pytest.mark.parametrize("fmt", ["cri", "docker-json"])
def test_a_long_lines_pieces_are_joined_per_stream_when_the_other_streams_lines_come_between(fmt, tmp_path):
    """A long Received line's pieces on stdout with an access line on stderr between two of them:
    the pieces are still one line (its prompt one masked span that raises nothing) and the
    stderr line one of its own. Joined in the order they came, the stderr line ended the prompt's
    first piece and the rest of the prompt was a line of its own: the client's text read as the
    server's (CUDA out of memory, engine dead: critical findings)."""
    prompt, text = _long_request()
    f = tmp_path / "vllm.log"
    f.write_bytes(_interleaved(text, fmt))
    assert container_format(f.read_bytes()) == fmt
    _one_masked_request(f, len(prompt), lines=4)


def test_a_docker_json_line_nested_past_pythons_recursion_limit_passes_as_it_is(tmp_path):
    """A line of a json-file log that is no record of the driver's (a damaged file, something else
    appended) is passed on as it is, also when it nests deeper than json can decode: a
    RecursionError took `diag scan` down."""
    good = b'{"log":"(APIServer pid=1) INFO 11-22 18:27:00 [a.py:1] one\\n","stream":"stdout","time":"2026-11-22T18:27:00.1Z"}\n'
    deep = b"[" * 100_000 + b"\n" + b'{"log":' * 100_000 + b"\n"
    f = tmp_path / "vllm.log"
    f.write_bytes(good + deep + good.replace(b"one", b"two"))
    src = ContainerLogSource(io.BytesIO(f.read_bytes()), "docker-json")
    out = src.read(-1)
    assert out.count(b"\n") == 4 and out.startswith(b"2026-11-22T18:27:00.1Z (APIServer") and out.endswith(b"two\n")
    assert b"[" * 100_000 + b"\n" in out
    doc = _doc(f)
    assert doc["stats"]["lines"] == 4 and not doc["files"][0].get("error")


_TIMES = r"""
import datetime, json, random, sys
from diag.parsing.wrappers import rfc3339
r = random.Random(7)
bad = []
for _ in range(20000):
    sec = f"{r.randint(1990, 2090):04d}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}"
    frac = "".join(r.choice("0123456789") for _ in range(r.randint(0, 9)))
    zone = r.choice(["", "Z", "+08:00", "-0530", "+0000"])
    us = int(frac[:6].ljust(6, "0")) if frac else 0
    want = datetime.datetime.fromisoformat(sec).replace(microsecond=us)
    if zone:
        sign = -1 if zone[0] == "-" else 1
        off = datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[-2:])) if zone != "Z" else datetime.timedelta(0)
        want = want.replace(tzinfo=datetime.timezone(sign * off))
    s = sec + ("." + frac if frac else "") + zone
    if rfc3339(s) != want.timestamp():
        bad.append(s)
print(json.dumps(bad[:5]))
"""


@pytest.mark.parametrize("tz", ["Asia/Shanghai", "America/New_York", "UTC"])
def test_a_runtimes_time_is_the_instant_it_names_whatever_the_servers_zone(tz, tmp_path):
    """Docker and containerd write UTC (`…Z`) or an offset; a server in Beijing read them as local
    time, 8 hours off, and its access lines (no time of their own) landed hours away from the vLLM
    lines around them. Each time is the instant `datetime` says it is, to the microsecond, whatever
    TZ the scan runs under; without a zone it is local time, as datetime takes it."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TZ": tz}
    r = subprocess.run([sys.executable, "-c", _TIMES], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
    # end to end: the access line of a request in a CRI log gets the runtime's instant
    lines = (CORPUS / "vllm" / "real-0.32.0-cpu" / "text.log").read_bytes().split(b"\n")[107:110]
    assert b"Received request" in lines[0] and b"POST /v1/chat/completions" in lines[2]
    cri = tmp_path / "0.log"
    cri.write_bytes(b"".join(b"2026-11-22T18:27:4%d.250000000Z stdout F %s\n" % (i, ln) for i, ln in enumerate(lines)))
    r = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", str(cri)], capture_output=True, text=True, env=env, timeout=120)
    (t,) = json.loads(r.stdout)["traces"]
    access = [e for e in t["timeline"] if e["kind"] == "http.access"]
    import datetime

    want = datetime.datetime(2026, 11, 22, 18, 27, 42, 250000, tzinfo=datetime.timezone.utc)
    assert [datetime.datetime.fromisoformat(e["time"]) for e in access] == [want], t["timeline"]
