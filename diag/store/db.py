"""The daemon's SQLite store: read offsets, traces and findings, committed together.

One writer (the daemon's main loop), WAL mode so `diag status`/`trace`/`findings` read without
blocking it. Each batch of bytes read is committed in one transaction with the traces and
findings derived from it and the new read offsets, so after `kill -9` the daemon resumes at the
last committed offset and every line is processed exactly once. Schema changes are migrations
keyed by `PRAGMA user_version` (`diag.store.migrations`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import quote

from diag.store.counters import count_new, keep_lines_read
from diag.analysis.findings import Hit
from diag.analysis.trace import STATE_FIELDS, Trace
from diag.store.migrations import MIGRATIONS
from diag.store.rescan import ScanRun
from diag.compactjson import dumps_text
from diag import fsname


class StoreError(Exception):
    pass


@dataclass
class SourceState:
    key: str
    path: str
    fingerprint: str = ""
    fp_len: int = 0
    format: str | None = None
    offset: int = 0
    lineno: int = 0
    size: int = 0
    lines_read: int = 0
    truncated_lines: int = 0
    last_line_time: float | None = None
    rotations: int = 0
    last_error: str | None = None
    state: str = "active"
    end_fingerprint: str = ""  # a file read to its end (state "done"): that of the up to 256 bytes before `offset`
    updated_at: float = field(default_factory=time.time)

    COLUMNS = ("key", "path", "path_bytes", "fingerprint", "fp_len", "format", "offset", "lineno", "size", "lines_read",
               "truncated_lines", "last_line_time", "rotations", "last_error", "state", "end_fingerprint", "updated_at")

    def row(self) -> tuple:
        # `path` is the real name (it opens the file); SQLite gets text, and the bytes of a name that
        # is not UTF-8 beside it (diag.fsname)
        return (self.key, *fsname.stored(self.path), *(getattr(self, c) for c in self.COLUMNS[3:]))

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> "SourceState":
        keys = r.keys()  # a read-only look at a store not migrated yet lacks the newer columns
        d = {k: r[k] for k in cls.COLUMNS[3:] if k in keys}
        raw = r["path_bytes"] if "path_bytes" in keys else None
        return cls(r["key"], fsname.restored(r["path"], raw), **d)


_PATH = SourceState.COLUMNS.index("path")
assert SourceState.COLUMNS[:3] == ("key", "path", "path_bytes")  # `row`: the name as the pair diag.fsname.stored makes
_STATE = SourceState.COLUMNS.index("state")
_UPDATED = SourceState.COLUMNS.index("updated_at")
assert _UPDATED == len(SourceState.COLUMNS) - 1  # compared without it: the row up to it
_SOURCE_REPLACE = (f"INSERT OR REPLACE INTO sources ({', '.join(SourceState.COLUMNS)}) "
                   f"VALUES ({', '.join('?' * len(SourceState.COLUMNS))})")
# For a row this connection wrote under the same path. The path is not in the SET list: SQLite
# rewrites an index whose column is set, even to the same value (a page more per commit); INSERT OR
# REPLACE, a delete and an insert, rewrote both indexes. A row that is not there is inserted whole.
_SOURCE_UPSERT = (_SOURCE_REPLACE.replace("INSERT OR REPLACE", "INSERT") + " ON CONFLICT(key) DO UPDATE SET "
                  + ", ".join(f"{c} = excluded.{c}" for c in SourceState.COLUMNS if c not in ("key", "path", "path_bytes")))

# The finished files' rows retention deletes: those named (JSON list of keys), still done and old.
_FORGOTTEN = "key IN (SELECT value FROM json_each(?)) AND state = 'done' AND updated_at < ?"


# WAL pages between automatic checkpoints: SQLite's default while following, more while catching up
# (`Store.catching_up`)
CHECKPOINT_PAGES = 1000
CATCHUP_CHECKPOINT_PAGES = 10_000
WAL_KEPT_BYTES = 8 << 20  # the WAL a checkpoint leaves on disk: a catch-up's (~40 MB) does not stay


class Store:
    def __init__(self, path: Path | str, readonly: bool = False):
        self.path = Path(path)
        self._catching_up = False
        self._meta_written: dict[str, tuple[Any, str]] = {}  # key -> (value read back, JSON) as this connection last committed it
        self._sources_written: dict[str, tuple] = {}  # key -> row as last committed, updated_at left out: unchanged rows are skipped
        if readonly:
            if not self.path.exists():
                raise StoreError(f"{fsname.display(self.path)}: no diag store here (has the daemon run with this state dir?)")
            # percent-encoded bytes: a `?` or `#` in the path, or a name that is not UTF-8, stays the path
            uri = f"file:{quote(os.fsencode(self.path))}?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, timeout=10, isolation_level=None)
            if self.schema_version == 0:  # created this instant, its first migration not committed yet
                self.db.close()
                raise StoreError(f"{fsname.display(self.path)}: no diag store here yet (the daemon is creating it)")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes; WAL fsyncs at checkpoints
            self.db.execute(f"PRAGMA journal_size_limit = {WAL_KEPT_BYTES}")  # truncated to this when reused from its start
            self.migrate()
        self.db.row_factory = sqlite3.Row

    def migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(f"{fsname.display(self.path)}: schema version {version} is newer than this diag ({len(MIGRATIONS)}); upgrade diag")
        for i in range(version, len(MIGRATIONS)):
            # one script, one transaction: a migration is applied whole or not at all
            try:
                self.db.executescript(f"BEGIN IMMEDIATE;\n{MIGRATIONS[i]}\nPRAGMA user_version = {i + 1};\nCOMMIT;")
            except sqlite3.Error:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    def catching_up(self, on: bool) -> None:
        """Checkpoint the WAL less often while a backlog is read: each transaction's pages are appended
        to the WAL and copied into the database at the next checkpoint, once each however many
        transactions rewrote them. A catch-up with request ids in no order dirties a leaf of the id
        index per trace, the same leaves commit after commit: checkpointing every 10,000 pages
        instead of after each commit (SQLite's 1,000 is less than one catch-up commit) cost 11 %
        less CPU per trace stored (6,300 traces a commit into 500,000). Back to following, the next
        commit checkpoints what the WAL holds (up to ~40 MB then) and it is reused from its start, cut
        back to `WAL_KEPT_BYTES`."""
        if on != self._catching_up:
            self._catching_up = on
            self.db.execute(f"PRAGMA wal_autocheckpoint = {CATCHUP_CHECKPOINT_PAGES if on else CHECKPOINT_PAGES}")

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    # -- the one write path ---------------------------------------------------------------
    def commit(self, traces: Iterable[Trace], hits: Iterable[Hit], sources: Iterable[SourceState], meta: dict[str, Any] | None = None,
               samples: Iterable[dict[str, Any]] = (), extra: Callable[[sqlite3.Connection], None] | None = None,
               scan: ScanRun | None = None) -> None:
        """`samples` are engine stats lines for the dashboard's chart; `extra` writes more rows in the same
        transaction (the alert outbox: a notification is durable exactly when the findings and offsets
        that caused it are). `scan`: the `diag scan --store` run these rows come from (`diag.store.rescan`)."""
        now = time.time()
        db = self.db
        # First insert fixes a trace's rowid, which breaks ties in the dashboard's newest-first order
        # (logs with one-second times): insert in arrival order, not the daemon's set order.
        traces = sorted(traces, key=_arrival)
        hits = list(hits)
        meta_rows = self._changed_meta(meta or {})
        source_rows, moved, written = self._changed_sources(sources)
        db.execute("BEGIN IMMEDIATE")
        try:
            # A trace is counted once, when first stored with a final status: which of these were
            # counted by an earlier commit (or run) is asked before the upsert marks them counted.
            final = list({t.id: t for t in traces if t.status != "in_flight"}.values())  # an id twice: counted once, as last written
            counted = _counted(db, [t.id for t in final]) if final else set()
            origin = scan.scanned_path if scan else _live
            run = scan.id if scan else None
            # The rows as a generator, not a list: each (its state JSON the most of it) is freed once
            # bound, where a catch-up's 2,800 rows held until the last was bound made the commit 10 % slower.
            db.executemany(
                "INSERT INTO traces (id, source, server, status, received_at, updated_at, data, t, model, http_status, latency_s, images, nfindings, "
                "counted, scanned_path, scan_run) VALUES (?,?,?,?,?,?,?,coalesce(?, ?),?,?,?,?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET source=excluded.source, server=excluded.server, status=excluded.status, "
                "received_at=excluded.received_at, updated_at=excluded.updated_at, data=excluded.data, "
                "t=coalesce(excluded.received_at, traces.t), model=excluded.model, http_status=excluded.http_status, "
                "latency_s=excluded.latency_s, images=excluded.images, nfindings=excluded.nfindings, "
                "counted=max(traces.counted, excluded.counted), scanned_path=excluded.scanned_path, scan_run=excluded.scan_run",
                (_trace_row(t, now, origin(t.source), run) for t in traces))
            if scan is not None:
                count_new(db, scan.traces_to_count(final, counted), scan.to_count(hits))
            else:
                count_new(db, [t for t in final if t.id not in counted] if counted else final, hits)
            if samples:
                db.executemany("INSERT INTO engine_stats (source, ts, running, waiting, kv_usage, prompt_tps, gen_tps, scanned_path, scan_run) "
                               "VALUES (?,?,?,?,?,?,?,?,?)",
                               [(s["source"], s["ts"], _int64(s.get("running")), _int64(s.get("waiting")), s.get("kv_usage"),
                                 s.get("prompt_tps"), s.get("gen_tps"), origin(s["source"]), run) for s in samples])
            db.executemany(
                "INSERT INTO findings (rule, severity, category, title, ts, created_at, path, line, request_id, summary, remedy, fields, excerpt, "
                "count, scanned_path, scan_run) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(h.rule.id, h.rule.severity, h.rule.category, h.rule.title, h.ts, now, h.path, h.line, h.request_id,
                  _summary(h), h.rule.remedy, json.dumps(h.fields, ensure_ascii=False, default=str), h.excerpt, min(h.count, _MAX_INT),
                  origin(h.path), run) for h in hits])
            if source_rows:
                db.executemany(_SOURCE_UPSERT, source_rows)
            if moved:
                db.executemany(_SOURCE_REPLACE, moved)
            if meta_rows:
                db.executemany("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", meta_rows)
            if extra is not None:
                extra(db)
            db.execute("COMMIT")
            self._meta_written.update((k, (json.loads(v), v)) for k, v in meta_rows)
            self._sources_written.update(written)
            for key, row in written.items():
                if row[_STATE] == "done":  # a finished file is not written again: forget it
                    del self._sources_written[key]
        except BaseException:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    def _changed_meta(self, meta: dict[str, Any]) -> list[tuple[str, str]]:
        """The meta rows to write: values that differ from what this connection last committed.

        The daemon passes every value at every commit and they rarely change: a value equal to the
        one committed is not even encoded. It is compared with the committed JSON read back, never
        with the object passed then, which the caller may have changed in place since; a value equal
        in Python but spelled otherwise in JSON (1 and 1.0) keeps its first spelling."""
        rows = []
        for k, v in meta.items():
            before = self._meta_written.get(k)
            if before is not None and before[0] == v:
                continue
            text = json.dumps(v)
            if before is None or before[1] != text:
                rows.append((k, text))
        return rows

    def _changed_sources(self, sources: Iterable[SourceState]) -> tuple[list[tuple], list[tuple], dict[str, tuple]]:
        """The source rows to write: those that changed since this connection last committed them.

        A followed file that got no new line since the last commit is not rewritten (its
        `updated_at` stays at its last change). A row whose path is the one committed before is
        updated in place without touching the path index (`_SOURCE_UPSERT`); a new row, or one
        under another path, is written whole (`_SOURCE_REPLACE`). Returns (upserts, replaces,
        key -> row to remember once the transaction is durable)."""
        upserts, replaces, written = [], [], {}
        for s in sources:
            row = s.row()
            same = row[:_UPDATED]
            before = self._sources_written.get(s.key)
            if before == same:
                continue
            written[s.key] = same
            (upserts if before is not None and before[_PATH:_PATH + 2] == row[_PATH:_PATH + 2] else replaces).append(row)
        return upserts, replaces, written

    def prune(self, now: float, days: float, max_traces: int, max_findings: int, batch: int = 5000,
              keep: Callable[[list[SourceState]], Iterable[str]] | None = None) -> int:
        """Delete a bounded batch of old rows; called repeatedly in the background of the main loop.

        A finished file's row (state done) older than `days` goes too, unless `keep`, given those rows,
        names its key: the store knows no files, the daemon tells which are still on disk
        (`diag.ingest.identity.still_on_disk`). It is asked before the write transaction begins."""
        cutoff = now - days * 86400
        n = 0
        db = self.db
        expired = [SourceState.from_row(r) for r in db.execute("SELECT * FROM sources WHERE state = 'done' AND updated_at < ?", (cutoff,))]
        kept = set(keep(expired)) if keep is not None and expired else set()
        gone = [s.key for s in expired if s.key not in kept]
        db.execute("BEGIN IMMEDIATE")
        try:
            n += db.execute("DELETE FROM traces WHERE rowid IN (SELECT rowid FROM traces WHERE updated_at < ? LIMIT ?)", (cutoff, batch)).rowcount
            n += db.execute("DELETE FROM findings WHERE rowid IN (SELECT rowid FROM findings WHERE created_at < ? LIMIT ?)", (cutoff, batch)).rowcount
            n += db.execute("DELETE FROM engine_stats WHERE id IN (SELECT id FROM engine_stats WHERE ts < ? LIMIT ?)", (cutoff, batch)).rowcount
            for table, limit, col in (("traces", max_traces, "updated_at"), ("findings", max_findings, "created_at")):
                count = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                if count > limit:
                    n += db.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} ORDER BY {col} LIMIT ?)",
                                    (min(batch, count - limit),)).rowcount
            if gone:
                args = (dumps_text(gone), cutoff)
                keep_lines_read(db, _FORGOTTEN, args)  # the rows the DELETE takes, as it selects them
                db.execute(f"DELETE FROM sources WHERE {_FORGOTTEN}", args)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return n

    # -- reads ----------------------------------------------------------------------------
    def sources(self) -> list[SourceState]:
        return [SourceState.from_row(r) for r in self.db.execute("SELECT * FROM sources ORDER BY path, updated_at")]

    def open_traces(self, limit: int) -> list[Trace]:
        rows = self.db.execute("SELECT data FROM traces WHERE status = 'in_flight' ORDER BY updated_at DESC LIMIT ?", (limit,))
        return [Trace.from_state(json.loads(r[0])) for r in rows]

    def trace(self, tid: str) -> dict[str, Any] | None:
        """The trace with this id, or the only one whose id starts with it (see `trace_candidates`)."""
        r = self.db.execute("SELECT data FROM traces WHERE id = ?", (tid,)).fetchone()
        if r is None:
            ids = self.trace_candidates(tid, 2)
            if len(ids) == 1:
                r = self.db.execute("SELECT data FROM traces WHERE id = ?", (ids[0],)).fetchone()
        return json.loads(r[0]) if r else None

    def trace_candidates(self, prefix: str, limit: int = 20) -> list[str]:
        """Ids starting with `prefix`, compared literally and case-sensitively (no LIKE wildcards).

        A range on the primary key's index finds them without scanning the table (the dashboard's
        search box and 404 page ask this of a store with a million traces); the substr keeps the
        comparison exact."""
        if not prefix:
            return []
        return [r[0] for r in self.db.execute("SELECT id FROM traces WHERE id >= ? AND id < ? AND substr(id, 1, ?) = ? "
                                              "ORDER BY id LIMIT ?", (prefix, prefix + "\U0010ffff", len(prefix), prefix, limit))]

    def load_trace(self, tid: str) -> Trace | None:
        r = self.db.execute("SELECT data FROM traces WHERE id = ?", (tid,)).fetchone()
        return Trace.from_state(json.loads(r[0])) if r else None

    def findings(self, since: float | None = None, request_id: str | None = None, limit: int = 10000) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM findings WHERE 1=1", []
        if since is not None:
            q += " AND coalesce(ts, created_at) >= ?"
            args.append(since)
        if request_id is not None:
            q += " AND request_id = ?"
            args.append(request_id)
        q += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        out = []
        for r in self.db.execute(q, args):
            d = dict(r)
            d["fields"] = json.loads(d["fields"] or "{}")
            out.append(d)
        return out[::-1]

    def counts(self) -> dict[str, int]:
        return {"traces": self.db.execute("SELECT count(*) FROM traces").fetchone()[0],
                "findings": self.db.execute("SELECT count(*) FROM findings").fetchone()[0]}

    def meta(self) -> dict[str, Any]:
        return {r[0]: json.loads(r[1]) for r in self.db.execute("SELECT key, value FROM meta")}

    def trace_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT id FROM traces")]


def _live(path: str) -> None:
    """The daemon's rows name no scanned file (`diag.store.rescan`)."""
    return None


def _arrival(t: Trace) -> tuple[float, int]:
    return (t.received_at or 0.0, t.first_line)


def _counted(db: sqlite3.Connection, ids: list[str]) -> set[str]:
    """Which of these trace ids are stored already counted (one index probe each, in SQLite)."""
    rows = db.execute("SELECT id FROM traces WHERE id IN (SELECT value FROM json_each(?)) AND counted",
                      (dumps_text(ids),))
    return {r[0] for r in rows}


def _state_json(t: Trace) -> str:
    return dumps_text(_state(t))


# `_state` reads each of `Trace.to_state`'s fields by name, in this order: a field added to Trace
# is to be read there too (tests/test_store_bulk.py holds the two to the same dict), or this fails at import.
assert len(STATE_FIELDS) == 31


def _state(t: Trace) -> dict[str, Any]:
    """`t.to_state()`, the same dict in the same key order (tests/test_store_bulk.py holds them to it).

    A catch-up stores every trace once, and to_state's loop reads 31 fields by name, each through
    the type's attribute lookup, and compares most of them with "" and a new []: 2.5 us a trace,
    half of what building its row cost. Built, the store's module reads them as struct members
    (db.pxd types `t`), and `_kept` answers the common types without a comparison."""
    values = (t.id, t.server, t.source, t.model, t.client, t.endpoint, t.received_at, t.added_at, t.first_output_at,
              t.finished_at, t.aborted_at, t.failed_at, t.status, t.http_status, t.prompt_tokens, t.output_tokens,
              t.max_tokens, t.images, t.prompt_chars, t.latency_s, t.reason, t.says_no_image, t.stuck, t.findings,
              t.timeline, t.http, t.first_line, t._ended, t._aborted, t._failed, t._completed)
    out = {}
    for i in range(31):
        v = values[i]
        if _kept(v):
            out[STATE_FIELDS[i]] = v
    return out


def _kept(v: object) -> bool:
    """Whether to_state keeps a value: `v is not None and v is not False and v != "" and v != []`
    (defaults are left out; 0 is kept), answered by type first for the ones a trace holds."""
    c = type(v)
    if c is float or c is int or c is dict:
        return True
    if c is str or c is list:
        return len(v) > 0
    return v is not None and v is not False and v != "" and v != []


# Bound where a trace's column is NULL. Python's sqlite3 binds an int, float or str directly but
# looks every other value up in its adapter registry first, None included (a tuple built, a dict
# probed, two attribute lookups: ~0.2 us), and a bool costs twice that. A trace row has five or
# six of them, a sixth of what storing it costs during a catch-up. SQLite keeps no NaN: a NaN
# bound (sqlite3_bind_double sets the value through sqlite3VdbeMemSetDouble) or computed is NULL,
# so NaN binds a NULL at the cost of a float (tests/test_store_bulk.py holds SQLite to that).
_NULL = float("nan")


_MAX_INT = (1 << 63) - 1  # SQLite's INTEGER: the sqlite3 module raises OverflowError past it


def _int64(v: Any) -> Any:
    """A number a log told (a stats line's running or waiting count), for an INTEGER column: one
    past 64 bits is a malformed line's (`to_int` keeps up to 30 digits), unknown, NULL. Bound as it
    was, it raised OverflowError, which is no sqlite3.Error: the commit, and the daemon, stopped
    there (a Ray repeat count that long is a finding's count: `min` with `_MAX_INT`)."""
    return None if v.__class__ is int and not -_MAX_INT - 1 <= v <= _MAX_INT else v


def _trace_row(t: Trace, now: float, origin: str | None, run: str | None) -> tuple:
    """The traces row's values, in `Store.commit`'s column order: NULLs as `_NULL`, `counted` 0 or 1."""
    received = t.received_at
    if received is None:
        received = _NULL
    model = t.model
    http_status = t.http_status
    latency = t.latency_s
    images = t.images
    status = t.status
    return (t.id, t.source, t.server, status, received, now, _state_json(t), received, now,
            _NULL if model is None else model, _NULL if http_status is None else http_status,
            _NULL if latency is None else latency, _NULL if images is None else images, len(t.findings),
            0 if status == "in_flight" else 1, _NULL if origin is None else origin, _NULL if run is None else run)


def _summary(h: Hit) -> str:
    from diag.analysis.findings import render

    return render(h.rule.summary, h.fields, 1, [h.request_id] if h.request_id else [])
