"""Scanning files into a store again (`diag scan --store DIR` twice) replaces what the earlier scan
stored for them, instead of storing every finding twice: what `diag findings`, the dashboard and
/metrics' counters show is what one scan of the files holds. What the daemon stored while following
a file live is its own and stays. Real vLLM 0.32 logs from the corpus."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from conftest import VLLM, wait_for
from diag.cli import main
from diag.cli import scan as scan_cli
from diag.store import counters
from diag.store.db import Store

LOGS = [VLLM / "text.log", VLLM / "oom-kv-no-blocks.log", VLLM / "kv-pressure-then-worker-sigkill.log"]


def shown(state: Path, capsys) -> dict:
    """What a user sees of the store: `diag findings --json`, the counters /metrics exposes, the
    engine stats rows the dashboard charts, the traces listed."""
    capsys.readouterr()
    assert main(["findings", "--json", "--state-dir", str(state)]) == 0
    rows = json.loads(capsys.readouterr().out)
    s = Store(state / "diag.sqlite3", readonly=True)
    try:
        per_rule: Counter[str] = Counter()
        for labels, v in counters.read(s.db, "findings"):
            per_rule[labels["rule"]] += int(v)
        requests = sum(v for _, v in counters.read(s.db, "requests"))
        engine = s.db.execute("SELECT count(*) FROM engine_stats").fetchone()[0]
        traces = len(s.trace_ids())
    finally:
        s.close()
    return {"findings": Counter((f["rule"], Path(f["path"]).name, f["line"], f["request_id"]) for f in rows),
            "counted": per_rule, "requests": requests, "engine_stats": engine, "traces": traces}


def test_scanning_the_same_files_again_replaces_what_the_first_scan_stored(tmp_path, monkeypatch, capsys):
    state = tmp_path / "state"
    main(["scan", "--store", str(state), *map(str, LOGS)])
    once = shown(state, capsys)
    assert sum(once["findings"].values()) > 3 and once["engine_stats"] > 0 and once["traces"] > 10
    assert once["counted"] == Counter(rule for rule, *_ in once["findings"].elements())

    # the same files again, spelled relative to another directory, streamed in batches of 3
    monkeypatch.setattr(scan_cli._StoreWriter, "BATCH", 3)
    monkeypatch.chdir(VLLM)
    main(["scan", "--store", str(state), *(p.name for p in LOGS)])
    assert shown(state, capsys) == once
    main(["scan", "--store", str(state), *(p.name for p in LOGS)])
    assert shown(state, capsys) == once


def test_rescanning_a_grown_file_stores_what_one_scan_of_it_would(tmp_path, capsys):
    log = tmp_path / "vllm.log"
    shutil.copy(VLLM / "text.log", log)
    main(["scan", "--store", str(tmp_path / "state"), str(log)])
    early = shown(tmp_path / "state", capsys)
    assert early["findings"]
    with open(log, "a", encoding="utf-8") as f:  # the server was restarted and wrote on, until its engine died
        f.write((VLLM / "kv-pressure-then-worker-sigkill.log").read_text(encoding="utf-8"))
    main(["scan", "--store", str(tmp_path / "state"), str(log)])
    main(["scan", "--store", str(tmp_path / "fresh"), str(log)])
    grown, fresh = shown(tmp_path / "state", capsys), shown(tmp_path / "fresh", capsys)
    assert grown["findings"] == fresh["findings"] and sum(fresh["findings"].values()) > sum(early["findings"].values())
    assert grown["counted"] == fresh["counted"] and grown["engine_stats"] == fresh["engine_stats"]


def test_a_file_that_cannot_be_read_again_keeps_what_its_earlier_scan_stored(tmp_path, capsys):
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    shutil.copy(VLLM / "text.log", a)
    shutil.copy(VLLM / "kv-pressure-then-worker-sigkill.log", b)  # no request id in both
    state = tmp_path / "state"
    main(["scan", "--store", str(state), str(a), str(b)])
    before = shown(state, capsys)
    assert {name for _, name, *_ in before["findings"]} == {"a.log", "b.log"}
    a.unlink()
    assert main(["scan", "--store", str(state), str(a), str(b)]) == 2
    assert "a.log" in capsys.readouterr().err
    after = shown(state, capsys)
    # a.log's findings kept, b.log's replaced. b.log is the first file named now, so its requests keep
    # the ids the server wrote (`…@b` before, `diag.analysis.traceids`): the same requests under new
    # ids, listed once and counted once.
    assert any(rid and rid.endswith("@b") for *_, rid in before["findings"])
    assert unsuffixed(after.pop("findings")) == unsuffixed(before.pop("findings"))
    assert after == before


def unsuffixed(findings: Counter) -> Counter:
    return Counter({(rule, name, line, rid and rid.removesuffix("@b")): n for (rule, name, line, rid), n in findings.items()})


def test_a_rescan_leaves_what_the_daemon_stored_following_the_file_live(tmp_path, capsys):
    log, state = tmp_path / "vllm.log", tmp_path / "state"
    shutil.copy(VLLM / "kv-pressure-then-worker-sigkill.log", log)
    state.mkdir()
    err = open(tmp_path / "daemon.err", "w")
    d = subprocess.Popen([sys.executable, "-m", "diag", "daemon", "--state-dir", str(state), "--log", str(log), "--from-beginning",
                          "--no-web"], stderr=err, stdout=subprocess.DEVNULL)
    try:
        def daemon_rules() -> set[str]:
            try:
                s = Store(state / "diag.sqlite3", readonly=True)
            except Exception:
                return set()
            try:
                return {f["rule"] for f in s.findings()}
            finally:
                s.close()

        wait_for(lambda: {"engine-dead", "request-failed-engine-dead"} <= daemon_rules(), 30, "the daemon's findings")
        time.sleep(0.5)
    finally:
        d.terminate()
        assert d.wait(timeout=30) == 0
        err.close()
    live = shown(state, capsys)
    scanned = tmp_path / "scanned"
    main(["scan", "--store", str(scanned), str(log)])
    one_scan = shown(scanned, capsys)
    for _ in range(2):
        main(["scan", "--store", str(state), str(log)])
        both = shown(state, capsys)
        assert both["findings"] == live["findings"] + one_scan["findings"]
        assert both["counted"] == live["counted"] + one_scan["counted"]
