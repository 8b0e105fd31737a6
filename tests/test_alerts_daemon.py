"""Alerts from the real daemon process to real receivers and a real Alertmanager: a burst pages once, silences hold,
a receiver that is down loses nothing, SIGKILL between commit and delivery delivers after the
restart, the journal line carries the sd-daemon priority (no user text in any sink: the canary
corpus test in test_user_content.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import Receiver, free_port
from conftest import wait_for
from diag.alerts.model import fingerprint

AM = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

OOM = ("(APIServer pid=1) ERROR 01-24 10:03:33 [serving_chat.py:1012] Error in chat completion stream generator: CUDA out of memory. "
       "Tried to allocate 11.72 GiB. GPU 0 has a total capacity of 79.19 GiB of which 7.04 GiB is free.\n")
NCCL = "(EngineCore_DP0 pid=245) ERROR 01-24 10:03:34 [core.py:710] RuntimeError: NCCL error: unhandled cuda error\n"
FAST = "[alerts]\ngroup_wait = 1\ngroup_interval = 1\nresolve_after = 2\nbackoff_max = 1\n"


class Daemon:
    def __init__(self, tmp: Path, sinks: str, timers: str = FAST, env: dict | None = None, args: tuple[str, ...] = ("--no-web",)):
        self.tmp, self.state, self.log = tmp, tmp / "state", tmp / "vllm.log"
        self.state.mkdir(exist_ok=True)
        self.log.touch()
        self.config = tmp / "diag.toml"
        self.config.write_text(timers + sinks)
        self.env = env or {}
        self.args = list(args)
        self.proc: subprocess.Popen | None = None
        self.errs: list[Path] = []

    def start(self) -> "Daemon":
        err = self.tmp / f"daemon-{len(self.errs)}.err"
        self.errs.append(err)
        self.proc = subprocess.Popen([sys.executable, "-m", "diag", "daemon", "--config", str(self.config), "--state-dir", str(self.state),
                                      "--log", str(self.log), *self.args], stderr=open(err, "w"), stdout=subprocess.DEVNULL,
                                     env={**os.environ, **self.env})
        wait_for(lambda: (self.state / "diag.sqlite3").exists() and self.sql("SELECT count(*) FROM sources")[0][0] == 1, what="daemon start")
        return self

    def write(self, text: str) -> None:
        with open(self.log, "a") as f:
            f.write(text)

    def sql(self, q: str, args=()) -> list:
        db = sqlite3.connect(f"file:{self.state / 'diag.sqlite3'}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(q, args).fetchall()
        except sqlite3.OperationalError:
            return [[0]]
        finally:
            db.close()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "diag", *args, "--state-dir", str(self.state), "--config", str(self.config)],
                              capture_output=True, text=True)

    def stderr(self) -> str:
        return "".join(p.read_text() for p in self.errs)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)


def webhook(url: str, name: str = "hook") -> str:
    return f'[[alerts.sink]]\nname = "{name}"\ntype = "webhook"\nurl = "{url}"\n'


@pytest.fixture
def rec():
    r = Receiver()
    yield r
    r.close()


def test_burst_of_1000_oom_lines_is_one_notification_then_resolved(tmp_path, rec):
    # the whole burst is read within group_wait (1 s); its last line, an ERROR line a traceback could
    # follow, is complete once the file has been quiet for record_quiet (0.25 s)
    d = Daemon(tmp_path, webhook(rec.url + "/hook"), timers=FAST, env={"JOURNAL_STREAM": "8:12345"}).start()
    try:
        d.write(OOM * 1000)
        bodies = rec.wait(2)
        time.sleep(1.5)  # nothing else follows
        bodies = rec.json()
        assert [b["status"] for b in bodies] == ["firing", "resolved"]
        fired, resolved = bodies
        assert len(fired["alerts"]) == 1 and fired["alerts"][0]["annotations"]["count"] == "1000"
        labels = fired["alerts"][0]["labels"]
        assert labels["alertname"] == "cuda-oom" and labels["server"] == "vllm" and labels["source"] == str(d.log)
        assert resolved["alerts"][0]["fingerprint"] == fired["alerts"][0]["fingerprint"]
        assert resolved["alerts"][0]["annotations"]["count"] == "1000"
        assert fired["notification_id"] != resolved["notification_id"]
        doc = json.loads(d.cli("alerts", "--json").stdout)
        assert [a["labels"]["alertname"] for a in doc["resolved"]] == ["cuda-oom"] and doc["firing"] == []
        assert doc["outbox"]["delivered"] == 2 and doc["outbox"]["queued"] == 0
    finally:
        d.stop()
    err = d.stderr()
    assert "<2>alert [FIRING:1] cuda-oom" in err and "×1000" in err  # critical → sd-daemon priority 2
    assert "<5>alert [RESOLVED:1] cuda-oom" in err
    assert d.sql("SELECT count(*) FROM findings")[0][0] == 1000  # every finding stored; one page


def test_silence_sends_nothing_and_shows_as_silenced(tmp_path, rec):
    d = Daemon(tmp_path, webhook(rec.url), timers="[alerts]\ngroup_wait = 0\ngroup_interval = 1\nresolve_after = 60\n")
    add = d.cli("silence", "add", "alertname=cuda-oom", "server=~vll.*", "--for", "1h", "--comment", "known: card 0 swap")
    assert add.returncode == 0, add.stderr
    sid = add.stdout.strip()
    d.start()
    try:
        d.write(OOM * 5 + NCCL)
        (b,) = rec.wait(1)
        assert b["alerts"][0]["labels"]["alertname"] == "nccl-error"
        doc = wait_for(lambda: (j := json.loads(d.cli("alerts", "--json").stdout))["silenced"] and j, what="the silenced alert")
        (s,) = doc["silenced"]
        assert s["labels"]["alertname"] == "cuda-oom" and s["silenced_by"] == [sid] and s["count"] == 5
        assert [x["comment"] for x in doc["silences"]] == ["known: card 0 swap"]
        human = d.cli("alerts").stdout
        assert "Silenced or inhibited (1)" in human and sid in human
        listed = d.cli("silence", "list")
        assert sid in listed.stdout and "alertname=cuda-oom" in listed.stdout
        assert d.cli("silence", "expire", sid[:8]).returncode == 0
        assert json.loads(d.cli("silence", "list", "--json").stdout) == []
        # expired: the still-firing alert pages at the group's next flush
        b2 = rec.wait(2)[1]
        assert b2["alerts"][0]["labels"]["alertname"] == "cuda-oom" and b2["status"] == "firing"
        # a silence added while the daemon runs takes effect at once (shown as silenced)
        sid2 = d.cli("silence", "add", "alertname=nccl-error").stdout.strip()
        wait_for(lambda: [a["silenced_by"] for a in json.loads(d.cli("alerts", "--json").stdout)["silenced"]] == [[sid2]],
                 what="the running daemon to apply the new silence")
        d.write(NCCL)
        time.sleep(1.5)
    finally:
        d.stop()
    assert len([b for b in rec.json() if b["alerts"][0]["labels"]["alertname"] == "cuda-oom"]) == 1
    assert len([b for b in rec.json() if b["alerts"][0]["labels"]["alertname"] == "nccl-error"]) == 1


def test_receiver_down_then_up_loses_nothing(tmp_path, rec):
    rec.status = 503
    d = Daemon(tmp_path, webhook(rec.url), timers="[alerts]\ngroup_wait = 0\ngroup_interval = 1\nresolve_after = 1\nbackoff_max = 1\n").start()
    try:
        d.write(OOM)
        wait_for(lambda: d.sql("SELECT coalesce(max(attempts), 0) FROM outbox")[0][0] >= 2, what="failed attempts")
        d.write(NCCL)
        wait_for(lambda: d.sql("SELECT count(*) FROM outbox WHERE state = 'queued'")[0][0] >= 3, what="more queued")
        err = json.loads(d.cli("alerts", "--json").stdout)["outbox"]["sinks"][0]
        assert err["queued"] >= 3 and "HTTP 503" in err["last_error"]
        rec.status = 200
        wait_for(lambda: d.sql("SELECT count(*) FROM outbox WHERE state = 'queued'")[0][0] == 0, what="the backlog to drain")
        wait_for(lambda: len(rec.json()) == 4, what="both groups firing and resolved")
    finally:
        d.stop()
    got = sorted((b["alerts"][0]["labels"]["alertname"], b["status"]) for b in rec.json())
    assert got == [("cuda-oom", "firing"), ("cuda-oom", "resolved"), ("nccl-error", "firing"), ("nccl-error", "resolved")]
    assert "delivery failed (HTTP 503" in d.stderr() and "hook delivers again" in d.stderr()


def test_sigkill_between_commit_and_delivery_delivers_after_restart(tmp_path, rec):
    rec.status = 503
    d = Daemon(tmp_path, webhook(rec.url), timers="[alerts]\ngroup_wait = 0\nresolve_after = 3600\nbackoff_max = 1\n").start()
    d.write(OOM * 3)
    wait_for(lambda: d.sql("SELECT count(*) FROM outbox")[0][0] == 1, what="the queued notification")
    nid = d.sql("SELECT notification_id FROM outbox")[0][0]
    d.stop(signal.SIGKILL)
    rec.status = 200
    d.start()
    try:
        (b,) = rec.wait(1)
        assert b["notification_id"] == nid  # the very notification committed before the kill
        wait_for(lambda: d.sql("SELECT count(*) FROM findings")[0][0] == 3, what="the last record (held until its file is quiet)")
        time.sleep(1.0)
        assert d.sql("SELECT count(*) FROM findings")[0][0] == 3  # no line read twice
        assert len(rec.json()) == 1  # the restart does not page again
    finally:
        d.stop()


@pytest.fixture
def alertmanager(tmp_path):
    hook = Receiver()
    port = free_port()
    cfg = tmp_path / "am.yml"
    cfg.write_text(f"""route:
  receiver: hook
  group_by: [alertname, server]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {hook.url}/am-hook
        send_resolved: true
""")
    proc = subprocess.Popen([AM, f"--config.file={cfg}", f"--storage.path={tmp_path / 'am-data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "am.err", "w"))
    url = f"http://127.0.0.1:{port}"

    def ready():
        try:
            return httpx.get(url + "/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, what="Alertmanager to start", timeout=30)
        yield url, hook
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        hook.close()


@pytest.mark.skipif(AM is None, reason="Alertmanager not installed (apt-get install prometheus-alertmanager)")
def test_alert_reaches_a_real_alertmanager_fires_once_and_resolves(tmp_path, alertmanager):
    am_url, hook = alertmanager
    sink = f'[[alerts.sink]]\nname = "am"\ntype = "alertmanager"\nurl = "{am_url}"\n'
    d = Daemon(tmp_path, sink, timers="[alerts]\ngroup_wait = 0\ngroup_interval = 1\nresolve_after = 4\nresend_interval = 1\n",
               args=("--web", f"127.0.0.1:{free_port()}")).start()
    try:
        d.write(OOM * 10)

        def listed():
            alerts = httpx.get(am_url + "/api/v2/alerts", timeout=5).json()
            return [a for a in alerts if a["labels"].get("alertname") == "cuda-oom"]

        (a,) = wait_for(listed, what="the alert in Alertmanager")
        assert a["labels"]["server"] == "vllm" and a["labels"]["source"] == str(d.log) and a["status"]["state"] == "active"
        assert a["annotations"]["url"].endswith("/findings?rule=cuda-oom")
        assert a["fingerprint"] == fingerprint(a["labels"])  # our fingerprint is Alertmanager's
        wait_for(lambda: any(b["status"] == "resolved" for b in hook.json()), what="Alertmanager's resolved notification", timeout=40)
    finally:
        d.stop()
    bodies = hook.json()
    assert [b["status"] for b in bodies] == ["firing", "resolved"]  # re-sent every second, yet paged once
    assert bodies[0]["alerts"][0]["labels"]["alertname"] == "cuda-oom"
    assert json.loads(d.cli("alerts", "--json").stdout)["outbox"]["sinks"][0]["delivered"] >= 3
    t = d.cli("alerts", "test", "--sink", "am")
    assert t.returncode == 0 and "am (alertmanager): delivered" in t.stdout
    names = {a["labels"]["alertname"] for a in httpx.get(am_url + "/api/v2/alerts", timeout=5).json()}
    assert "diag-test" in names


def test_alert_links_open_the_dashboard_the_daemon_serves(tmp_path, rec):
    """Started with --web on a free port, the daemon's alerts link there (no external_url configured),
    the link opens the findings of that rule, and the dashboard shows the alert firing."""
    port = free_port()
    d = Daemon(tmp_path, webhook(rec.url + "/hook"), timers="[alerts]\ngroup_wait = 0\n", args=("--web", f"127.0.0.1:{port}")).start()
    try:
        d.write(OOM)
        (doc,) = rec.wait(1)
        url = doc["alerts"][0]["annotations"]["url"]
        assert url == f"http://127.0.0.1:{port}/findings?rule=cuda-oom" and doc["externalURL"] == f"http://127.0.0.1:{port}"
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200 and 'href="/findings?rule=cuda-oom"' in page.text and "No findings" not in page.text
        alerts = httpx.get(f"http://127.0.0.1:{port}/alerts", timeout=10).text
        assert "Firing (1)" in alerts.split("Silenced")[0] and "cuda-oom" in alerts.split("Silenced")[0]
        assert "\ndiag_alerts_firing 1.0\n" in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        d.stop()


def test_unreadable_log_is_a_state_like_alert(tmp_path, rec):
    d = Daemon(tmp_path, webhook(rec.url), timers="[alerts]\ngroup_wait = 0\ngroup_interval = 1\n")
    d.log.unlink()
    d.log.mkdir()  # root reads everything: a directory where the log should be cannot be opened either
    d.proc = subprocess.Popen([sys.executable, "-m", "diag", "daemon", "--config", str(d.config), "--state-dir", str(d.state),
                               "--log", str(d.log)], stderr=open(tmp_path / "d.err", "w"), stdout=subprocess.DEVNULL)
    d.errs.append(tmp_path / "d.err")
    try:
        (b,) = rec.wait(1)
        a = b["alerts"][0]
        assert a["labels"]["alertname"] == "diag-log-unreadable" and a["labels"]["source"] == str(d.log)
        assert "cannot open" in a["annotations"]["summary"]
        d.log.rmdir()
        d.log.write_text("")
        b2 = rec.wait(2)[1]
        assert b2["status"] == "resolved" and b2["alerts"][0]["fingerprint"] == a["fingerprint"]
    finally:
        d.stop()


def test_store_failing_alert_goes_out_without_the_store(tmp_path, rec):
    from diag.daemon import config
    from diag.daemon.service import Daemon as RealDaemon

    log = tmp_path / "vllm.log"
    log.write_text("")
    cfg = config.Config(logs=[config.LogSpec(str(log))], state_dir=tmp_path / "state", use_inotify=False,
                        alerts_doc={"group_wait": 0, "group_interval": 0.1, "sink": [{"name": "hook", "type": "webhook", "url": rec.url}]})
    d = RealDaemon(cfg)
    d.alerts.start()
    try:
        d.follower.discover(force=True)
        d.step()
        pages = d.store.db.execute("PRAGMA page_count").fetchone()[0]
        d.store.db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full now
        log.write_text("".join(f"(APIServer pid=1) INFO 01-24 10:00:00 [request_logger.py:65] Received request chatcmpl-{i:016x}: "
                               "params: SamplingParams(n=1, max_tokens=8), lora_request: None.\n" + "x" * 2000 + "\n" for i in range(200)))
        d.step()
        assert d.committer.pending is not None
        (b,) = rec.wait(1)
        assert b["alerts"][0]["labels"]["alertname"] == "diag-store-failing" and b["alerts"][0]["labels"]["severity"] == "critical"
        d.store.db.execute("PRAGMA max_page_count = 1073741823")  # space again
        d.step()
        time.sleep(0.2)
        d.commit()
        b2 = rec.wait(2)[1]
        assert b2["status"] == "resolved" and b2["alerts"][0]["labels"]["alertname"] == "diag-store-failing"
    finally:
        d.alerts.close()
        d.store.close()


def test_sighup_reloads_sinks_and_cli_webhook_stays(tmp_path, rec):
    other, cli_hook = Receiver(), Receiver()
    try:
        d = Daemon(tmp_path, webhook(rec.url, "first"), timers="[alerts]\ngroup_wait = 0\ngroup_interval = 1\nresolve_after = 60\n")
        d.proc = subprocess.Popen([sys.executable, "-m", "diag", "daemon", "--config", str(d.config), "--state-dir", str(d.state),
                                   "--log", str(d.log), "--alert-webhook", cli_hook.url], stderr=open(tmp_path / "d.err", "w"))
        d.errs.append(tmp_path / "d.err")
        wait_for(lambda: (d.state / "diag.sqlite3").exists() and d.sql("SELECT count(*) FROM sources")[0][0] == 1, what="start")
        d.config.write_text("[alerts]\ngroup_wait = 0\n" + webhook(other.url, "second"))
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload: alerts: 2 sink(s)" in d.stderr(), what="the reload")
        d.write(NCCL)
        assert other.wait(1)[0]["receiver"] == "second"
        assert cli_hook.wait(1)[0]["alerts"][0]["labels"]["alertname"] == "nccl-error"
        time.sleep(0.5)
        assert rec.json() == []
    finally:
        d.stop()
        other.close()
        cli_hook.close()


def test_stuck_request_is_state_like_in_the_daemon(tmp_path, rec):
    d = Daemon(tmp_path, webhook(rec.url), timers="[daemon]\nstuck_after = 1\n[alerts]\ngroup_wait = 0\ngroup_interval = 0.5\nresolve_after = 1\n")
    d.start()
    try:
        rid = "chatcmpl-5a5a5a5a5a5a5a5a"
        # a first request that ends shows this server logs request ends (access lines): only then can
        # a request without one be stuck (vLLM 0.11+ logs no finish line of its own)
        done = "chatcmpl-4b4b4b4b4b4b4b4b"
        d.write(f"(APIServer pid=1) INFO 01-24 09:59:58 [request_logger.py:65] Received request {done}: params: SamplingParams(n=1, max_tokens=64), lora_request: None.\n"
                f"(APIServer pid=1) INFO 01-24 09:59:58 [async_llm.py:578] Added request {done}-0badf00d.\n"
                'INFO:     127.0.0.1:39999 - "POST /v1/chat/completions HTTP/1.1" 200 OK\n')
        d.write(f"(APIServer pid=1) INFO 01-24 10:00:00 [request_logger.py:65] Received request {rid}: params: SamplingParams(n=1, max_tokens=64), lora_request: None.\n"
                f"(APIServer pid=1) INFO 01-24 10:00:00 [async_llm.py:578] Added request {rid}-0badf00d.\n")
        (b,) = rec.wait(1)
        assert b["alerts"][0]["labels"]["alertname"] == "stuck-request" and rid in b["alerts"][0]["annotations"]["request_ids"]
        time.sleep(2.0)
        assert len(rec.json()) == 1  # resolve_after does not apply to a state: still stuck, still firing
        d.write('INFO:     127.0.0.1:40000 - "POST /v1/chat/completions HTTP/1.1" 200 OK\n')
        b2 = rec.wait(2)[1]
        assert b2["status"] == "resolved" and b2["alerts"][0]["labels"]["alertname"] == "stuck-request"
    finally:
        d.stop()


def test_engine_death_in_a_real_log_pages_once_for_the_cascade(tmp_path, rec):
    """vLLM 0.32's own log of a worker killed by SIGKILL, then the proxy in front failing to reach
    it: the engine death pages; the request that failed with it and the proxy's refused upstream on
    the same host are inhibited."""
    from conftest import VLLM

    d = Daemon(tmp_path, webhook(rec.url), timers="[alerts]\ngroup_wait = 3\ngroup_interval = 1\nresolve_after = 600\n").start()
    try:
        d.write((VLLM / "kv-pressure-then-worker-sigkill.log").read_text(encoding="utf-8"))
        d.write('2026/11/22 18:23:21 [error] 29#29: *7 connect() failed (111: Connection refused) while connecting to upstream, '
                'client: 127.0.0.1, server: localhost, request: "POST /v1/chat/completions HTTP/1.1", '
                'upstream: "http://127.0.0.1:3001/v1/chat/completions", host: "localhost:8000"\n')
        doc = wait_for(lambda: len((j := json.loads(d.cli("alerts", "--json").stdout))["silenced"]) >= 2 and len(j["firing"]) >= 3 and j,
                       what="the alerts", timeout=40)
        rec.wait(3)
        time.sleep(1.5)
    finally:
        d.stop()
    paged = sorted(a["labels"]["alertname"] for b in rec.json() for a in b["alerts"])
    assert paged == ["engine-dead", "kv-cache-full", "worker-killed"]
    # the cascade is inhibited: the proxy's refused upstream and the request that failed with the engine
    muted = {a["labels"]["alertname"]: a["inhibited_by"] for a in doc["silenced"]}
    assert sorted(muted) == ["request-failed-engine-dead", "upstream-refused"]
    assert all(by in ("engine-dead", "worker-killed") for by in muted.values())


def test_a_stuck_request_pushed_out_of_the_assembler_does_not_keep_its_alert_firing(tmp_path, rec):
    """With room for 3 open requests, a stuck one is pushed out by newer ones: it can never be seen
    to end now, so diag reports it as never completed and the stuck-request alert resolves."""
    d = Daemon(tmp_path, webhook(rec.url), timers="[daemon]\nstuck_after = 1\nmax_open_traces = 3\n"
               "[alerts]\ngroup_wait = 0\ngroup_interval = 0.5\nresolve_after = 1\n")
    d.start()

    def received(rid: str) -> str:
        return (f"(APIServer pid=1) INFO 01-24 10:00:00 [request_logger.py:65] Received request {rid}: params: "
                f"SamplingParams(n=1, max_tokens=64), lora_request: None.\n"
                f"(APIServer pid=1) INFO 01-24 10:00:00 [async_llm.py:578] Added request {rid}-0badf00d.\n")

    ok = 'INFO:     127.0.0.1:39999 - "POST /v1/chat/completions HTTP/1.1" 200 OK\n'
    try:
        d.write(received("chatcmpl-4b4b4b4b4b4b4b4b") + ok)  # this server logs request ends
        stuck = "chatcmpl-5a5a5a5a5a5a5a5a"
        d.write(received(stuck))
        (b,) = rec.wait(1)
        assert b["status"] == "firing" and stuck in b["alerts"][0]["annotations"]["request_ids"]
        # three newer requests, all answered at once: the stuck one is pushed out of the open set
        d.write("".join(received(f"chatcmpl-{c * 16}") for c in "cde") + ok * 3)
        wait_for(lambda: any(b["status"] == "resolved" and b["alerts"][0]["labels"]["alertname"] == "stuck-request"
                             for b in rec.json()), what="the stuck-request alert resolved", timeout=10)
        gave_up = [a for b in rec.json() if b["status"] == "firing" for a in b["alerts"]
                   if a["labels"]["alertname"] == "request-never-completed"]
        assert gave_up and stuck in gave_up[0]["annotations"]["request_ids"]
    finally:
        d.stop()
