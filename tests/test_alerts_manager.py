"""The alert model and manager in-process, over real rules: fingerprints, grouping timers,
event-like and state-like resolution, inhibition, silences, config and matchers."""

from __future__ import annotations

import json
import sqlite3
import tomllib

import pytest

from diag.daemon import config
from diag.alerts import silences as sil
from diag.alerts.config import AlertConfigError, AlertsConfig, SinkConfig, parse
from diag.alerts.manager import AlertManager
from diag.alerts.model import fingerprint
from diag.alerts.sinks.text import truncate_utf8
from diag.analysis.findings import Hit
from diag.store.db import Store


def test_fingerprint_matches_alertmanager():
    # Fingerprints a real Alertmanager 0.25 reported for these label sets (reference notes §4.2).
    labels = {"alertname": "DiagEngineOOM", "instance": "gpu-node-1", "model": "qwen2-vl-7b", "severity": "critical", "source": "diag"}
    assert fingerprint(labels) == "0953fe8157850469"
    assert fingerprint(dict(reversed(list(labels.items())))) == "0953fe8157850469"  # order does not matter
    assert fingerprint({**labels, "instance": "gpu-node-2"}) != "0953fe8157850469"


def hit(rs, rule_id, path="/var/log/vllm.log", ts=1000.0, rid=None, **fields):
    return Hit(rs.by_id(rule_id), ts, path, 1, fields, rid, f"excerpt of {rule_id}")


def manager(rs, **timers):
    cfg = AlertsConfig(sinks=[SinkConfig("hook", "webhook", url="http://127.0.0.1:9/x")])
    for k, v in timers.items():
        setattr(cfg, k, v)
    return AlertManager(cfg, rs, host="h1")


def sent(changes):
    return [json.loads(p) for _nid, sink, p, _t in changes.outbox]


def test_burst_is_one_notification_then_one_resolved(ruleset):
    m = manager(ruleset, group_wait=10, group_interval=300, resolve_after=900)
    for i in range(1000):
        m.hit(hit(ruleset, "cuda-oom", ts=1000.0 + i / 100, size="2.31 GiB"), now=100.0 + i / 100, server="vllm")
    assert sent(m.process(105.0)) == []  # group_wait: collecting
    docs = sent(m.process(110.0))
    assert len(docs) == 1
    d = docs[0]
    assert d["version"] == "4" and d["status"] == "firing" and len(d["alerts"]) == 1
    assert d["alerts"][0]["annotations"]["count"] == "1000"
    assert d["groupLabels"] == {"alertname": "cuda-oom", "server": "vllm"}
    assert d["groupKey"] == '{}:{alertname="cuda-oom", server="vllm"}'
    assert d["alerts"][0]["fingerprint"] == fingerprint(d["alerts"][0]["labels"])
    assert sent(m.process(500.0)) == []  # nothing new; repeat_interval (4 h) not reached
    # event-like: resolved resolve_after (900 s) after the last hit; the group reports it at its next flush
    assert sent(m.process(109.0 + 899)) == []
    docs = sent(m.process(109.99 + 900 + 300))
    assert [x["status"] for x in docs] == ["resolved"]
    assert docs[0]["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    assert m.alerts == {} and m.groups == {}


def test_repeat_interval_and_group_interval(ruleset):
    m = manager(ruleset, group_wait=0, group_interval=60, repeat_interval=600, resolve_after=10_000)
    m.hit(hit(ruleset, "cuda-oom"), now=0.0, server="vllm")
    assert len(sent(m.process(0.0))) == 1
    m.hit(hit(ruleset, "nccl-error"), now=5.0, server="vllm")  # another group: its own group_wait
    assert len(sent(m.process(5.0))) == 1
    m.hit(hit(ruleset, "cuda-oom", path="/var/log/other.log"), now=10.0, server="vllm")  # joins the cuda-oom group
    assert sent(m.process(30.0)) == []  # group_interval not yet over
    docs = sent(m.process(60.0))
    assert len(docs) == 1 and len(docs[0]["alerts"]) == 2
    assert sent(m.process(300.0)) == []
    assert len(sent(m.process(660.0))) == 2  # both groups repeat after repeat_interval


def test_inhibition_engine_death_mutes_the_cascade(ruleset):
    m = manager(ruleset, group_wait=5, resolve_after=10_000)
    m.hit(hit(ruleset, "request-failed-engine-dead", rid="chatcmpl-1"), now=0.0, server="vllm")
    m.hit(hit(ruleset, "engine-dead"), now=1.0, server="vllm")
    m.hit(hit(ruleset, "upstream-refused", path="/var/log/proxy.log"), now=2.0, server="proxy")
    docs = sent(m.process(10.0))
    assert [d["alerts"][0]["labels"]["alertname"] for d in docs] == ["engine-dead"]  # one root cause pages once
    muted = {a.rule: a.inhibited_by for a in m.alerts.values() if a.inhibited_by}
    assert muted == {"request-failed-engine-dead": "engine-dead", "upstream-refused": "engine-dead"}
    # another host is not inhibited
    other = AlertManager(m.cfg, ruleset, host="h2")
    other.hit(hit(ruleset, "request-failed-engine-dead", rid="chatcmpl-2"), now=0.0, server="vllm")
    assert len(sent(other.process(10.0))) == 1


def test_state_like_stuck_request_resolves_when_the_request_ends(ruleset):
    m = manager(ruleset, group_wait=0, group_interval=1, resolve_after=5)
    m.hit(hit(ruleset, "stuck-request", rid="chatcmpl-a", request_id="chatcmpl-a"), now=0.0, server="vllm")
    m.hit(hit(ruleset, "stuck-request", rid="chatcmpl-b", request_id="chatcmpl-b"), now=0.0, server="vllm")
    assert [d["status"] for d in sent(m.process(0.0))] == ["firing"]
    assert sent(m.process(100.0)) == []  # not resolved by time: it is a state
    m.trace_closed("chatcmpl-a", 101.0)
    assert sent(m.process(102.0)) == []  # b is still stuck
    m.trace_closed("chatcmpl-b", 103.0)
    assert [d["status"] for d in sent(m.process(104.0))] == ["resolved"]


def test_state_like_event_rule_clears(ruleset):
    m = manager(ruleset, group_wait=0, group_interval=1)
    m.hit(hit(ruleset, "engine-stalled", waiting="7"), now=0.0, server="vllm")
    assert len(sent(m.process(0.0))) == 1
    m.cleared("engine-stalled", "/var/log/other.log", 5.0)  # another source: still stalled here
    assert sent(m.process(5.0)) == []
    m.cleared("engine-stalled", "/var/log/vllm.log", 6.0)
    assert [d["status"] for d in sent(m.process(7.0))] == ["resolved"]


def test_silence_mutes_notifications_not_alerts(ruleset):
    m = manager(ruleset, group_wait=0, group_interval=1, resolve_after=5)
    m.set_silences([sil.Silence("s1", [sil.Matcher.parse("alertname=cuda-oom"), sil.Matcher.parse("server=~vl+m")], 0, 50)])
    m.hit(hit(ruleset, "cuda-oom"), now=1.0, server="vllm")
    m.hit(hit(ruleset, "nccl-error"), now=1.0, server="vllm")
    docs = sent(m.process(1.0))
    assert [d["alerts"][0]["labels"]["alertname"] for d in docs] == ["nccl-error"]
    a = next(a for a in m.alerts.values() if a.rule == "cuda-oom")
    assert a.silenced_by == ["s1"] and a.status == "firing"
    # a resolution of something never paged is not sent either
    assert [d["alerts"][0]["labels"]["alertname"] for d in sent(m.process(20.0))] == ["nccl-error"]


def test_sink_filters_and_send_resolved(ruleset):
    cfg = AlertsConfig(group_wait=0, group_interval=1, resolve_after=5, sinks=[
        SinkConfig("crit", "webhook", url="http://x/", min_severity="critical", send_resolved=False),
        SinkConfig("oom", "webhook", url="http://x/", categories=["oom"])])
    m = AlertManager(cfg, ruleset, host="h")
    m.hit(hit(ruleset, "cuda-oom"), now=0.0, server="vllm")  # critical, oom
    m.hit(hit(ruleset, "nccl-error"), now=0.0, server="vllm")  # error, engine
    got = sorted((sink, json.loads(p)["alerts"][0]["labels"]["alertname"]) for _n, sink, p, _t in m.process(0.0).outbox)
    assert got == [("crit", "cuda-oom"), ("oom", "cuda-oom")]
    got = sorted((sink, json.loads(p)["status"]) for _n, sink, p, _t in m.process(10.0).outbox)
    assert got == [("oom", "resolved")]


def test_state_survives_a_restart(tmp_path, ruleset):
    store = Store(tmp_path / "s.sqlite3")
    m = manager(ruleset, group_wait=0, group_interval=1, resolve_after=5)
    m.hit(hit(ruleset, "cuda-oom"), now=0.0, server="vllm")
    ch = m.process(0.0)
    store.commit([], [], [], {}, extra=ch.write)
    m2 = manager(ruleset, group_wait=0, group_interval=1, resolve_after=5)
    m2.load(store.db)
    assert sent(m2.process(1.0)) == []  # already notified before the restart
    assert [d["status"] for d in sent(m2.process(10.0))] == ["resolved"]
    assert store.db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1


def test_matchers_and_durations():
    m = sil.Matcher.parse('server!="vllm"')
    assert (m.name, m.op, m.value) == ("server", "!=", "vllm")
    assert sil.Matcher.parse("alertname=~cuda-.*").matches({"alertname": "cuda-oom"})
    assert not sil.Matcher.parse("alertname=~cuda").matches({"alertname": "cuda-oom"})  # anchored, as in Alertmanager
    assert sil.Matcher.parse("model!~qwen.*").matches({"model": "llama"})
    for bad in ("alertname", "=x", "a=~(", "9a=b"):
        with pytest.raises(sil.MatcherError):
            sil.Matcher.parse(bad)
    assert sil.parse_duration("2h") == 7200 and sil.parse_duration("1d12h") == 129600 and sil.parse_duration("90") == 90
    with pytest.raises(sil.MatcherError):
        sil.parse_duration("2 hours")


def test_silence_storage(tmp_path):
    db = Store(tmp_path / "s.sqlite3").db
    s = sil.add(db, [sil.Matcher.parse("alertname=cuda-oom")], 3600, "maintenance", "ops", now=1000.0)
    assert [x.id for x in sil.load(db, now=2000.0)] == [s.id]
    assert sil.load(db, now=5000.0) == []
    assert sil.expire(db, s.id[:8], now=2000.0).id == s.id
    assert sil.load(db, now=2001.0) == [] and len(sil.load(db, include_expired=True)) == 1
    assert sil.expire(db, s.id, now=2002.0) is None


def test_silence_id_prefixes_are_literal(tmp_path):
    """`diag silence expire` takes a prefix as typed: no LIKE wildcards, no empty prefix, case kept."""
    db = Store(tmp_path / "s.sqlite3").db
    s = sil.add(db, [sil.Matcher.parse("alertname=cuda-oom")], 3600, "maintenance", "ops", now=1000.0)
    for prefix in ("", "%", "_", s.id[:4].upper() if s.id[:4].upper() != s.id[:4] else "Z" + s.id[:3]):
        assert sil.expire(db, prefix, now=2000.0) is None, prefix
    assert sil.load(db, now=2000.0)[0].id == s.id  # still active


def test_a_repeated_line_counts_as_often_as_it_repeated(ruleset):
    """Ray's "[repeated 7x across cluster]" is seven OOMs, in the alert as in the findings."""
    m = manager(ruleset, group_wait=0, group_interval=1, resolve_after=5)
    h = hit(ruleset, "cuda-oom")
    h.count = 7
    m.hit(h, now=1.0, server="vllm")
    m.hit(hit(ruleset, "cuda-oom"), now=1.0, server="vllm")
    (a,) = m.alerts.values()
    assert a.count == 8


def test_truncate_on_utf8_boundary():
    text = "显存不足" * 2000
    for limit in range(10, 40):
        out = truncate_utf8(text, limit)
        b = out.encode("utf-8")
        assert len(b) <= limit and out.endswith("…")
        b.decode("utf-8")  # valid: no character split
    assert truncate_utf8("short", 100) == "short"


def test_config_parsing_secrets_and_errors(tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    monkeypatch.setenv("DIAG_TEST_HOOK_URL", "http://127.0.0.1:1/hook")
    cfg = parse({"group_wait": 0, "group_by": ["alertname"], "sink": [
        {"name": "a", "type": "webhook", "url_env": "DIAG_TEST_HOOK_URL", "secret_file": str(secret)},
        {"name": "d", "type": "dingtalk", "url": "https://oapi.dingtalk.com/robot/send?access_token=t", "secret_env": "DIAG_TEST_HOOK_URL"},
        {"name": "w", "type": "wecom", "secret": "k"}]})
    assert cfg.group_wait == 0 and cfg.group_by == ["alertname"]
    a, d, w = cfg.sinks
    assert a.url == "http://127.0.0.1:1/hook" and a.secret == "from-file"
    assert d.rate_limit == 20 and w.rate_limit == 20 and a.rate_limit == 0
    for bad, msg in [({"sink": [{"type": "pager"}]}, "type must be"), ({"sink": [{"type": "webhook", "url": "ftp://x"}]}, "not an http"),
                     ({"sink": [{"type": "webhook", "url": "http://x", "secret_file": "/nonexistent"}]}, "cannot read"),
                     ({"sink": [{"type": "webhook", "url_env": "DIAG_NOT_SET_ANYWHERE"}]}, "not set"),
                     ({"sink": [{"type": "exec", "command": ["/no/such/program"]}]}, "not found"),
                     ({"sink": [{"type": "webhook", "url": "http://x", "colour": "red"}]}, "unknown setting"),
                     ({"group_wait": "10s"}, "number of seconds"), ({"bogus": 1}, "no setting")]:
        with pytest.raises(AlertConfigError, match=msg):
            parse(bad)


def test_example_config_documents_alerts(tmp_path):
    doc = tomllib.loads(config.example_path().read_text())
    assert "alerts" in doc and doc["alerts"]["group_wait"] == 10
    cfg = config.Config()
    config.apply(cfg, doc)
    assert parse(cfg.alerts_doc).group_interval == 300


def test_rule_fields_inhibits_and_state(ruleset):
    dead = ruleset.by_id("engine-dead")
    assert "stuck-request" in dead.inhibits["rules"] and dead.inhibits["window"] == 600
    assert ruleset.by_id("stuck-request").state and ruleset.by_id("engine-stalled").state
    assert not ruleset.by_id("cuda-oom").state


def test_outbox_migration_is_in_the_store(tmp_path):
    s = Store(tmp_path / "s.sqlite3")
    tables = {r[0] for r in s.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"alerts", "alert_groups", "silences", "outbox"} <= tables
    with pytest.raises(sqlite3.IntegrityError):
        s.db.execute("INSERT INTO outbox (notification_id, sink) VALUES ('x', 'y')")


def test_inhibition_survives_a_restart(tmp_path, ruleset):
    store = Store(tmp_path / "s.sqlite3")
    m = manager(ruleset, group_wait=0, resolve_after=10_000)
    m.hit(hit(ruleset, "engine-dead"), now=0.0, server="vllm")
    store.commit([], [], [], {}, extra=m.process(0.0).write)
    m2 = manager(ruleset, group_wait=0, resolve_after=10_000)
    m2.load(store.db)
    m2.hit(hit(ruleset, "stuck-request", rid="chatcmpl-x", request_id="chatcmpl-x"), now=5.0, server="vllm")
    assert sent(m2.process(5.0)) == []
    assert next(a for a in m2.alerts.values() if a.rule == "stuck-request").inhibited_by == "engine-dead"


def test_external_url_follows_the_dashboards_listen_address(ruleset):
    import socket

    assert parse({}).external_url == "http://127.0.0.1:8765"  # the dashboard's default
    assert parse({}, web_listen="127.0.0.1:9100").external_url == "http://127.0.0.1:9100"
    assert parse({}, web_listen="9100").external_url == "http://127.0.0.1:9100"
    assert parse({}, web_listen="[::1]:9100").external_url == "http://[::1]:9100"
    assert parse({}, web_listen="0.0.0.0:9100").external_url == f"http://{socket.getfqdn()}:9100"  # a wildcard bind: this host
    assert parse({"external_url": "https://diag.bank.internal/"}, web_listen="0.0.0.0:9100").external_url == "https://diag.bank.internal"
    # no dashboard (--no-web): no link that would lead nowhere
    m = AlertManager(parse({"group_wait": 0, "sink": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/x"}]},
                           web_listen=None), ruleset, host="h1")
    m.hit(hit(ruleset, "cuda-oom"), 1000.0, "vllm")
    (doc,) = sent(m.process(1000.0))
    assert "url" not in doc["alerts"][0]["annotations"] and doc["alerts"][0]["generatorURL"] == "" and doc["externalURL"] == ""
