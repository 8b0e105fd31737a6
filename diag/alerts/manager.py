"""From hits to notifications, on Alertmanager's model.

Hits become alerts (one per label set); alerts are grouped by `group_by`; a group is notified
`group_wait` after it appears, then at most every `group_interval` when it changed, and again
every `repeat_interval` while it fires. Event-like alerts resolve `resolve_after` seconds after
their last hit; state-like ones when their condition clears. Silenced and inhibited alerts are
tracked but not notified. All of it runs in the daemon's main loop: `process()` returns the rows
to write in the same transaction as the findings and offsets that caused them, so alert state,
outbox and read position never disagree after a crash.
"""

from __future__ import annotations

import json
import socket
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from diag.alerts.config import AlertsConfig, SinkConfig
from diag.alerts.model import Alert, rfc3339
from diag.alerts.silences import Silence
from diag.analysis.findings import Hit
from diag.analysis.rules.ruleset import RuleSet

MAX_IDS = 200


@dataclass
class Inhibits:
    rules: frozenset[str]
    categories: frozenset[str]
    window: float

    def covers(self, labels: dict[str, str]) -> bool:
        return labels.get("alertname") in self.rules or labels.get("category") in self.categories


@dataclass
class Group:
    key: str
    labels: dict[str, str]
    fps: list[str] = field(default_factory=list)
    next_flush: float = 0.0
    last_notified: float | None = None
    last_sent: list[str] = field(default_factory=list)  # "fp:status" of what the last notification carried


@dataclass
class Changes:
    """What one commit writes besides findings and offsets, and what to do once it is durable."""

    alerts: dict[str, tuple[str, str, int, float, str]] = field(default_factory=dict)  # fp -> row
    groups: dict[str, str | None] = field(default_factory=dict)  # key -> data, None = delete
    outbox: list[tuple[str, str, str, float]] = field(default_factory=list)  # notification_id, sink, payload, created
    journal: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.alerts or self.groups or self.outbox)

    def write(self, db: Any) -> None:
        """Called inside the store's transaction (see `Store.commit(..., extra=)`)."""
        db.executemany("INSERT OR REPLACE INTO alerts (fp, rule, status, active, updated_at, data) VALUES (?,?,?,?,?,?)",
                       [(fp, *row) for fp, row in self.alerts.items()])
        db.executemany("DELETE FROM alert_groups WHERE key = ?", [(k,) for k, v in self.groups.items() if v is None])
        db.executemany("INSERT OR REPLACE INTO alert_groups (key, data) VALUES (?, ?)",
                       [(k, v) for k, v in self.groups.items() if v is not None])
        db.executemany("INSERT INTO outbox (notification_id, sink, payload, created_at, next_attempt) VALUES (?,?,?,?,?)",
                       [(nid, sink, payload, created, created) for nid, sink, payload, created in self.outbox])


class AlertManager:
    def __init__(self, cfg: AlertsConfig, ruleset: RuleSet | None = None, host: str | None = None):
        self.cfg = cfg
        self.host = host or socket.gethostname()
        self.alerts: dict[str, Alert] = {}
        self.groups: dict[str, Group] = {}
        self.silences: list[Silence] = []
        self.inhibits: dict[str, Inhibits] = {}
        self.state_rules: set[str] = set()
        self._open: dict[str, set[str]] = {}  # request id -> fps of state-like alerts waiting for it
        self._fp_cache: dict[tuple, tuple[str, dict[str, str]]] = {}
        self._inhibitor_seen: dict[tuple[str, str], float] = {}  # (rule, host) -> last hit (wall clock)
        self._dirty_alerts: set[str] = set()
        self._gone_alerts: dict[str, Alert] = {}
        self._dirty_groups: set[str] = set()
        self._next_due = float("inf")
        if ruleset is not None:
            self.set_rules(ruleset)

    def set_rules(self, ruleset: RuleSet) -> None:
        self.inhibits = {r.id: Inhibits(frozenset(r.inhibits.get("rules", ())), frozenset(r.inhibits.get("categories", ())),
                                        float(r.inhibits.get("window", 600)))
                         for r in ruleset.rules if getattr(r, "inhibits", None)}
        self.state_rules = {r.id for r in ruleset.rules if getattr(r, "state", False)}

    @property
    def group_sinks(self) -> list[SinkConfig]:
        return [s for s in self.cfg.sinks if s.type != "alertmanager"]

    # -- restore ------------------------------------------------------------------------------
    def load(self, db: Any) -> None:
        for (data,) in db.execute("SELECT data FROM alerts WHERE active = 1"):
            a = Alert.from_state(json.loads(data))
            self.alerts[a.fp] = a
            for rid in a.open_ids:
                self._open.setdefault(rid, set()).add(a.fp)
            if a.rule in self.inhibits:
                key = (a.rule, a.labels.get("host", self.host))
                self._inhibitor_seen[key] = max(self._inhibitor_seen.get(key, 0.0), a.last_hit_at)
        for (data,) in db.execute("SELECT data FROM alert_groups"):
            g = Group(**json.loads(data))
            g.fps = [fp for fp in g.fps if fp in self.alerts]
            self.groups[g.key] = g
        self._next_due = 0.0

    # -- input --------------------------------------------------------------------------------
    def hit(self, hit: Hit, now: float, server: str = "", model: str | None = None) -> None:
        r = hit.rule
        ck = (r.id, hit.path, server, model)
        got = self._fp_cache.get(ck)
        if got is None:
            labels = {"alertname": r.id, "severity": r.severity, "category": r.category, "server": server or "unknown",
                      "source": hit.path, "host": self.host}
            if model:
                labels["model"] = model
            if len(self._fp_cache) > 10000:
                self._fp_cache.clear()
            got = self._fp_cache[ck] = (Alert(labels, "", "", "", "", 0, 0).fp, labels)
        fp, labels = got
        a = self.alerts.get(fp)
        if a is None:
            a = self._new(Alert(dict(labels), r.title, r.summary, r.remedy, hit.excerpt, now, now, fields=dict(hit.fields), fp=fp,
                                state_like=r.id in self.state_rules))
        elif a.ends_at is not None:
            a.ends_at = None  # it came back before the resolution went out: still the same alert
            a.am_sent_at = 0.0  # Alertmanager may have been told it ended: tell it again now
        a.count += hit.count  # a Ray "[repeated 7x]" line counts 7, as in the findings
        a.last_hit_at = now
        if hit.ts is not None:
            a.first_seen = hit.ts if a.first_seen is None else min(a.first_seen, hit.ts)
            a.last_seen = hit.ts if a.last_seen is None else max(a.last_seen, hit.ts)
        rid = hit.request_id
        if rid and len(a.request_ids) < MAX_IDS and rid not in a.request_ids[-20:]:
            a.request_ids.append(rid)
        if a.state_like and r.scope == "trace" and rid:
            if rid not in a.open_ids:
                a.open_ids.append(rid)
            self._open.setdefault(rid, set()).add(fp)
        if r.id in self.inhibits:
            self._inhibitor_seen[(r.id, self.host)] = now
        self._dirty_alerts.add(fp)

    def condition(self, name: str, source: str, active: bool, now: float, *, severity: str = "error", title: str = "",
                  summary: str = "", remedy: str = "") -> None:
        """A state-like alert the daemon raises itself (a followed file unreadable, the store failing)."""
        labels = {"alertname": name, "severity": severity, "category": "diag", "server": "diag", "source": source, "host": self.host}
        a = next((x for x in self.alerts.values() if x.rule == name and x.labels["source"] == source), None)
        if active and (a is None or a.ends_at is not None):
            a = a or self._new(Alert(labels, title, summary, remedy, "", now, now, state_like=True, count=0))
            a.ends_at = None
            a.count += 1
            a.last_hit_at = now
            self._dirty_alerts.add(a.fp)
        elif not active and a is not None and a.ends_at is None:
            self._resolve(a, now)

    def trace_closed(self, tid: str, now: float) -> None:
        """A request left the in-flight state: state-like alerts waiting on it may clear."""
        fps = self._open.pop(tid, None)
        for fp in fps or ():
            a = self.alerts.get(fp)
            if a is not None and tid in a.open_ids:
                a.open_ids.remove(tid)
                self._dirty_alerts.add(fp)
                if not a.open_ids:
                    self._resolve(a, now)

    @property
    def waiting_on_traces(self) -> bool:
        return bool(self._open)

    @property
    def empty(self) -> bool:
        """No alert, group or change held: `process` has nothing to resolve, push, flush or write."""
        return not (self.alerts or self.groups or self._dirty_alerts or self._gone_alerts or self._dirty_groups)

    def cleared(self, rule_id: str, source: str, now: float) -> None:
        """A state-like event rule's condition no longer holds on this source."""
        for a in list(self.alerts.values()):
            if a.rule == rule_id and a.labels.get("source") == source and a.ends_at is None and a.state_like:
                self._resolve(a, now)

    def set_silences(self, silences: list[Silence]) -> None:
        self.silences = silences
        self._next_due = 0.0

    def _new(self, a: Alert) -> Alert:
        self.alerts[a.fp] = a
        gl = {k: a.labels.get(k, "") for k in self.cfg.group_by}
        key = "{}:{" + ", ".join(f'{k}="{v}"' for k, v in gl.items()) + "}"
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = Group(key, gl, next_flush=a.starts_at + self.cfg.group_wait)
        g.fps.append(a.fp)
        self._dirty_groups.add(key)
        self._next_due = min(self._next_due, g.next_flush)
        return a

    def _resolve(self, a: Alert, now: float) -> None:
        a.ends_at = now
        self._dirty_alerts.add(a.fp)
        self._next_due = 0.0

    # -- time passes ---------------------------------------------------------------------------
    def due(self, now: float) -> bool:
        return now >= self._next_due or bool(self._dirty_alerts)

    def process(self, now: float) -> Changes:
        """Resolve, mute, push to Alertmanager, flush due groups; the rows to commit."""
        if self.empty:
            # The common commit of a healthy server (tens a second when it writes each line on its own):
            # no alert to time out, resolve, mute, push or flush, no row to write, nothing due.
            self._next_due = float("inf")
            return Changes()
        c = Changes()
        nxt = float("inf")
        for a in self.alerts.values():
            if a.ends_at is None and not a.state_like:
                if now - a.last_hit_at >= self.cfg.resolve_after:
                    self._resolve(a, now)
                else:
                    nxt = min(nxt, a.last_hit_at + self.cfg.resolve_after)
        firing_rules = {(a.rule, a.labels.get("host")) for a in self.alerts.values() if a.ends_at is None and a.rule in self.inhibits}
        for a in self.alerts.values():
            self._mute(a, now, firing_rules)
        for s in self.cfg.sinks:
            if s.type == "alertmanager":
                nxt = min(nxt, self._push_am(s, now, c))
        for g in list(self.groups.values()):
            if now >= g.next_flush:
                self._flush(g, now, c)
            if g.key in self.groups:
                nxt = min(nxt, g.next_flush)
        for fp in self._dirty_alerts:
            a = self.alerts.get(fp) or self._gone_alerts.get(fp)
            if a is not None:
                c.alerts[fp] = (a.rule, a.status, int(fp in self.alerts), now, json.dumps(a.to_state(), ensure_ascii=False))
        for key in self._dirty_groups:
            g = self.groups.get(key)
            c.groups[key] = json.dumps(asdict(g)) if g is not None else None
        self._dirty_alerts.clear()
        self._gone_alerts.clear()
        self._dirty_groups.clear()
        self._next_due = nxt
        return c

    def _mute(self, a: Alert, now: float, firing_rules: set[tuple[str, str | None]]) -> None:
        silenced = [s.id for s in self.silences if s.active(now) and s.matches(a.labels)]
        inhibited = None
        if a.ends_at is None:
            for (rid, host), seen in self._inhibitor_seen.items():
                spec = self.inhibits.get(rid)
                if spec is None or rid == a.rule or host != a.labels.get("host") or not spec.covers(a.labels):
                    continue
                if (rid, host) in firing_rules or now - seen <= spec.window:
                    inhibited = rid
                    break
        if silenced != a.silenced_by or inhibited != a.inhibited_by:
            a.silenced_by, a.inhibited_by = silenced, inhibited
            self._dirty_alerts.add(a.fp)

    def _push_am(self, s: SinkConfig, now: float, c: Changes) -> float:
        """Alertmanager sinks get alerts, not notifications: new and changed ones now, firing ones
        again every `resend_interval`, resolved ones once with their endsAt."""
        push, nxt = [], float("inf")
        for a in self.alerts.values():
            if not s.accepts(a.labels):
                continue
            if a.ends_at is not None:
                if a.am_sent_at > 0 and a.am_sent_at < a.ends_at:
                    push.append(a)
            elif not a.muted:
                if a.am_sent_at == 0 or now - a.am_sent_at >= self.cfg.resend_interval:
                    push.append(a)
                else:
                    nxt = min(nxt, a.am_sent_at + self.cfg.resend_interval)
        if push:
            am_alerts = []
            for a in push:
                d = {"labels": a.labels, "annotations": a.annotations(self.cfg.external_url), "startsAt": rfc3339(a.starts_at),
                     "generatorURL": a.finding_url(self.cfg.external_url)}
                if a.ends_at is not None:
                    d["endsAt"] = rfc3339(a.ends_at)
                am_alerts.append(d)
                a.am_sent_at = now if a.ends_at is None else a.ends_at + 1e-3
                self._dirty_alerts.add(a.fp)
            nid = str(uuid.uuid4())
            c.outbox.append((nid, s.name, json.dumps({"notification_id": nid, "am_alerts": am_alerts}, ensure_ascii=False), now))
        return nxt

    def _flush(self, g: Group, now: float, c: Changes) -> None:
        alerts = [self.alerts[fp] for fp in g.fps if fp in self.alerts]
        firing = [a for a in alerts if a.ends_at is None and not a.muted]
        resolved = [a for a in alerts if a.ends_at is not None and a.notified and not a.silenced_by]
        sig = sorted(f"{a.fp}:{a.status}" for a in firing + resolved)
        repeat = bool(firing) and g.last_notified is not None and now - g.last_notified >= self.cfg.repeat_interval
        if (firing or resolved) and (sig != g.last_sent or repeat):
            self._notify(g, firing + resolved, now, c)
            g.last_notified = now
            g.last_sent = sorted(f"{a.fp}:firing" for a in firing)
            for a in firing:
                if not a.notified:
                    a.notified = True
                    self._dirty_alerts.add(a.fp)
        for a in alerts:
            # resolved: its resolution went out (or it never paged: silenced/inhibited/too short)
            if a.ends_at is not None:
                g.fps.remove(a.fp)
                self._gone_alerts[a.fp] = self.alerts.pop(a.fp)
                self._dirty_alerts.add(a.fp)
        g.next_flush = now + self.cfg.group_interval
        if not g.fps:
            del self.groups[g.key]
        self._dirty_groups.add(g.key)

    def _notify(self, g: Group, alerts: list[Alert], now: float, c: Changes) -> None:
        nid = str(uuid.uuid4())
        journal = self.document(g, alerts, nid, "journal")
        c.journal.append(journal)
        for s in self.group_sinks:
            mine = [a for a in alerts if s.accepts(a.labels) and (a.ends_at is None or s.send_resolved)]
            if not mine:
                continue
            doc = self.document(g, mine, nid, s.name)
            c.outbox.append((nid, s.name, json.dumps(doc, ensure_ascii=False), now))

    def document(self, g: Group, alerts: list[Alert], nid: str, receiver: str) -> dict[str, Any]:
        """Alertmanager's webhook message, version 4, plus our `notification_id`."""
        items = [a.to_webhook(self.cfg.external_url) for a in alerts]
        common_l = _common([i["labels"] for i in items])
        common_a = _common([i["annotations"] for i in items])
        return {"version": "4", "groupKey": g.key, "truncatedAlerts": 0,
                "status": "firing" if any(a.ends_at is None for a in alerts) else "resolved",
                "receiver": receiver, "groupLabels": dict(g.labels), "commonLabels": common_l, "commonAnnotations": common_a,
                "externalURL": self.cfg.external_url, "alerts": items, "notification_id": nid}


def _common(dicts: Iterable[dict[str, str]]) -> dict[str, str]:
    ds = list(dicts)
    if not ds:
        return {}
    return {k: v for k, v in ds[0].items() if all(d.get(k) == v for d in ds[1:])}
