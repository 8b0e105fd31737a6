"""Traces keep their identity (ids unique per source and server run) and their truth (no false
`in_flight`), and finding counts include Ray's de-duplicated repeats."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from conftest import CORPUS, LLAMA, VLLM, findings, scan, statuses, traces

from diag.analysis.rules import ruleset as rules
from diag.parsing.source import SourceParser
from diag.pipeline import Pipeline, SourceResult
from diag.ingest.reader import iter_text_lines


def _twice(tmp_path, src, name):
    """The same server log written by two runs of the server, one after the other."""
    p = tmp_path / name
    text = src.read_text()
    p.write_text(text + text)
    return p


def test_llamacpp_and_lmdeploy_ids_are_unique_per_server_run(tmp_path):
    for src in (LLAMA / "text.log", CORPUS / "lmdeploy" / "synthetic-0.16.log"):
        once = [t["id"] for t in scan(src)["traces"]]
        twice = [t["id"] for t in scan(_twice(tmp_path, src, src.name))["traces"]]
        assert len(twice) == len(set(twice)) == 2 * len(once), src
        assert twice[: len(once)] == once  # the first run keeps the ids the server wrote
        assert twice[len(once):] == [f"{i}#2" for i in once]


def _many_tasks_then_restart(tmp_path, first: int, second: int):
    """A llama-server log: `first` requests, a restart (its startup lines), `second` requests.
    More requests than the assembler keeps in its window of recent traces (512)."""
    lines = (LLAMA / "text.log").read_text().splitlines()
    start = lines[:9]  # llama_server: initializing … up to the first task
    block = lines[9:15]  # one request: launch, timings, release (task 0)

    def run(n):
        out = list(start)
        for i in range(n):
            out += [ln.replace("| task 0 |", f"| task {i} |") for ln in block]
        return out

    p = tmp_path / "llama-restarted.log"
    p.write_text("\n".join(run(first) + run(second)) + "\n")
    return p


def test_a_restart_after_many_requests_keeps_every_trace(tmp_path):
    """600 requests, then a restart and 3 more: 603 traces (the window of recent traces once hid the reuse)."""
    doc = scan(_many_tasks_then_restart(tmp_path, 600, 3))
    ids = [t["id"] for t in doc["traces"]]
    assert len(ids) == len(set(ids)) == 603
    assert {"task-0", "task-599", "task-0#2", "task-2#2"} <= set(ids)


def test_ids_are_unique_per_source():
    doc = scan(LLAMA / "text.log", LLAMA / "verbose.log")
    ids = [t["id"] for t in doc["traces"]]
    assert len(ids) == len(set(ids))
    assert "task-0" in ids and "task-0@verbose" in ids


def test_the_store_keeps_every_run_of_a_restarted_server(tmp_path):
    log = _many_tasks_then_restart(tmp_path, 600, 3)
    expected = 603
    state = tmp_path / "state"
    state.mkdir()
    d = subprocess.Popen([sys.executable, "-m", "diag", "daemon", "--from-beginning", "--state-dir", str(state), "--log", str(log)],
                         stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            r = subprocess.run([sys.executable, "-m", "diag", "status", "--json", "--state-dir", str(state)], capture_output=True, text=True)
            if r.returncode == 0 and json.loads(r.stdout)["traces"] >= expected:
                break
            time.sleep(0.3)
        time.sleep(2.5)
    finally:
        d.send_signal(signal.SIGTERM)
        assert d.wait(timeout=30) == 0
    r = subprocess.run([sys.executable, "-m", "diag", "status", "--json", "--state-dir", str(state)], capture_output=True, text=True)
    assert json.loads(r.stdout)["traces"] == expected


def _without_access_lines(tmp_path):
    p = tmp_path / "vllm-0.32-no-access.log"
    p.write_text("".join(ln for ln in (VLLM / "text.log").read_text().splitlines(True) if '"POST /v1/' not in ln and '"GET /v1/' not in ln))
    return p


def test_vllm_without_finish_or_access_lines_is_unknown_not_in_flight(tmp_path):
    with_access = scan(VLLM / "text.log")
    assert statuses(with_access) == {"ok": 10, "aborted": 2}
    doc = scan(_without_access_lines(tmp_path))
    assert statuses(doc) == {"unknown": 10, "aborted": 2}
    assert "request-never-completed" not in findings(doc)


def test_the_daemon_raises_no_stuck_request_where_the_server_logs_no_ends(tmp_path):
    """The daemon's stuck check, driven through the pipeline with a clock far past stuck_after."""
    text = _without_access_lines(tmp_path).read_text()
    lines = [ln for ln in text.splitlines() if "loggers.py" not in ln]  # no stats: nothing says the engine went idle
    hits = []
    pipe = Pipeline(rules.load(), on_hit=hits.append, keep_traces=False)
    pipe.feed_lines(SourceParser("x.log"), iter_text_lines("\n".join(lines)), SourceResult("x.log"))
    assert pipe.assembler.open  # requests with no end: still open...
    assert pipe.assembler.mark_stuck(pipe.last_ts + 3600, 300) == []  # ...but not stuck
    # a server that does log request ends: the same request without its end is stuck
    pipe2 = Pipeline(rules.load(), on_hit=hits.append, keep_traces=False)
    extra = "(APIServer pid=14990) INFO 11-22 18:28:30 [request_logger.py:65] Received request chatcmpl-0123456789abcdef: " \
            "params: SamplingParams(n=1, max_tokens=64), lora_request: None."
    pipe2.feed_lines(SourceParser("y.log"), iter_text_lines((VLLM / "text.log").read_text() + "\n" + extra), SourceResult("y.log"))
    assert len(pipe2.assembler.mark_stuck(pipe2.last_ts + 3600, 300)) == 1


RAY = ("(RayWorkerWrapper pid=812, ip=10.0.0.7) ERROR 01-24 10:00:05 [worker.py:1] torch.OutOfMemoryError: CUDA out of memory. "
       "Tried to allocate 2.00 GiB [repeated 7x across cluster]")


def test_ray_repeat_counts_are_counted(tmp_path):
    p = tmp_path / "ray.log"
    p.write_text(RAY + "\n")
    f = findings(scan(p))["cuda-oom"]
    assert f["count"] == 7


def test_ray_repeat_counts_are_stored(tmp_path):
    from diag.store.db import Store

    hits = []
    pipe = Pipeline(rules.load(), on_hit=hits.append)
    pipe.feed_lines(SourceParser("ray.log"), iter_text_lines(RAY), SourceResult("ray.log"))
    pipe.finish()
    s = Store(tmp_path / "s.sqlite3")
    s.commit([], hits, [])
    assert [(f["rule"], f["count"]) for f in s.findings()] == [("cuda-oom", 7)]


def test_pieces_of_one_rotated_log_are_one_source(tmp_path):
    """`llama.log.1` + `llama.log` (or date-stamped pieces) are one server's log: ids get no source suffix."""
    lines = _many_tasks_then_restart(tmp_path, 10, 0).read_text().splitlines(True)
    cut = len(lines) // 2 + 1
    (tmp_path / "llama.log.1").write_text("".join(lines[:cut]))
    (tmp_path / "llama.log").write_text("".join(lines[cut:]))
    ids = [t["id"] for t in scan(tmp_path / "llama.log.1", tmp_path / "llama.log")["traces"]]
    assert sorted(ids) == sorted(f"task-{i}" for i in range(10))


def _aborts(tmp_path, ids: list[str], aborted: str, name: str) -> dict:
    """vLLM 0.11's log (tests/data/corpus) up to a request it received, then requests `ids` received
    and added as it logs that one, then its client-disconnect lines naming `aborted` (0.10.1-0.13:
    `Aborted request(s) <ids joined with ",">.`, then `Request <id> aborted.` when it is one)."""
    lines = (VLLM.parent / "synthetic-0.11.0-qwen3vl.log").read_text().splitlines()
    head, received, added, abort, abort_one = lines[:106], lines[106], lines[107], lines[110], lines[111]
    rid = "chatcmpl-4d6a133a2026621f13a5f96618effced"
    assert rid in received and rid in added and f"Aborted request(s) {rid}." in abort and f"Request {rid} aborted." in abort_one
    body = head + [ln.replace(rid, i) for i in ids for ln in (received, added)] + [abort.replace(rid, aborted)]
    if aborted in ids:
        body.append(abort_one.replace(rid, aborted))
    p = tmp_path / name
    p.write_text("\n".join(body) + "\n")
    return traces(scan(p))


def test_a_comma_in_a_clients_request_id_aborts_that_request_and_no_other(tmp_path):
    """vLLM joins the ids of `Aborted request(s)` with ","; a client's X-Request-Id may hold one. The
    one whose id is the whole text is the one aborted, not the request its second half names."""
    other = "chatcmpl-4d6a133a2026621f13a5f96618effced"
    mine = f"chatcmpl-x,{other}"  # X-Request-Id: x,chatcmpl-4d6a…
    tr = _aborts(tmp_path, [other, mine], mine, "comma-id.log")
    assert tr[mine]["status"] == "aborted"
    assert tr[other]["status"] != "aborted" and tr[other]["aborted_at"] is None
    assert "chatcmpl-x" not in tr


def test_aborted_requests_listed_together_are_each_aborted_and_an_unknown_one_opens_no_trace(tmp_path):
    a, b = "chatcmpl-4d6a133a2026621f13a5f96618effced", "chatcmpl-5e7b244b3137732024b6f07729ffde"
    tr = _aborts(tmp_path, [a, b], f"{a},{b}", "two.log")
    assert tr[a]["status"] == tr[b]["status"] == "aborted"
    tr = _aborts(tmp_path, [a, b], f"{a},chatcmpl-gone", "one-known.log")
    assert tr[a]["status"] == "aborted" and tr[b]["status"] != "aborted" and "chatcmpl-gone" not in tr
