"""The daemon's side of alerting: one object the main loop talks to.

It turns each commit's hits and closed traces into alert changes (`prepare`, before the
transaction; the returned `Changes` are written inside it), and once the transaction is
durable (`committed`) logs the journal line and wakes the sender. Alerts the daemon raises about
itself (a followed file unreadable, the store failing to commit) go through the same manager;
while the store fails, their notification is held in memory by the sender instead.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Callable, Iterable

from diag.alerts import silences as silences_mod
from diag.alerts.config import AlertsConfig
from diag.alerts.manager import AlertManager, Changes
from diag.alerts.outbox import Sender
from diag.alerts.sinks import journal
from diag.analysis.findings import Hit
from diag.analysis.rules.ruleset import RuleSet

log = logging.getLogger("diag")

LOG_UNREADABLE = "diag-log-unreadable"
SILENCES_EVERY = 0.25  # seconds between checks for silences added by another process
STORE_FAILING = "diag-store-failing"


class AlertRuntime:
    def __init__(self, cfg: AlertsConfig, ruleset: RuleSet, db: sqlite3.Connection, db_path: Path | str,
                 describe: Callable[[str], tuple[str, str | None]]):
        self.cfg = cfg
        self.db = db  # the daemon's own connection (reads only, outside its transactions)
        self.describe = describe  # source path -> (server, model)
        self.manager = AlertManager(cfg, ruleset)
        self.manager.load(db)
        self.sender = Sender(db_path, cfg)
        self._data_version = -1
        self._silences_checked = -SILENCES_EVERY  # monotonic time of the last data_version check

    def start(self) -> None:
        if self.cfg.sinks:  # the journal alone needs no sender thread
            self.sender.start()
            log.info("alerts: %d sink(s): %s", len(self.cfg.sinks), ", ".join(f"{s.name} ({s.type})" for s in self.cfg.sinks))

    def close(self) -> None:
        self.sender.stop()

    def reconfigure(self, cfg: AlertsConfig) -> None:
        """SIGHUP: new timers and sinks; alert state, groups and the queued outbox carry over."""
        old = self.sender
        old.stop()
        self.cfg = self.manager.cfg = cfg
        self.sender = Sender(old.db_path, cfg)
        self.sender.adopt(old)
        if cfg.sinks:
            self.sender.start()
        log.info("reload: alerts: %d sink(s)", len(cfg.sinks))

    def set_rules(self, ruleset: RuleSet) -> None:
        self.manager.set_rules(ruleset)

    def due(self, now: float) -> bool:
        """Whether a commit is needed for alerts now: a timer is due, or silences may have changed."""
        return self.manager.due(now) or self._refresh_silences()

    def _refresh_silences(self) -> bool:
        """Silences are added by `diag silence` from another process: reload when another
        connection changed the file (`PRAGMA data_version`, a cheap check). True if reloaded.

        Asked by every turn of the main loop and every commit (tens a second for a server that
        writes each line on its own), checked at most every `SILENCES_EVERY`: a silence applies
        within a quarter of a second."""
        mono = time.monotonic()
        if mono - self._silences_checked < SILENCES_EVERY:
            return False
        self._silences_checked = mono
        try:
            v = self.db.execute("PRAGMA data_version").fetchone()[0]
            if v == self._data_version:
                return False
            self._data_version = v
            new = silences_mod.load(self.db)
        except sqlite3.Error as exc:
            log.debug("alerts: silences not reloaded: %s", exc)
            return False
        if [(s.id, s.ends_at) for s in new] == [(s.id, s.ends_at) for s in self.manager.silences]:
            return False
        self.manager.set_silences(new)
        return True

    def prepare(self, hits: Iterable[Hit], closed_traces: Iterable[str], errors: dict[str, str], now: float | None = None) -> Changes:
        """Everything the coming commit must carry for alerts."""
        now = time.time() if now is None else now
        m = self.manager
        describe = self.describe
        for h in hits:
            server, model = describe(h.path)
            m.hit(h, now, server, model)
        if m.waiting_on_traces:
            for tid in closed_traces:
                m.trace_closed(tid, now)
        errors = {p: e for p, e in errors.items() if not e.startswith("waiting for")}  # not there yet is not a fault
        for path, err in errors.items():
            m.condition(LOG_UNREADABLE, path, True, now, severity="error", title="A followed log cannot be read",
                        summary=f"diag cannot read {path}: {err}"[:300],
                        remedy="Check the file's permissions and path (the daemon runs as its own user under systemd); "
                               "nothing is lost: reading resumes where it stopped once the file is readable.")
        for a in list(m.alerts.values()):
            if a.rule == LOG_UNREADABLE and a.ends_at is None and a.labels["source"] not in errors:
                m.condition(LOG_UNREADABLE, a.labels["source"], False, now)
        self._refresh_silences()
        return m.process(now)

    def cleared(self, rule_id: str, source: str) -> None:
        self.manager.cleared(rule_id, source, time.time())

    def committed(self, changes: Changes) -> None:
        for doc in changes.journal:
            journal.emit(doc)
        if changes.outbox:
            self.sender.wake.set()

    def store_failing(self, error: str, now: float | None = None) -> None:
        """The store refuses commits: the alert cannot go through the outbox, so it goes out from memory."""
        now = time.time() if now is None else now
        m = self.manager
        m.condition(STORE_FAILING, str(self.db_path_hint()), True, now, severity="critical", title="diag cannot write its store",
                    summary=f"Commits to diag's SQLite store fail ({error[:200]}); reading is paused, nothing is dropped.",
                    remedy="Free disk space on the state directory's filesystem or fix its permissions; diag resumes by itself.")
        a = next(x for x in m.alerts.values() if x.rule == STORE_FAILING)
        g = next(g for g in m.groups.values() if a.fp in g.fps)
        doc = m.document(g, [a], f"store-failing-{int(a.starts_at)}", "journal")
        journal.emit(doc)
        self.sender.hold(doc, now)
        a.notified = True

    def store_ok(self) -> None:
        self.manager.condition(STORE_FAILING, str(self.db_path_hint()), False, time.time())

    def db_path_hint(self) -> str:
        return self.sender.db_path
