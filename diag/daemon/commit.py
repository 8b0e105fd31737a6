"""The daemon's commit: what the pipeline derived since the last one, written to the store together
with the read offsets past the lines it came from, in one transaction.

The offsets and what their lines produced (finished and changed traces, new hits, the hits a rule
holds back, samples, alert changes) go in together, so a restarted daemon resumes exactly where
the store says it stopped: no line is counted twice and none is skipped. A commit that fails (disk
full, database locked) is kept (`pending`) and retried, and the main loop reads no more until it
goes through (`Daemon.step`), so nothing is lost.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from diag.alerts.runtime import AlertRuntime
    from diag.analysis.findings import Hit
    from diag.analysis.trace import Trace
    from diag.ingest.follow import Follower
    from diag.ingest.journals import Journals
    from diag.pipeline import Pipeline
    from diag.store.db import Store

log = logging.getLogger("diag")
HEARTBEAT_EVERY = 1.0  # seconds: `heartbeat` (the last commit's time) is rewritten at most this often


class Committer:
    """The daemon's one writer: it collects the pipeline's hits and finished traces (`on_hit`,
    `trace_done`) and commits them with the followed files' and journals' positions (`commit`)."""

    def __init__(self, store: Store, pipe: Pipeline, follower: Follower, journals: Journals, alerts: AlertRuntime,
                 on_commit: list[Callable[[], Any]]):
        self.store = store
        self.pipe = pipe
        self.follower = follower
        self.journals = journals
        self.alerts = alerts
        self.on_commit = on_commit  # called (no arguments) after each commit that went through
        self.hits: list[Hit] = []
        self.done: dict[str, Trace] = {}
        # a commit the store refused, kept until it goes through (reading waits for it meanwhile)
        self.pending: tuple[list, list, list, list, Any, list] | None = None
        self.last_commit = 0.0  # monotonic time of the last commit that went through
        self.uncommitted_lines = 0  # lines read since the last commit that went through
        self._heartbeat_at: float | None = None  # monotonic time of the `heartbeat` last committed
        self._failing = False

    def on_hit(self, hit: Hit) -> None:
        self.hits.append(hit)  # not a bound list.append: `self.hits` is swapped at each commit

    def trace_done(self, t: Trace) -> None:
        self.done[t.id] = t

    def commit(self, meta: dict[str, Any] | None = None, block: bool = False) -> bool:
        """One transaction: changed traces, new hits, read offsets. False (and kept for later) on failure."""
        errors = {**self.follower.errors, **self.journals.errors}  # the followed files' and journals' read errors
        if self.pending is None:
            traces = {t.id: t for t in self.pipe.drain_changed()}
            left, self.done = self.done, {}
            traces.update(left)
            states = {s.key: s for s in self.follower.states()}
            # A state alert (stuck request) waits for its requests to close; one that left the assembler
            # still in flight (pushed out by newer ones, or its file gone) can never close: it stops waiting.
            closed = (t.id for t in traces.values() if t.status != "in_flight" or t.id in left)
            # held hits go with the offsets past their lines: after a crash they are restored, not lost
            changes = self.alerts.prepare(self.hits, closed, errors)
            self.pending = (list(traces.values()), self.hits, list(states.values()), self.pipe.engine.held_state(), changes,
                            self.pipe.samples)
            self.hits = []
            self.pipe.samples = []
        traces, hits, states, held, changes, samples = self.pending
        m = dict(meta or {})
        m["held_hits"] = held
        m["trace_ids"] = self.pipe.assembler.ids.to_state()
        m["ends_logged"] = sorted(self.pipe.assembler.ends_logged)
        beat = meta is not None or self._heartbeat_at is None or time.monotonic() - self._heartbeat_at >= HEARTBEAT_EVERY
        if beat:
            # Rewriting it at every commit cost a meta row (two pages) each time, for a time read
            # no more finely than "when did it last commit" (`diag status`, /metrics; whether the
            # daemon runs is its pid's business): it may be up to a second older than the last commit.
            m["heartbeat"] = time.time()
        m["errors"] = errors
        m["journal"] = self.journals.state()  # each unit's cursor, with the traces and findings of the lines before it
        m["rule_errors"] = list(self.pipe.engine.errors)
        m["internal_errors"] = self.pipe.internal.to_dict()
        m["facts"] = self.pipe.facts.by_source
        deadline = time.monotonic() + (30 if block else 0)
        while True:
            try:
                self.store.commit(traces, hits, states, m, samples=samples, extra=changes.write if changes else None)
                self.last_commit = time.monotonic()
                if beat:
                    self._heartbeat_at = self.last_commit
                if self._failing:
                    log.info("store: commits go through again")
                    self._failing = False
                    self.alerts.store_ok()
                self.pending = None
                self.uncommitted_lines = 0
                self.alerts.committed(changes)
                for fn in self.on_commit:
                    try:
                        fn()
                    except Exception as exc:  # noqa: BLE001 - a listener never stops the writer
                        log.error("after commit: %s: %s", getattr(fn, "__qualname__", fn), exc)
                return True
            except sqlite3.Error as exc:
                if not self._failing:
                    log.error("store: commit failed (%s); reading paused, nothing is dropped, retrying", exc)
                    self._failing = True
                    self.alerts.store_failing(str(exc))
                if time.monotonic() >= deadline:
                    return False
                time.sleep(1)
