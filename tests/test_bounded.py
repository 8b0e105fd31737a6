"""Bounded memory and exact commands: per-path state goes with its file; `diag trace` prefixes are literal."""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import VLLM

from diag.daemon import config
from diag.daemon.service import Daemon
from diag.store.db import Store
from diag.analysis.trace import Trace


def _file_body(i: int) -> str:
    pre = f"(APIServer pid={1000 + i}) INFO 11-22 18:23:{i % 60:02d}"
    lines = [f"{pre} [api_server.py:1] vLLM API server version 0.11.0",
             f"(EngineCore pid=7) INFO 11-22 18:23:05 [gpu_worker.py:298] Available KV cache memory: {i}.5 GiB"]
    for j in range(3):
        rid = f"chatcmpl-{i:08x}{j:08x}"
        lines += [f"{pre} [request_logger.py:65] Received request {rid}: params: SamplingParams(n=1, max_tokens=64), lora_request: None.",
                  f"{pre} [async_llm.py:578] Added request {rid}-0000abcd."]
    lines += ["0.00.512.020 E ggml_gallocr_reserve_n: failed to allocate CUDA0 buffer of size 9663676416",  # held, then its file goes
              'INFO:     127.0.0.1:1 - "GET /v1/models HTTP/1.1" 200 OK']
    return "\n".join(lines) + "\n"


def test_what_the_daemon_keeps_per_path_goes_with_a_deleted_globbed_file(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = config.Config(state_dir=tmp_path / "state", from_beginning=True, rescan_globs=0.0, rotate_wait=0.0, use_inotify=False,
                        logs=[config.LogSpec(f"{logs}/*.log")])
    d = Daemon(cfg)
    d.follower.discover(force=True)
    pipe = d.pipe
    try:
        for i in range(20):
            p = logs / f"vllm-2026-01-{i + 1:02d}.log"
            p.write_text(_file_body(i))
            for _ in range(3):
                d.step()
            assert str(p) in pipe.facts.by_source  # the file's facts while it is followed
            p.unlink()
            for _ in range(3):
                d.step()
                d.periodic()
        assert pipe.facts.by_source == {} and pipe.assembler.models == {}
        assert not pipe.assembler.open and not pipe.assembler.recent and not pipe.assembler.alias
        assert pipe.engine.held_state() == []  # released when their file went, not kept
        assert d.follower.readers == {} and d.follower.rotations == {} and d.follower.errors == {}
        assert pipe.assembler.http_records == [] and pipe.assembler.http_count == 20  # the daemon counts HTTP records only
        d.commit()
        rows = d.store.findings()
        assert sum(1 for f in rows if f["rule"] == "llamacpp-alloc-failed") == 20  # nothing lost on the way
        assert d.store.counts()["traces"] == 60
    finally:
        d.follower.close()
        d.store.close()


def _store_with(tmp_path, ids):
    s = Store(tmp_path / "state" / "diag.sqlite3")
    s.commit([Trace(i, "vllm", "x.log") for i in ids], [], [])
    s.close()
    return ["--state-dir", str(tmp_path / "state")]


def _trace(*args):
    return subprocess.run([sys.executable, "-m", "diag", "trace", *args], capture_output=True, text=True)


def test_trace_prefix_is_literal_and_an_ambiguous_one_lists_the_candidates(tmp_path):
    state = _store_with(tmp_path, ["chatcmpl-aaa1", "chatcmpl-aaa2", "task-1", "task-10", "100%_done"])
    r = _trace("%", *state)  # a LIKE wildcard once returned an arbitrary trace
    assert r.returncode == 1 and "no trace" in r.stderr
    r = _trace("chatcmpl-aaa", *state)
    assert r.returncode == 2 and "ambiguous" in r.stderr and "chatcmpl-aaa1, chatcmpl-aaa2" in r.stderr
    assert r.stderr.count("\n") == 1
    r = _trace("task-1", "--json", *state)  # an exact id wins over longer ids it prefixes
    assert r.returncode == 0 and '"id": "task-1"' in r.stdout
    assert _trace("100%", "--json", *state).returncode == 0
    assert _trace("100_", *state).returncode == 1
    assert _trace("chatcmpl-aaa2", "--json", *state).returncode == 0
    assert _trace("CHATCMPL-AAA2", *state).returncode == 1  # ids are case-sensitive


def test_copytruncate_salvage_reads_at_most_its_budget(tmp_path, monkeypatch):
    """The bytes a copytruncate took are read back from the copy, up to a budget (memory: they are
    applied at once), and what is past it is reported, not silently dropped or read whole."""
    from diag.ingest import follow

    monkeypatch.setattr(follow, "SALVAGE_BUDGET", 4096)
    log = tmp_path / "vllm.log"
    line = "(APIServer pid=1) INFO 01-24 10:00:00 [x.py:1] " + "y" * 50 + "\n"
    log.write_text(line * 10)
    got: list = []
    cfg = config.Config(logs=[config.LogSpec(str(log))], state_dir=tmp_path / "state", from_beginning=True, use_inotify=False)
    f = follow.Follower(cfg, [], consume=lambda r, lines, flush: got.extend(lines))
    f.discover(force=True)
    f.poll()
    with open(log, "a") as fh:
        fh.write(line * 300)  # written after the last read: only the copy will have it
    copy = tmp_path / "vllm.log.1"
    copy.write_bytes(log.read_bytes())
    log.write_text("")  # truncated
    f.poll()
    assert 4096 // len(line) - 1 <= len(got) <= 4096 // len(line) + 1  # the budget's worth of lines, not 300
    assert "salvage budget" in f.errors[str(log)]
    f.close()
