"""Each sink against a real receiver: payload shapes, signatures checked with the documented
algorithms (and fixed vectors), size limits, rate limits, retries; email through a real SMTP
server (aiosmtpd), exec through a real program; `diag alerts test` end to end."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from urllib.parse import parse_qs, quote_plus, urlsplit

import pytest

from conftest import Receiver, free_port, self_signed
from diag.alerts.config import AlertsConfig, SinkConfig, parse
from diag.alerts.manager import AlertManager
from diag.alerts.outbox import Sender
from diag.alerts.sinks import DeliveryError, build
from diag.alerts.sinks.chat import dingtalk_sign, feishu_sign
from diag.alerts.sinks.http import signature
from diag.analysis.findings import Hit
from diag.store.db import Store


# Fixed vectors, computed independently with `openssl dgst -sha256 -hmac … -binary | base64`.
def test_signature_vectors():
    assert feishu_sign("1700000000", "SECtest") == "G7XpBpG8NgG02fJOAhX6FRAObIljmFoxVReo8I62pEk="
    assert dingtalk_sign("1700000000000", "SECtest") == quote_plus("aZLLrriXgn05YbwaGR7knYsLeJADjr9NwLaNNKpxh4g=")
    assert signature("s3cret", b'{"a":1}') == "sha256=5910e62016ef5034272c926c27071992a465c2335cecf41851bda071577f4f6d"


def notification(ruleset, n_alerts=1, status_resolve=False, sink="x", summary_field="2.31 GiB"):
    """A real notification document: hits through the manager, as the daemon makes them."""
    cfg = AlertsConfig(group_wait=0, group_interval=1, resolve_after=5, sinks=[SinkConfig(sink, "webhook", url="http://x/")])
    m = AlertManager(cfg, ruleset, host="gpu-node-1")
    for i in range(n_alerts):
        m.hit(Hit(ruleset.by_id("cuda-oom"), 1700000000.0, f"/var/log/vllm/{i}.log", 3, {"size": summary_field, "gpu": "0"},
                  "chatcmpl-1", "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.31 GiB."), 0.0, "vllm", "qwen3-vl")
    docs = [json.loads(p) for *_x, p, _t in m.process(0.0).outbox]
    if status_resolve:
        docs = [json.loads(p) for *_x, p, _t in m.process(10.0).outbox]
    return docs[0]


def test_webhook_alertmanager_format_and_hmac(ruleset, receiver):
    r = receiver
    sink = build(SinkConfig("hook", "webhook", url=r.url + "/in", secret="k3y", headers={"X-Site": "bank-1"}))
    doc = notification(ruleset)
    sink.send([doc])
    (req,) = r.requests
    body = req["body"]
    want = "sha256=" + hmac.new(b"k3y", body, hashlib.sha256).hexdigest()
    assert req["headers"]["x-diag-signature"] == want and req["headers"]["x-site"] == "bank-1"
    got = json.loads(body)
    assert set(got) >= {"version", "groupKey", "status", "receiver", "groupLabels", "commonLabels", "commonAnnotations",
                        "externalURL", "alerts", "truncatedAlerts", "notification_id"}
    assert got["version"] == "4" and got["receiver"] == "hook"
    a = got["alerts"][0]
    assert set(a) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert a["labels"] == {"alertname": "cuda-oom", "severity": "critical", "category": "oom", "server": "vllm",
                           "source": "/var/log/vllm/0.log", "host": "gpu-node-1", "model": "qwen3-vl"}
    assert a["annotations"]["url"] == "http://127.0.0.1:8765/findings?rule=cuda-oom"
    assert a["endsAt"] == "0001-01-01T00:00:00Z"
    r.status = 500
    with pytest.raises(DeliveryError, match="HTTP 500"):
        sink.send([doc])


def test_webhook_over_https_with_a_private_ca(tmp_path, ruleset):
    cert, key = self_signed(tmp_path)
    r = Receiver(tls=(cert, key))
    try:
        build(SinkConfig("tls", "webhook", url=r.url + "/in", ca_file=str(cert))).send([notification(ruleset)])
        assert r.json()[0]["receiver"] == "tls"
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            build(SinkConfig("tls", "webhook", url=r.url + "/in")).send([notification(ruleset)])  # not trusted without it
    finally:
        r.close()


def test_feishu_signature_in_body(ruleset, receiver):
    r = receiver
    build(SinkConfig("fs", "feishu", url=r.url + "/open-apis/bot/v2/hook/tok", secret="SECabc")).send([notification(ruleset)])
    (req,) = r.requests
    body = json.loads(req["body"])
    ts = body["timestamp"]
    assert abs(int(ts) - time.time()) < 30  # seconds
    expect = base64.b64encode(hmac.new(f"{ts}\nSECabc".encode(), b"", hashlib.sha256).digest()).decode()
    assert body["sign"] == expect and body["msg_type"] == "text"
    assert "cuda-oom" in body["content"]["text"] and "qwen3-vl" in body["content"]["text"]
    assert len(req["body"]) <= 20 * 1024


def test_dingtalk_signature_in_query(ruleset, receiver):
    r = receiver
    build(SinkConfig("dt", "dingtalk", url=r.url + "/robot/send?access_token=T0K", secret="SECdt")).send([notification(ruleset)])
    (req,) = r.requests
    q = parse_qs(urlsplit(req["path"]).query)
    ts = q["timestamp"][0]
    assert abs(int(ts) / 1000 - time.time()) < 30  # milliseconds
    expect = base64.b64encode(hmac.new(b"SECdt", f"{ts}\nSECdt".encode(), hashlib.sha256).digest()).decode()
    assert q["sign"][0] == expect and q["access_token"] == ["T0K"]
    body = json.loads(req["body"])
    assert body["msgtype"] == "markdown" and body["markdown"]["title"].startswith("[FIRING:1] cuda-oom")


def test_wecom_markdown_within_4096_bytes_on_utf8_boundary(ruleset, receiver):
    r = receiver
    doc = notification(ruleset, n_alerts=40, summary_field="显存" * 30)
    build(SinkConfig("wc", "wecom", url=r.url + "/cgi-bin/webhook/send", secret="KEY-1")).send([doc])
    (req,) = r.requests
    assert parse_qs(urlsplit(req["path"]).query)["key"] == ["KEY-1"]
    content = json.loads(req["body"])["markdown"]["content"]
    assert 4000 < len(content.encode("utf-8")) <= 4096 and content.endswith("…")
    r.answer = b'{"errcode":93000,"errmsg":"invalid webhook url"}'
    with pytest.raises(DeliveryError, match="93000"):
        build(SinkConfig("wc", "wecom", url=r.url + "/x?key=bad")).send([doc])


def outbox_rows(db, sink, docs, now):
    for d in docs:
        db.execute("INSERT INTO outbox (notification_id, sink, payload, created_at, next_attempt) VALUES (?,?,?,?,?)",
                   (d["notification_id"], sink, json.dumps(d), now, now))


def test_rate_limit_merges_overflow_into_next_message(tmp_path, ruleset, receiver):
    r = receiver
    store = Store(tmp_path / "s.sqlite3")
    cfg = AlertsConfig(sinks=[SinkConfig("wc", "wecom", url=r.url + "/send?key=k", rate_limit=2)])
    sender = Sender(store.path, cfg)
    docs = [dict(notification(ruleset), notification_id=f"n{i}") for i in range(5)]
    outbox_rows(store.db, "wc", docs[:1], 0.0)
    sender.step(store.db, 0.0)
    outbox_rows(store.db, "wc", docs[1:2], 1.0)
    sender.step(store.db, 1.0)
    outbox_rows(store.db, "wc", docs[2:], 2.0)
    sender.step(store.db, 2.0)
    sender.step(store.db, 30.0)
    assert len(r.requests) == 2  # held back by the limit (2 per minute), not dropped
    sender.step(store.db, 61.0)
    assert len(r.requests) == 3
    last = json.loads(r.requests[-1]["body"])["markdown"]["content"]
    assert "3 notifications were held back" in last and "n4" in last
    states = [s for (s,) in store.db.execute("SELECT state FROM outbox ORDER BY id")]
    assert states == ["delivered"] * 5


def test_receiver_down_backoff_then_delivered_and_max_age(tmp_path, ruleset, caplog):
    r = Receiver(status=503)
    store = Store(tmp_path / "s.sqlite3")
    try:
        cfg = AlertsConfig(backoff_max=30, max_age=3600, sinks=[SinkConfig("hook", "webhook", url=r.url)])
        sender = Sender(store.path, cfg)
        outbox_rows(store.db, "hook", [dict(notification(ruleset), notification_id=f"n{i}") for i in range(3)], 0.0)
        now, waits = 0.0, []
        for _ in range(8):
            sender.step(store.db, now)
            nxt = store.db.execute("SELECT next_attempt FROM outbox WHERE id = 1").fetchone()[0]
            waits.append(round(nxt - now, 3))
            now = nxt
        assert waits[:7] == [1, 2, 4, 8, 16, 30, 30]  # exponential, capped at backoff_max
        row = store.db.execute("SELECT attempts, last_error FROM outbox WHERE id = 1").fetchone()
        assert row[0] == 8 and "HTTP 503" in row[1]
        r.status = 200
        for _ in range(5):
            sender.step(store.db, now)
            now += 1
        assert [b["notification_id"] for b in r.json()] == ["n0", "n1", "n2"]  # in order, none lost
        outbox_rows(store.db, "hook", [dict(notification(ruleset), notification_id="old")], now)
        r.status = 503
        sender.step(store.db, now)
        sender.step(store.db, now + 3601)
        assert store.db.execute("SELECT state FROM outbox WHERE notification_id = 'old'").fetchone()[0] == "expired"
        assert "expired undelivered" in caplog.text
    finally:
        r.close()


def test_alertmanager_sink_posts_v2_alerts(ruleset, receiver):
    r = receiver
    cfg = AlertsConfig(group_wait=0, group_interval=1, resolve_after=65, resend_interval=60,
                       sinks=[SinkConfig("am", "alertmanager", url=f"{r.url},{r.url}/second")])
    m = AlertManager(cfg, ruleset, host="h")
    m.hit(Hit(ruleset.by_id("cuda-oom"), None, "/v.log", 1, {}, None, ""), 0.0, "vllm")
    sink = build(cfg.sinks[0])
    for t in (0.0, 30.0, 61.0, 70.0):
        for *_x, p, _t in m.process(t).outbox:
            sink.send([json.loads(p)])
    paths = [q["path"] for q in r.requests]
    assert paths == ["/api/v2/alerts", "/second/api/v2/alerts"] * 3  # new, re-sent after 60 s, resolved
    bodies = r.json()
    assert all(isinstance(b, list) and b[0]["labels"]["alertname"] == "cuda-oom" for b in bodies)
    assert "endsAt" not in bodies[0][0] and "endsAt" not in bodies[2][0] and bodies[4][0]["endsAt"].endswith("Z")


def test_exec_sink(tmp_path, ruleset):
    out = tmp_path / "got.json"
    script = tmp_path / "hook.sh"
    script.write_text(f"#!/bin/sh\ncat > {out}\n[ -f {tmp_path}/fail ] && {{ echo boom >&2; exit 3; }}\nexit 0\n")
    script.chmod(0o755)
    sink = build(SinkConfig("run", "exec", command=[str(script)], timeout=5))
    sink.send([notification(ruleset)])
    assert json.loads(out.read_text())["alerts"][0]["labels"]["alertname"] == "cuda-oom"
    (tmp_path / "fail").write_text("")
    with pytest.raises(DeliveryError, match="exited 3: boom"):
        sink.send([notification(ruleset)])
    slow = build(SinkConfig("slow", "exec", command=["sleep", "5"], timeout=0.3))
    with pytest.raises(DeliveryError, match="longer than"):
        slow.send([notification(ruleset)])


def test_email_through_a_real_smtp_server_with_starttls(tmp_path, ruleset):
    aiosmtpd = pytest.importorskip("aiosmtpd.controller", reason="aiosmtpd (test extra) not installed")
    import ssl

    cert, key = self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    got = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            got.append((envelope.mail_from, envelope.rcpt_tos, envelope.content.decode("utf-8", "replace"), session.ssl is not None))
            return "250 OK"

    port = free_port()
    c = aiosmtpd.Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True)
    c.start()
    try:
        sink = build(SinkConfig("mail", "email", host="127.0.0.1", port=port, sender="diag@node", to=["ops@bank"], ca_file=str(cert)))
        sink.send([notification(ruleset)])
        (frm, to, content, tls) = got[0]
        assert frm == "diag@node" and to == ["ops@bank"] and tls
        assert "Subject: [diag] [FIRING:1] cuda-oom" in content and "X-Diag-Notification-Id" in content
        with pytest.raises(DeliveryError, match="SMTP"):
            build(SinkConfig("mail", "email", host="127.0.0.1", port=free_port(), sender="a@b", to=["c@d"])).send([notification(ruleset)])
    finally:
        c.stop()


def test_cli_alerts_test_reports_each_sink(tmp_path, receiver):
    r = receiver
    cfg = tmp_path / "diag.toml"
    cfg.write_text(f'[[alerts.sink]]\nname = "good"\ntype = "webhook"\nurl = "{r.url}/ok"\n'
                   f'[[alerts.sink]]\nname = "dead"\ntype = "webhook"\nurl = "http://127.0.0.1:{free_port()}/x"\ntimeout = 2\n')
    run = [sys.executable, "-m", "diag", "alerts", "test", "--config", str(cfg), "--state-dir", str(tmp_path)]
    out = subprocess.run(run, capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "good (webhook): delivered" in out.stdout and "dead (webhook): FAILED" in out.stdout
    assert r.json()[0]["alerts"][0]["labels"]["alertname"] == "diag-test"
    out = subprocess.run(run + ["--sink", "good"], capture_output=True, text=True)
    assert out.returncode == 0 and "dead" not in out.stdout
    out = subprocess.run(run + ["--sink", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "no sink named nope" in out.stderr
    chk = subprocess.run([sys.executable, "-m", "diag", "daemon", "--check-config", "--config", str(cfg)], capture_output=True, text=True)
    assert chk.returncode == 0 and "journal + 2 sink(s)" in chk.stdout
    cfg.write_text('[[alerts.sink]]\ntype = "feishu"\nurl = "https://open.feishu.cn/x"\nsecret_file = "/nonexistent/secret"\n')
    chk = subprocess.run([sys.executable, "-m", "diag", "daemon", "--check-config", "--config", str(cfg)], capture_output=True, text=True)
    assert chk.returncode == 2 and "cannot read secret_file" in chk.stderr


def test_parse_cli_webhooks():
    cfg = parse({}, ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"])
    assert [s.url for s in cfg.sinks] == ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]
