"""The dashboard's pages, JSON API, live stream and /metrics through FastAPI's TestClient, over a real
store written by `diag scan --store` from the corpus, plus traces with hostile ids, models and clients
committed through the store's one write path."""

from __future__ import annotations

import html
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from conftest import CORPUS, VLLM
from diag.store.db import Store
from diag.analysis.trace import Trace
from diag.web.app import create_app

HOSTILE_ID = 'chatcmpl-"><svg/onload=alert(1)>'
HOSTILE_MODEL = "<img src=x onerror=alert(2)>"
HOSTILE_CLIENT = "10.0.0.1:5</td><script>alert(3)</script>"
FILES = [CORPUS / "vllm" / "synthetic-0.11.0-qwen3vl.log", VLLM / "text.log", VLLM / "vl.log", CORPUS / "seed-style" / "vllm.log"]


def hostile_traces(now: float) -> list[Trace]:
    a = Trace(HOSTILE_ID, "vllm", "/var/log/<b>vllm</b>.log", model=HOSTILE_MODEL, client=HOSTILE_CLIENT, received_at=now - 5,
              finished_at=now - 3, status="ok", http_status=200, latency_s=2.0, images=2, prompt_tokens=10, output_tokens=5,
              timeline=[{"kind": "request.received", "time": now - 5, "line": 7}, {"kind": "request.finished", "time": now - 3, "line": 9}])
    b = Trace(HOSTILE_ID + "-second", "vllm", "/var/log/vllm.log", model="tiny", received_at=now - 4, status="failed",
              failed_at=now - 1, http_status=500, latency_s=3.0)
    return [a, b]


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("webstore")
    r = subprocess.run([sys.executable, "-m", "diag", "scan", "--store", str(d), *map(str, FILES)], capture_output=True, text=True)
    assert "stored" in r.stderr, r.stderr
    s = Store(d / "diag.sqlite3")
    s.commit(hostile_traces(time.time()), [], [])
    s.close()
    return d


@pytest.fixture(scope="module")
def client(state):
    with TestClient(create_app(state / "diag.sqlite3")) as c:
        yield c


def db(state: Path) -> sqlite3.Connection:
    return sqlite3.connect(state / "diag.sqlite3")


# -- /api/traces ---------------------------------------------------------------------------------
def test_api_traces_pages_through_every_trace_newest_first_once(client, state):
    total = db(state).execute("SELECT count(*) FROM traces").fetchone()[0]
    seen, cursor, pages = [], None, 0
    while True:
        r = client.get("/api/traces", params={"limit": 7, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200
        doc = r.json()
        assert set(doc) == {"traces", "next"}
        seen += doc["traces"]
        pages += 1
        cursor = doc["next"]
        if cursor is None:
            break
    assert len(seen) == total > 30 and pages == -(-total // 7)
    assert len({t["id"] for t in seen}) == total
    ts = [t["t"] for t in seen]
    assert ts == sorted(ts, reverse=True)
    assert seen[0]["id"] == HOSTILE_ID + "-second"  # the newest


@pytest.mark.parametrize("params, check", [
    ({"status": "failed"}, lambda t: t["status"] == "failed"),
    ({"model": "tiny"}, lambda t: t["model"] == "tiny"),
    ({"http_status": "500"}, lambda t: t["http_status"] == 500),
    ({"min_latency": "2.5"}, lambda t: t["latency_s"] >= 2.5),
    ({"images": "1"}, lambda t: t["images"] > 0),
    ({"findings": "1"}, lambda t: t["findings"] > 0),
    ({"status": "ok", "model": "tiny"}, lambda t: t["status"] == "ok" and t["model"] == "tiny"),
])
def test_api_traces_filters(client, state, params, check):
    got = client.get("/api/traces", params={**params, "limit": 500}).json()["traces"]
    assert got and all(check(t) for t in got)
    cols = {"status": "status = ?", "model": "model = ?", "http_status": "http_status = ?", "min_latency": "latency_s >= ?",
            "images": "images > 0", "findings": "nfindings > 0"}
    where = " AND ".join(cols[k] for k in params)
    args = [int(v) if k == "http_status" else float(v) if k == "min_latency" else v for k, v in params.items() if "?" in cols[k]]
    assert len(got) == db(state).execute(f"SELECT count(*) FROM traces WHERE {where}", args).fetchone()[0]


def test_api_traces_time_range(client, state):
    lo, hi = db(state).execute("SELECT min(t), max(t) FROM traces").fetchone()
    mid = (lo + hi) / 2
    older = client.get("/api/traces", params={"until": str(mid), "limit": 500}).json()["traces"]
    newer = client.get("/api/traces", params={"since": str(mid), "limit": 500}).json()["traces"]
    assert older and newer and all(t["t"] <= mid for t in older) and all(t["t"] >= mid for t in newer)
    recent = client.get("/api/traces", params={"since": "1m"}).json()["traces"]
    assert {t["id"] for t in recent} == {HOSTILE_ID, HOSTILE_ID + "-second"}


@pytest.mark.parametrize("params", [{"status": "exploded"}, {"http_status": "abc"}, {"min_latency": "nan"}, {"since": "yesterday-ish"},
                                    {"cursor": "not-a-cursor"}])
def test_api_traces_rejects_bad_filters_with_a_reason(client, params):
    r = client.get("/api/traces", params=params)
    assert r.status_code == 400 and r.json()["detail"]


# -- /api/traces/{id} ------------------------------------------------------------------------------
def test_api_trace_detail(client, state):
    tid = db(state).execute("SELECT id FROM traces WHERE nfindings > 0 AND status = 'failed' AND source LIKE '%qwen3vl%' LIMIT 1").fetchone()[0]
    d = client.get(f"/api/traces/{tid}").json()
    assert d["id"] == tid and d["status"] == "failed"
    assert d["timeline"][0]["offset_s"] == 0.0 and d["timeline"][0]["kind"] == "request.received"
    assert all(e["path"].endswith("qwen3vl.log") and e["line"] > 0 for e in d["timeline"])
    assert d["findings"] and all(f["remedy"] for f in d["findings"])
    assert d["engine"] and all("running" in e for e in d["engine"])  # the stats lines around it
    assert len(d["neighbours"]["before"]) == 5 and d["neighbours"]["after"]


def test_api_trace_unknown_id_is_404_with_prefix_matches(client):
    r = client.get("/api/traces/chatcmpl-\"><svg")
    assert r.status_code == 404
    assert set(r.json()["prefix_matches"]) == {HOSTILE_ID, HOSTILE_ID + "-second"}
    r = client.get("/api/traces/nothing-like-this")
    assert r.status_code == 404 and r.json()["prefix_matches"] == []


def test_api_findings_grouped_by_rule(client, state):
    groups = client.get("/api/findings").json()["findings"]
    n = dict(db(state).execute("SELECT rule, count(*) FROM findings GROUP BY rule").fetchall())
    assert {g["rule"]: g["count"] for g in groups} == n
    g = next(g for g in groups if g["request_ids"])
    assert g["remedy"] and g["first"] <= g["last"]
    one = client.get("/api/findings", params={"rule": g["rule"]}).json()["findings"]
    assert [x["rule"] for x in one] == [g["rule"]]


def test_api_status(client, state):
    d = client.get("/api/status").json()
    assert d["traces"] == db(state).execute("SELECT count(*) FROM traces").fetchone()[0]
    srv = {s["source"]: s for s in d["servers"]}
    text = next(s for p, s in srv.items() if p.endswith("real-0.32.0-cpu/text.log"))
    assert text["facts"]["version"] == "0.32.0" and text["facts"]["served_model_name"] == "tiny"
    assert d["alerts_firing"] == 0  # a scan raises no alert: alerts come from the daemon
    assert d["gpu"]["available"] is False and "NVIDIA" in d["gpu"]["reason"] or "NVML" in d["gpu"]["reason"]


# -- pages -----------------------------------------------------------------------------------------
def assert_escaped(body: str) -> None:
    for raw in (HOSTILE_ID, HOSTILE_MODEL, HOSTILE_CLIENT, "<b>vllm</b>"):
        assert raw not in body
    assert "<svg" not in body and "<script>alert" not in body and "<img src=x" not in body


def test_pages_render_hostile_strings_as_text(client):
    for url in ("/", "/requests", "/requests?model=" + HOSTILE_MODEL, "/trace/" + HOSTILE_ID, "/trace/" + HOSTILE_ID + "-second"):
        r = client.get(url)
        assert r.status_code == 200, url
        assert_escaped(r.text)
    page = client.get("/trace/" + HOSTILE_ID).text
    assert all(str(escape(x)) in page for x in (HOSTILE_ID, HOSTILE_MODEL, HOSTILE_CLIENT))
    listing = client.get("/requests").text
    assert 'href="/trace/chatcmpl-%22%3E%3Csvg/onload%3Dalert%281%29%3E"' in listing


def test_every_response_carries_a_csp_without_inline_script(client):
    for url in ("/", "/requests", "/api/traces", "/metrics", "/trace/x"):
        csp = client.get(url).headers["content-security-policy"]
        script = next(p for p in csp.split(";") if p.strip().startswith("script-src"))
        assert "'self'" in script and "unsafe" not in script
    assert "<script>" not in client.get("/").text.replace('<script type="application/json"', "")


def test_unknown_trace_page_is_404_listing_prefix_matches(client):
    r = client.get("/trace/chatcmpl-\"><sv")
    assert r.status_code == 404
    assert_escaped(r.text)
    assert r.text.count('href="/trace/chatcmpl-%22%3E%3Csvg') == 2


def test_search_jumps_to_a_trace_by_full_id_or_unique_prefix(client, state):
    tid = db(state).execute("SELECT id FROM traces WHERE id LIKE 'chatcmpl-0e1f%'").fetchone()[0]
    for q in (tid, tid[:14]):
        r = client.get("/requests", params={"q": q}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/trace/{tid}"
    r = client.get("/requests", params={"q": "chatcmpl-\""}, follow_redirects=False)  # two match: list them
    assert r.status_code == 200 and r.text.count('class="rid" href="/trace/chatcmpl-%22') >= 2
    assert "No request id starts with" in client.get("/requests", params={"q": "zzz"}).text


def test_requests_page_keeps_filters_in_its_links(client):
    page = client.get("/requests", params={"status": "ok", "model": "tiny", "limit": "3"}).text
    nxt = page.split('rel="next" href="')[1].split('"')[0]
    assert "status=ok" in nxt and "model=tiny" in nxt and "cursor=" in nxt and "limit=3" in nxt
    assert 'data-events="/api/events?status=ok&amp;model=tiny"' in page
    older = client.get(html.unescape(nxt))
    assert older.status_code == 200 and "« newest" in older.text and "data-events" not in older.text
    assert "status must be one of" in client.get("/requests", params={"status": "x"}).text


def test_findings_and_alerts_pages(client, state):
    rule = db(state).execute("SELECT rule FROM findings WHERE request_id IS NOT NULL LIMIT 1").fetchone()[0]
    page = client.get("/findings", params={"rule": rule}).text
    assert rule in page and 'href="/trace/' in page
    alerts = client.get("/alerts").text  # a scanned store: findings, but no alert and nothing queued
    assert "Firing (0)" in alerts and "No alert is firing." in alerts and "0 queued · 0 delivered · 0 expired" in alerts
    assert "No alert is firing" in client.get("/").text


@pytest.fixture
def alerted(state, tmp_path, receiver):
    """A copy of the scanned store with alerts written by the real AlertManager in the store's one
    transaction, and the real outbox Sender run once: cuda-oom fires (three requests, one with a
    hostile id), nccl-error is silenced, image-fetch-failed fired two hours ago and resolved; the
    sink `hook` delivers, `down` fails, and what is older than max_age expired."""
    from conftest import free_port
    from diag.analysis.rules import ruleset as rules
    from diag.alerts import silences as sil
    from diag.alerts.config import AlertsConfig, SinkConfig
    from diag.alerts.manager import AlertManager
    from diag.alerts.outbox import Sender
    from diag.analysis.findings import Hit

    shutil.copy(state / "diag.sqlite3", tmp_path / "diag.sqlite3")
    path = tmp_path / "diag.sqlite3"
    rs = rules.load()
    cfg = AlertsConfig(group_wait=0, resolve_after=900, max_age=3600,
                       sinks=[SinkConfig("hook", "webhook", url=receiver.url + "/hook"),
                              SinkConfig("down", "webhook", url=f"http://127.0.0.1:{free_port()}/x")])
    m = AlertManager(cfg, rs, host="h1")
    now = time.time()
    t0 = now - 7200
    src = "/var/log/vllm.log"

    def hit(rule: str, rid: str | None) -> Hit:
        return Hit(rs.by_id(rule), now - 30, src, 7, {}, rid, f"excerpt of {rule}")

    s = Store(path)
    old = [hit("image-fetch-failed", "chatcmpl-img")]
    for h in old:
        m.hit(h, t0, "vllm", "tiny")
    s.commit([], old, [], extra=m.process(t0).write)
    silence = sil.add(s.db, [sil.Matcher.parse("alertname=nccl-error")], 3600, "NCCL upgrade", "ops@h1", now=now - 60)
    m.set_silences(sil.load(s.db))
    new = [hit("cuda-oom", r) for r in (HOSTILE_ID, "chatcmpl-a", "chatcmpl-b")] + [hit("nccl-error", None)]
    for h in new:
        m.hit(h, now, "vllm", "tiny")
    s.commit([], new, [], extra=m.process(now).write)
    s.close()
    conn = sqlite3.connect(path, isolation_level=None)
    sender = Sender(path, cfg)
    for _ in range(3):  # each step delivers one notification per sink
        sender.step(conn, now)
    conn.close()
    return {"path": path, "silence": silence.id, "hook": receiver}


def test_alerts_page_shows_firing_silenced_resolved_and_the_outbox(alerted):
    from diag.alerts.view import alerts_doc

    with TestClient(create_app(alerted["path"])) as c:
        page = c.get("/alerts").text
        api = c.get("/api/alerts").json()
    assert_escaped(page)
    firing, rest = page.split("Silenced or inhibited (")
    silenced, rest = rest.split("Resolved, last 24 hours (")
    resolved, outbox = rest.split("<h2>Outbox</h2>")
    assert "Firing (1)" in firing and 'href="/findings?rule=cuda-oom"' in firing and "cuda-oom" not in silenced + resolved
    assert '<td class="n">3</td>' in firing  # the count
    for rid in (HOSTILE_ID, "chatcmpl-a", "chatcmpl-b"):
        assert f'href="/trace/{quote(rid, safe="/")}">{escape(rid)}</a>' in firing
    assert silenced.startswith("1)") and "nccl-error" in silenced and f"silence {alerted['silence']}" in silenced
    assert resolved.startswith("1)") and "image-fetch-failed" in resolved and "resolved 20" in resolved
    assert "Silences (1 active)" in resolved and "NCCL upgrade" in resolved
    doc = sqlite3.connect(alerted["path"])
    with doc:
        st = dict(doc.execute("SELECT sink || ':' || state, count(*) FROM outbox GROUP BY 1").fetchall())
    assert st.get("hook:delivered") and st.get("down:queued") and st.get("down:expired") and st.get("hook:expired")
    rows = {r.split("</td>")[0]: r for r in outbox.split('<tr class="sink"><td>')[1:]}
    assert set(rows) == {"hook", "down"}
    assert f'<td class="n">{st["down:queued"]}</td>' in rows["down"] and "failing: " in rows["down"] and "failing" not in rows["hook"]
    err = doc.execute("SELECT last_error FROM outbox WHERE sink = 'down' AND state = 'queued' LIMIT 1").fetchone()[0]
    assert err and str(escape(err)) in rows["down"]
    # the page and `diag alerts --json` read the same API and agree
    r = subprocess.run([sys.executable, "-m", "diag", "alerts", "--json", "--state-dir", str(alerted["path"].parent)],
                       capture_output=True, text=True)
    cli = json.loads(r.stdout)
    assert api == cli | {"silences": api["silences"]}  # the same document (a silence's remaining time moves on)
    assert [a["rule"] for a in cli["firing"]] == ["cuda-oom"] and cli["outbox"]["expired"] == st["down:expired"] + st["hook:expired"]
    assert {k: [a["fingerprint"] for a in v] for k, v in cli.items() if k in ("firing", "silenced", "resolved")} == \
           {k: [a["fingerprint"] for a in v] for k, v in alerts_doc(sqlite3.connect(alerted["path"])).items() if k in ("firing", "silenced", "resolved")}


def test_status_metric_and_overview_count_firing_alerts(alerted):
    with TestClient(create_app(alerted["path"])) as c:
        assert c.get("/api/status").json()["alerts_firing"] == 1  # cuda-oom; the silenced one does not page
        assert "\ndiag_alerts_firing 1.0\n" in c.get("/metrics").text
        over = c.get("/").text
    assert_escaped(over)
    section = over.split("<h2>Firing alerts</h2>")[1].split("</section>")[0]
    assert 'href="/findings?rule=cuda-oom"' in section and "nccl-error" not in section
    assert f'href="/trace/{quote(HOSTILE_ID, safe="/")}"' in section


def test_alert_url_annotation_opens_the_findings_page(alerted):
    sent = alerted["hook"].wait(1)
    urls = {a["annotations"]["url"] for doc in sent for a in doc["alerts"]}
    assert "http://127.0.0.1:8765/findings?rule=cuda-oom" in urls  # the dashboard's default address
    with TestClient(create_app(alerted["path"])) as c:
        for u in urls:
            r = c.get(u.removeprefix("http://127.0.0.1:8765"))
            rule = u.rsplit("=", 1)[1]
            assert r.status_code == 200 and f'href="/findings?rule={rule}"' in r.text and "No findings" not in r.text


def test_overview_shows_servers_traffic_findings_and_no_gpu(client):
    page = client.get("/").text
    assert "0.32.0" in page and "2048.0× at 512 tokens" in page  # startup facts: max concurrency
    assert 'data-chart="engine"' in page and 'data-chart="traffic"' in page
    assert "Latest findings" in page and "Scanned files" in page
    assert "no NVIDIA driver" in page or "NVML" in page


# -- auth ------------------------------------------------------------------------------------------
def test_token_enforced_for_api_metrics_events_and_pages(state):
    with TestClient(create_app(state / "diag.sqlite3", token="s3cret")) as c:
        for url in ("/api/traces", "/api/status", "/api/findings", "/api/traces/x", "/metrics", "/api/events"):
            r = c.get(url)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", url
            assert c.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/traces", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        r = c.get("/requests?status=ok", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Frequests%3Fstatus%3Dok"
        assert c.get("/static/diag.js").status_code == 200  # the vendored assets hold nothing secret
        r = c.post("/login", data={"token": "nope", "next": "/requests"}, follow_redirects=False)
        assert r.status_code == 401 and "not the token" in r.text
        r = c.post("/login", data={"token": "s3cret", "next": "//evil.example/"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "s3cret" not in cookie
        assert c.get("/requests").status_code == 200  # the cookie now
        assert c.get("/api/traces").status_code == 200


# -- /metrics ----------------------------------------------------------------------------------------
def test_metrics_counts_match_the_store_and_survive_pruning(tmp_path):
    path = tmp_path / "diag.sqlite3"
    s = Store(path)
    now = time.time()
    batch = [Trace(f"cmpl-{i}", "vllm", "/l", model="m", received_at=now - 100 + i, status="ok" if i % 4 else "failed",
                   http_status=200 if i % 4 else 500, latency_s=0.2 * i) for i in range(40)]
    batch.append(Trace("cmpl-open", "vllm", "/l", model="m", received_at=now, status="in_flight"))
    s.commit(batch, [], [])
    s.commit(batch[:10], [], [])  # committed again (a late access line): counted once
    with TestClient(create_app(path)) as c:
        before = c.get("/metrics").text
        assert 'diag_requests_total{http_status="200",model_name="m",status="ok"} 30.0' in before
        assert 'diag_requests_total{http_status="500",model_name="m",status="failed"} 10.0' in before
        assert 'in_flight' not in before
        assert 'diag_request_latency_seconds_count{model_name="m"} 40.0' in before
        assert 'diag_request_latency_seconds_bucket{le="0.3",model_name="m"} 2.0' in before  # 0.0 and 0.2
        assert s.prune(now, 14, max_traces=5, max_findings=5) > 0
        assert s.db.execute("SELECT count(*) FROM traces").fetchone()[0] == 5
        assert c.get("/metrics").text.split("diag_alerts_firing")[0] == before.split("diag_alerts_firing")[0]
        assert "request_id" not in before and "cmpl-" not in before  # never a request id as a label
    s.close()


def test_metrics_pass_promtool(client, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/run installs it)")
    text = client.get("/metrics").text
    assert "diag_findings_total{" in text and "diag_engine_requests_running{" in text
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


class FakeNVML:
    """Stands in for pynvml (no GPU here): one H100 with one process."""

    NVML_TEMPERATURE_GPU = 0

    class Mem:
        used, total = 60 * 2**30, 80 * 2**30

    class Util:
        gpu = 87

    class Proc:
        pid, usedGpuMemory = 4242, 58 * 2**30

    def nvmlInit(self): pass
    def nvmlShutdown(self): pass
    def nvmlSystemGetDriverVersion(self): return "550.54"
    def nvmlDeviceGetCount(self): return 1
    def nvmlDeviceGetHandleByIndex(self, i): return i
    def nvmlDeviceGetName(self, h): return b"NVIDIA H100 <80GB>"
    def nvmlDeviceGetMemoryInfo(self, h): return self.Mem()
    def nvmlDeviceGetUtilizationRates(self, h): return self.Util()
    def nvmlDeviceGetTemperatureV(self, h, sensor): return 71
    def nvmlDeviceGetComputeRunningProcesses(self, h): return [self.Proc()]


def test_gpu_panel_and_gauges_fake_nvml(state):
    with TestClient(create_app(state / "diag.sqlite3", nvml=FakeNVML())) as c:
        page = c.get("/").text
        assert "NVIDIA H100 &lt;80GB&gt;" in page and "60.0 / 80.0" in page and "87%" in page and "pid 4242" in page
        m = c.get("/metrics").text
        assert 'diag_gpu_memory_used_bytes{gpu="0",name="NVIDIA H100 <80GB>"} 6.442450944e+10' in m
        assert 'diag_gpu_utilization_ratio{gpu="0",name="NVIDIA H100 <80GB>"} 0.87' in m
        assert 'diag_gpu_temperature_celsius{gpu="0",name="NVIDIA H100 <80GB>"} 71.0' in m


# -- the live stream -----------------------------------------------------------------------------------
def test_event_stream_sends_committed_traces_matching_its_filters(tmp_path):
    path = tmp_path / "diag.sqlite3"
    writer = Store(path)
    writer.commit([Trace("old-1", "vllm", "/l", model="m", received_at=time.time() - 10, status="ok")], [], [])
    app = create_app(path)
    got: list = []

    def commit_later():
        time.sleep(0.5)
        w = Store(path)
        w.commit([Trace("new-failed", "vllm", "/l", model="m", received_at=time.time(), status="failed", http_status=500),
                  Trace("new-ok", "vllm", "/l", model="m", received_at=time.time(), status="ok")], [], [])
        w.close()
        app.state.web.live.poke()

    with TestClient(app) as c:
        with c.stream("GET", "/api/events", params={"status": "failed"}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            threading.Thread(target=commit_later, daemon=True).start()
            event = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "traces":
                    got = json.loads(line[6:])
                    break
    writer.close()
    assert [t["id"] for t in got] == ["new-failed"] and got[0]["http_status"] == 500


# -- privacy -----------------------------------------------------------------------------------------
def test_no_prompt_or_output_text_on_any_page_or_api(tmp_path):
    """The whole corpus (prompts, DEBUG details, --enable-log-outputs, llama.cpp -v) scanned into a store:
    no user text on any page, in the API or in /metrics, raw, HTML-escaped or JSON-escaped."""
    from conftest import ALL_LOGS, corpus_user_text, dashboard_answers

    r = subprocess.run([sys.executable, "-m", "diag", "scan", "--store", str(tmp_path), *ALL_LOGS], capture_output=True, text=True)
    assert "stored" in r.stderr, r.stderr
    with TestClient(create_app(tmp_path / "diag.sqlite3")) as c:
        pages = dashboard_answers(c.get)
    assert len(pages) > 200
    blob = "\n".join(pages)
    user = corpus_user_text() | {"抱歉", "我看不到图片", "What is in this image?", "odusoiduzaite"}
    assert len(user) > 20
    leaked = [t for t in user if t in blob or str(escape(t)) in blob or json.dumps(t)[1:-1] in blob]
    assert leaked == []


# -- times ---------------------------------------------------------------------------------------
READABLE = re.compile(r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\b")
ISO_TEXT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")


def shown(page: str) -> str:
    """What a person reads on a page: no script data, no log excerpts (log text is not ours to format), no tags."""
    page = re.sub(r"<(script|pre)\b.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def local(value: float | str) -> str:
    t = datetime.fromtimestamp(value) if isinstance(value, float) else datetime.fromisoformat(value).astimezone()
    return t.strftime("%Y-%m-%d %H:%M:%S")


def test_every_page_shows_times_in_one_form_and_the_api_keeps_iso(client, state, alerted):
    """Pages show `2026-11-22 18:27:00` (this server's local time, as the footer says) wherever a
    time appears: request rows, a trace's received time and timeline, engine rows, finding groups,
    alerts, silences, the outbox. The JSON API keeps ISO 8601 with the offset."""
    conn = db(state)
    tid, received = conn.execute(
        "SELECT id, received_at FROM traces t WHERE received_at IS NOT NULL AND json_array_length(data, '$.timeline') > 1 AND "
        "EXISTS (SELECT 1 FROM engine_stats e WHERE e.ts BETWEEN t.received_at - 30 AND t.received_at + 30) LIMIT 1").fetchone()
    pages = {p: client.get(p).text for p in ("/", "/requests", "/findings", f"/trace/{quote(tid, safe='')}")}
    with TestClient(create_app(alerted["path"])) as c:
        pages["/alerts"] = c.get("/alerts").text
        doc = c.get("/api/alerts").json()
    least = {"/": 3, "/requests": 20, "/findings": 2, f"/trace/{quote(tid, safe='')}": 3, "/alerts": 5}
    for path, page in pages.items():
        text = shown(page)
        assert not ISO_TEXT.search(text), (path, ISO_TEXT.search(text)[0])
        assert len(READABLE.findall(text)) >= least[path], path
    trace = shown(pages[f"/trace/{quote(tid, safe='')}"])
    assert f"received {local(received)}" in " ".join(trace.split())
    api = client.get(f"/api/traces/{quote(tid, safe='')}").json()
    assert ISO_TEXT.match(api["received_at"]) and local(api["received_at"]) == local(received)
    assert [local(e["time"]) for e in api["timeline"] if e["time"]] == \
        [m for m in READABLE.findall(trace.split("Timeline")[1].split("Findings")[0])]
    (resolved,) = doc["resolved"]
    alerts = " ".join(shown(pages["/alerts"]).split())
    assert f"(resolved {local(resolved['ends_at'])})" in alerts and local(doc["silences"][0]["ends_at"]) in alerts
