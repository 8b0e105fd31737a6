"""`diag daemon`: the scan pipeline over files followed live, committed to SQLite exactly once.

The main loop is the only writer: it polls the follower (woken by inotify, or every
`poll_interval`), feeds new lines through the same pipeline `diag scan` uses, and commits the
traces and findings they produced together with the new read offsets in one transaction. A
commit that fails (disk full, database locked) is retried, and reading pauses until it goes
through, so nothing is lost (`diag.daemon.commit`). SIGTERM/SIGINT flush and exit 0; SIGHUP reloads
config and rules.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import time
from typing import Any, Iterator

from diag import __version__
from diag.daemon import config, heap, systemd
from diag.daemon.commit import Committer
from diag.fsname import display
from diag.analysis.rules import ruleset as rules
from diag.alerts.config import parse as parse_alerts
from diag.alerts.runtime import AlertRuntime
from diag.ingest.fastpath import FastSource
from diag.analysis.findings import Hit
from diag.pipeline import Pipeline
from diag.parsing.source import SourceParser
from diag.store.db import Store
from diag.ingest.filereader import FileReader
from diag.ingest.follow import Follower
from diag.ingest.identity import still_on_disk
from diag.ingest.journals import Journals
from diag.ingest.rotated_dirs import RotatedDirs
from diag.analysis.trace import Trace
from diag.ingest.watch import DirWatch, Waker

log = logging.getLogger("diag")
COALESCE = 0.02  # seconds: lines arriving this soon after a commit wait to be committed with the next ones
COALESCE_STEADY = 0.04  # the same while a steady stream comes in (see `_wait`): a line waits at most this long
STEADY_LINES = 8  # lines read in one turn that mark a steady stream (400 lines/s over a `COALESCE` window)
CATCHUP_COMMIT_LINES = 16_000  # catching up, a commit waits for this many lines read (see `step`)


class Daemon:
    def __init__(self, cfg: config.Config, config_arg: str | None = None, extra_logs: list[config.LogSpec] | None = None):
        self.cfg = cfg
        self.config_arg = config_arg
        self.extra_logs = list(extra_logs or [])
        self.store = Store(cfg.db_path)
        rs = rules.load(cfg.rules_dirs)
        for e in rs.errors:
            log.error("rules: %s", e)
        self.pipe = Pipeline(rs, on_hit=self._on_hit, on_trace=self._trace_done, keep_traces=False, max_line=cfg.max_line_bytes)
        self.pipe.assembler.max_open = cfg.max_open_traces
        stored_meta = self.store.meta()
        self.pipe.internal.restore(stored_meta.get("internal_errors"))
        self.pipe.engine.restore_held(stored_meta.get("held_hits"))
        self.pipe.assembler.ids.restore(stored_meta.get("trace_ids"))
        self.pipe.assembler.ends_logged.update(p for p in stored_meta.get("ends_logged") or [] if isinstance(p, str))
        self.pipe.facts.by_source.update(stored_meta.get("facts") or {})  # startup facts outlive our restarts
        for t in self.store.open_traces(cfg.max_open_traces):
            self.pipe.assembler.adopt(t)
        self.follower = Follower(cfg, self.store.sources(), self._consume, forget=self.pipe.forget, raw_chunks=True)
        # systemd units' journals (diag.ingest.journal): their lines take the files' way through `_consume`
        self.journals = Journals(cfg.journals, stored_meta.get("journal"), cfg.max_line_bytes, cfg.from_beginning)
        self._waker = Waker()  # signal handlers end the main loop's wait through it (no lock taken)
        self.stopping = False
        self.reload_requested = False
        self.started = time.time()
        self._watch: DirWatch | None = None
        self.on_commit: list[Any] = []  # called (no arguments) after each commit that went through: the web's live stream
        self._last_prune = 0.0
        self._step_lines = 0  # lines the last `step` read
        self._last_stuck = 0.0
        self._last_watchdog = 0.0
        self._watchdog = systemd.watchdog_interval()
        self._servers: dict[str, str] = {}
        self._web_listen = cfg.web_listen  # the dashboard alerts link to (a reload does not move it)
        self._cli_webhooks = list(cfg.alert_webhooks)  # --alert-webhook: kept across reloads of the config file
        self.alerts = AlertRuntime(parse_alerts(cfg.alerts_doc, extra_webhooks=self._cli_webhooks, web_listen=self._web_listen),
                                   rs, self.store.db, cfg.db_path, self._describe)
        self.pipe.engine.on_clear = lambda rule, path: self.alerts.cleared(rule.id, path)
        # the one writer to the store (diag.daemon.commit); the pipeline's hits and traces go to it (`_on_hit`)
        self.committer = Committer(self.store, self.pipe, self.follower, self.journals, self.alerts, self.on_commit)

    # -- lifecycle ------------------------------------------------------------------------
    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum, frame) -> None:
        self.stopping = True
        # systemd's stop (the cgroup) and a terminal's ^C (the process group) end the journalctl
        # children with the daemon: an end read before this turn is over is no news (only flags set here)
        self.journals.stopping()
        self._signal_wake()

    def _on_hup(self, signum, frame) -> None:
        self.reload_requested = True
        self._signal_wake()

    def _signal_wake(self) -> None:
        self._waker.poke()

    def run(self) -> int:
        opened = self.follower.discover(force=True)
        self._start_watching()
        self.commit(meta={"pid": os.getpid(), "started_at": self.started, "version": __version__, "config": self.cfg.source})
        log.info("diag %s daemon: %d log(s) configured, %d open, %d journal(s), state %s", __version__, len(self.cfg.logs), len(opened),
                 len(self.journals.sources), display(self.cfg.db_path))
        self.alerts.start()
        heap.freeze_startup()  # start-up's objects out of the garbage collector's full passes (diag.daemon.heap)
        systemd.notify("READY=1\nSTATUS=following %d file(s)" % len(self.follower.readers))
        try:
            while not self.stopping:
                if self.reload_requested:
                    self.reload()
                busy = self.step()
                self.periodic()
                if not busy or not (self.follower.behind or self.journals.behind):
                    self._wait(busy)
            self.shutdown()
        finally:
            self.alerts.close()
            self._stop_watching()
            self._waker.close()
            self.journals.close()
            self.follower.close()
            self.store.close()
        log.info("diag daemon stopped")
        return 0

    def _wait(self, busy: bool) -> None:
        """Until there is more to read. A server whose logging flushes every line (Python's
        StreamHandler with PYTHONUNBUFFERED, as many images set) wakes us once per line: after a
        commit, the lines that arrive within `COALESCE` are read and committed together. That bounds
        commits (and their CPU) at a busy server's rate and adds at most `COALESCE` to a line's
        latency; a line after a quiet spell is read at once. While the lines keep coming (the last
        turn read `STEADY_LINES` or more) the window is `COALESCE_STEADY`: each commit costs about
        as much as reading 40 lines, and at 1,000 lines/s a commit every 20 ms was half of the
        daemon's CPU. A turn after a 40 ms sleep runs on cold caches (~1.2 ms where the same turn
        back to back takes ~0.6), so the turns, not the lines, are most of what a steady stream
        costs (tests/bench/bench_daemon.py, a noisy 2-core machine): 30 ms cost 3.5-3.8 % of a
        core, 40 ms 2.8-3.3 % with a line's p99 at 41.5 ms (the window plus one turn). 45 ms saved
        little more (2.8-3.0 %) for a p99 of 46 ms and a max near 60: too close to the 50 ms budget.
        One request's lines written now and then (a handful per turn) keep the short window.
        Catching up (a read stopped at its size limit) never comes here."""
        if busy:
            pause = self.committer.last_commit + self._window() - time.monotonic()
            if pause > 0 and not self.stopping:
                time.sleep(pause)
            return
        if self.stopping or self.reload_requested:
            return  # a signal came while this iteration ran: its byte in the pipe is drained by the next wait
        # a journalctl child's output ends the wait too, unless reading is paused (the store refuses
        # writes, `step`): its unread output would end every wait at once, a busy loop
        fds = self.journals.fds() if self.committer.pending is None else []
        if self._watch is not None:
            if self._watch.wait(self._idle_wait(), fds)[1]:
                self.follower.dirty = True  # a file appeared or was renamed: expand globs now
        else:
            self._waker.wait(self._idle_wait(), fds)

    def _window(self) -> float:
        """How long after a commit the lines that follow wait to be committed together."""
        return COALESCE_STEADY if self._step_lines >= STEADY_LINES else COALESCE

    def _idle_wait(self) -> float:
        """How long to sleep with nothing to read: the poll interval, or less while a parser holds a
        record that becomes complete when its file stays quiet (an OOM's ERROR line alerts then,
        not a poll later)."""
        wait = self.cfg.poll_interval
        if any(p.has_pending for p in self._parsers()):
            wait = min(wait, self.cfg.record_quiet)
        return wait

    def shutdown(self) -> None:
        systemd.notify("STOPPING=1")
        self.journals.stopping()
        self.step()
        for p in list(self._parsers()):
            for ev in p.flush():
                self.pipe.event(ev)
        self.pipe.engine.flush()
        self.commit(meta={"stopped_at": time.time()}, block=True)

    # -- the loop -------------------------------------------------------------------------
    def step(self) -> bool:
        """Read what is new everywhere, run it through the pipeline, commit. True if there was data."""
        if self.committer.pending is not None:
            if not self.commit():
                return False  # the store is failing: do not read more until it takes what we have
        busy = False
        self._step_lines = 0
        # Existing readers first: a rotated file's last lines come before its successor's first ones.
        batch_items = self.follower.poll()
        batch_items += [(r, r.read()) for r in self.follower.discover()]
        touched: dict[str, FileReader] = {}
        for r, lines in batch_items:
            touched[r.key] = r
            if lines or r.state.state != "active":
                busy = busy or bool(lines)
                # A rotated file's records end with it: hand over the last one now, before the
                # successor's first lines (its access line must not wait behind them).
                self._consume(r, lines, r.state.state != "active")
        for r in list(self.follower.readers.values()):
            if r.key in touched and busy:
                continue
            tail = self.follower.idle_flush(r)
            if tail:
                self._consume(r, tail, False)
                busy = True
            if r.parser.has_pending and time.monotonic() - r.last_data > self.cfg.record_quiet:
                for ev in r.parser.flush():
                    self.pipe.event(ev)
                busy = True
        journal_lines, started = self.journals.read()
        for j, data in journal_lines:
            if data:
                self._consume(j, [data], False)  # (a journal's rebuilt lines: whole lines, in bytes)
                busy = True
            elif j.parser.has_pending and time.monotonic() - j.last_data > self.cfg.record_quiet:
                for ev in j.parser.flush():
                    self.pipe.event(ev)
                busy = True
        # Catching up (a read stopped at its size limit), a commit waits for CATCHUP_COMMIT_LINES
        # lines. With request ids in no order (vLLM's are random) each trace lands on its own leaf of
        # the store's id index, and each page a transaction dirties is written to the WAL and again at
        # the checkpoint: the more traces share a transaction, the fewer pages each costs. Into a
        # store of 500,000 traces (bench_daemon.py --only catchup-random, 3 runs each): a commit per
        # 1 MiB read (~2,800 requests) ran 66-73 k lines per CPU second, per 16,000 lines (two reads)
        # 78-79 k, per 24,000 83-89 k; sequential ids gained nothing. The traces held meanwhile cost
        # RSS (--only rss: 87 MB, 91, 96).
        self.committer.uncommitted_lines += self._step_lines
        behind = self.follower.behind or self.journals.behind
        self.store.catching_up(behind)
        if (busy or touched or started) and not (behind and self.committer.uncommitted_lines < CATCHUP_COMMIT_LINES):
            self.commit()
        return busy

    def _consume(self, r: FileReader, lines: list, flush: bool) -> None:
        """Lines, or raw chunks that the fast path splits and parses (the same events, less work)."""
        n = 0
        for item in lines:
            if item.__class__ is bytes:
                if r.fast is None:
                    r.fast = FastSource(self.pipe, r.parser, r.splitter)
                n += r.fast.feed(item)
            else:
                n += self.pipe.feed_line_batch(r.parser, (item,))
        if flush:
            self.pipe.feed_line_batch(r.parser, (), flush=True)
        r.consumed += n
        self._step_lines += n

    def periodic(self) -> None:
        now = time.time()
        if now - self._last_stuck >= 1.0:
            self._last_stuck = now
            self.pipe.engine.release_due(now)
            self.pipe.assembler.mark_stuck(now, self.cfg.stuck_after)  # marked as changed: the commit checks them
            if self.committer.hits or self.pipe.assembler.changed:
                self.commit()
        if self.alerts.due(now):
            self.commit()
        if now - self._last_prune >= 60:
            self._last_prune = now
            if self.retain(now):
                self._last_prune = now - 55  # more to do: come back soon, in small batches
        if self._watchdog and now - self._last_watchdog >= self._watchdog:
            self._last_watchdog = now
            systemd.notify("WATCHDOG=1")

    def retain(self, now: float) -> int:
        """One retention pass as at time `now` (a bounded batch); the number of rows it deleted.

        A finished file's row (`sources`, state done) is what keeps a restarted daemon from reading
        that file again under its rotated name (`diag.ingest.identity`): it outlives `retention_days`
        while the file is on disk as the same file (`still_on_disk`), and goes once it is deleted or replaced."""
        try:
            n = self.store.prune(now, self.cfg.retention_days, self.cfg.retention_traces, self.cfg.retention_findings,
                                 keep=lambda rows: still_on_disk(rows, self.follower.rotated_dirs.search))
        except sqlite3.Error as exc:
            log.error("retention: %s", exc)
            return 0
        if n:
            log.info("retention: pruned %d rows", n)
        return n

    def _on_hit(self, hit: Hit) -> None:
        self.committer.on_hit(hit)  # (the pipeline is built before the committer it hands its hits to)

    def _describe(self, path: str) -> tuple[str, str | None]:
        """A source's server (the format that wrote it) and served model, for alert labels."""
        server = self._servers.get(path)
        if server is None:
            fmt = next((p.detected for p in self._parsers() if p.path == path), "unknown")
            server = {"uvicorn": "vllm"}.get(fmt, fmt)
            if fmt != "unknown":
                self._servers[path] = server
        return server, self.pipe.assembler.models.get(path)

    def _parsers(self) -> Iterator[SourceParser]:
        """Every source's parser: the followed files' and the journals'."""
        for r in self.follower.readers.values():
            yield r.parser
        for j in self.journals.sources.values():
            yield j.parser

    def _trace_done(self, t: Trace) -> None:
        self.committer.trace_done(t)

    def commit(self, meta: dict[str, Any] | None = None, block: bool = False) -> bool:
        """One transaction: changed traces, new hits, read offsets. False (and kept for later) on failure."""
        return self.committer.commit(meta, block)

    def reload(self) -> None:
        """SIGHUP: re-read config and rules. Never exits: whatever is wrong is logged, and a rule
        that no longer loads keeps its previous version (a broken file keeps all of its old rules)."""
        self.reload_requested = False
        try:
            self._reload()
        except Exception as exc:  # noqa: BLE001 - a reload must never take the daemon down
            log.error("reload failed (%s); keeping the running configuration and rules", type(exc).__name__)

    def _reload(self) -> None:
        try:
            cfg = config.load(self.config_arg)
        except config.ConfigError as exc:
            log.error("reload: %s; keeping the running configuration", exc)
            return
        cfg.logs.extend(self.extra_logs)
        cfg.journals.extend(j for j in self.cfg.journal_args if j.name not in {k.name for k in cfg.journals})
        rs = rules.load(cfg.rules_dirs)
        for e in rs.errors:
            log.error("reload: %s", e)
        kept = rules.keep_previous(rs, self.pipe.engine.rules)
        if kept:
            log.error("reload: kept the previous version of %d rule(s) that no longer load: %s", len(kept), ", ".join(kept))
        self.pipe.engine.set_rules(rs)
        self.pipe.engine.errors = list(rs.errors)
        log.info("reload: %d rules", len(rs.rules))
        self.alerts.set_rules(rs)
        try:
            self.alerts.reconfigure(parse_alerts(cfg.alerts_doc, extra_webhooks=self._cli_webhooks, web_listen=self._web_listen))
        except ValueError as exc:
            log.error("reload: alerts: %s; keeping the running sinks", exc)
        self.follower.cfg.logs = cfg.logs
        self.follower.rotated_dirs = RotatedDirs(cfg.logs, cfg.logrotate_config)  # logrotate's config read again too
        self.follower.discover(force=True)
        self.journals.configure(cfg.journals)
        self._stop_watching()
        self._start_watching()
        heap.refreeze()  # the replaced rules and sinks can be collected

    # -- inotify ----------------------------------------------------------------------------
    def _start_watching(self) -> None:
        if not self.cfg.use_inotify:
            return
        dirs = set()
        for spec in self.cfg.logs:
            d = os.path.dirname(os.path.abspath(spec.path)) or "/"
            while not os.path.isdir(d) and d != os.path.dirname(d):
                d = os.path.dirname(d)  # watch the nearest existing parent until the directory appears
            dirs.add(d)
        try:
            self._watch = DirWatch([os.path.abspath(s.path) for s in self.cfg.logs], sorted(dirs), self._waker)
        except (ImportError, AttributeError, OSError) as exc:  # no inotify here, or fs.inotify.max_user_instances exhausted
            log.warning("inotify unavailable (%s); polling every %.1f s", exc, self.cfg.poll_interval)

    def _stop_watching(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()
