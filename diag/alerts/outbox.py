"""The outbox and its sender: at-least-once delivery from SQLite, off the reading path.

Notifications are rows written in the daemon's commit. The sender is a thread with its own
connection (WAL: it never blocks the reader): it takes due rows, hands them to their sink, and
marks them delivered, or counts the attempt and schedules the next one with exponential backoff
(1 s doubling, capped at `backoff_max`). A row older than `max_age` is marked expired and
logged. A receiver down for an hour therefore loses nothing, and a daemon killed between commit
and delivery delivers after it restarts. Each row keeps its `notification_id` across attempts, so
receivers can drop the duplicates at-least-once implies.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diag.alerts.config import AlertsConfig
from diag.alerts.sinks import DeliveryError, Sink, build

log = logging.getLogger("diag")
KEEP_DELIVERED = 7 * 86400


@dataclass
class Item:
    """A notification to deliver: an outbox row, or (when the store itself fails) one held in memory."""

    id: int | None
    sink: str
    doc: dict[str, Any] | str  # the JSON text until it is sent (a long backlog is not decoded on every pass)
    created_at: float
    attempts: int = 0
    next_attempt: float = 0.0


@dataclass
class SinkState:
    sink: Sink
    sent: deque = field(default_factory=deque)  # send times within the last minute (rate limit)
    failing: str | None = None


def _doc(it: Item) -> dict[str, Any]:
    return json.loads(it.doc) if isinstance(it.doc, str) else it.doc


def deliver(sink: Sink, docs: list[dict[str, Any]]) -> str | None:
    """One attempt; the error text, or None when delivered. Never raises."""
    try:
        sink.send(docs)
        return None
    except DeliveryError as exc:
        return str(exc)[:500]
    except Exception as exc:  # noqa: BLE001 — a sink bug must not stop the sender
        return f"{type(exc).__name__}: {exc}"[:500]


class Sender(threading.Thread):
    def __init__(self, db_path: Path | str, cfg: AlertsConfig):
        super().__init__(name="diag-alert-sender", daemon=True)
        self.db_path = str(db_path)
        self.cfg = cfg
        self.sinks = {s.name: SinkState(build(s)) for s in cfg.sinks}
        self.wake = threading.Event()
        self._stopping = False
        self._memory: list[Item] = []
        self._lock = threading.Lock()
        self._last_prune = 0.0
        self.delivered = 0

    # -- control ----------------------------------------------------------------------------
    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self.wake.set()
        if self.is_alive():
            self.join(timeout)
        for st in self.sinks.values():
            st.sink.close()

    def adopt(self, old: "Sender") -> None:
        """Take over what a replaced sender held in memory (a reload while the store fails)."""
        with old._lock:
            self._memory = list(old._memory)

    def hold(self, doc: dict[str, Any], now: float) -> None:
        """Deliver without the store (it is what is failing): kept in memory, retried the same way."""
        with self._lock:
            for s in self.sinks.values():
                self._memory.append(Item(None, s.sink.name, doc, now))
        self.wake.set()

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        db = None
        while not self._stopping:
            try:
                if db is None:
                    db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
                wait = self.step(db, time.time())
            except sqlite3.Error as exc:
                log.error("alerts: outbox unavailable (%s); retrying", exc)
                wait = 2.0
            except Exception:  # noqa: BLE001 — the sender must outlive any one bad row or bug
                log.exception("alerts: sender error; retrying")
                wait = 5.0
            self.wake.wait(max(0.0, min(wait, 5.0)))
            self.wake.clear()
        if db is not None:
            db.close()

    def step(self, db: sqlite3.Connection, now: float) -> float:
        """Deliver what is due; seconds until something else is."""
        nxt = 5.0
        rows = db.execute("SELECT id, sink, payload, created_at, attempts, next_attempt FROM outbox WHERE state = 'queued' ORDER BY id").fetchall()
        queued: dict[str, list[Item]] = {}
        for rid, sink, payload, created, attempts, next_attempt in rows:
            queued.setdefault(sink, []).append(Item(rid, sink, payload, created, attempts, next_attempt))
        with self._lock:
            for it in self._memory:
                queued.setdefault(it.sink, []).append(it)
        for name, items in queued.items():
            if self._stopping:
                break
            nxt = min(nxt, self._sink_step(db, name, items, now))
        if now - self._last_prune > 3600:
            self._last_prune = now
            db.execute("DELETE FROM outbox WHERE state != 'queued' AND created_at < ?", (now - KEEP_DELIVERED,))
            db.execute("DELETE FROM alerts WHERE active = 0 AND updated_at < ?", (now - KEEP_DELIVERED,))
        return nxt

    def _sink_step(self, db: sqlite3.Connection, name: str, items: list[Item], now: float) -> float:
        expired = [it for it in items if now - it.created_at > self.cfg.max_age]
        for it in expired:
            log.error("alerts: notification %s to %s expired undelivered after %.0f s (%d attempts)",
                      _doc(it).get("notification_id"), name, now - it.created_at, it.attempts)
            self._mark(db, it, "expired")
        items = [it for it in items if it not in expired]
        st = self.sinks.get(name)
        if st is None:
            return 60.0  # its sink left the config: kept until it comes back or max_age passes
        due = [it for it in items if it.next_attempt <= now]
        if not due:
            return min((it.next_attempt - now for it in items), default=5.0)
        limit = st.sink.cfg.rate_limit
        while st.sent and now - st.sent[0] >= 60:
            st.sent.popleft()
        if limit and len(st.sent) >= limit:
            return st.sent[0] + 60 - now  # held back; merged into the next message when allowed
        batch = due if st.sink.merges else due[:1]
        err = deliver(st.sink, [_doc(it) for it in batch])
        if limit:
            st.sent.append(now)
        if err is None:
            for it in batch:
                self._mark(db, it, "delivered", now)
            if st.failing:
                log.info("alerts: %s delivers again", name)
                st.failing = None
            self.delivered += len(batch)
            return 0.0 if len(due) > len(batch) else min((it.next_attempt - now for it in items if it not in batch), default=5.0)
        if st.failing != err:
            log.warning("alerts: %s: delivery failed (%s); retrying with backoff, nothing is dropped", name, err)
        st.failing = err
        for it in batch:
            it.attempts += 1
            it.next_attempt = now + min(self.cfg.backoff_max, 2.0 ** (it.attempts - 1))
            if it.id is not None:
                db.execute("UPDATE outbox SET attempts = ?, next_attempt = ?, last_error = ? WHERE id = ?",
                           (it.attempts, it.next_attempt, err, it.id))
        return min(it.next_attempt for it in batch) - now

    def _mark(self, db: sqlite3.Connection, it: Item, state: str, now: float | None = None) -> None:
        if it.id is None:
            with self._lock:
                if it in self._memory:
                    self._memory.remove(it)
            return
        db.execute("UPDATE outbox SET state = ?, delivered_at = ?, attempts = attempts + ? WHERE id = ?",
                   (state, now, int(state == "delivered"), it.id))
