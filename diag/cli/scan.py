"""`diag scan`: the pipeline over existing files (post-mortem), printed as a report or the JSON
document, and optionally written into a store for `diag web`."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from typing import Any

from diag.cli.rules import load_rules
from diag.cli.usage import UsageError, console


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("scan", help="run the pipeline over existing log files (post-mortem)")
    s.add_argument("paths", nargs="+", metavar="PATH", help="log files (.gz, .bz2, .xz too), tar/zip bundles of logs, directories (the files below them), or - for stdin")
    s.add_argument("--json", action="store_true", help="print the JSON document (see README) instead of a report")
    s.add_argument("--compact", action="store_true", help="with --json: one line")
    s.add_argument("--rules", action="append", metavar="DIR", help="extra rule directory or file (overrides built-ins by id); repeatable")
    s.add_argument("--since", metavar="T", help="ignore events before T (ISO time, epoch, or a duration like 2h)")
    s.add_argument("--until", metavar="T", help="ignore events after T")
    s.add_argument("--format", metavar="NAME", help="force a format: vllm, llamacpp, lmdeploy, uvicorn, nginx, proxy")
    s.add_argument("--max-line-bytes", type=int, default=1 << 20, metavar="N", help="cut longer lines (default 1 MiB)")
    s.add_argument("-v", "--verbose", action="store_true", help="list requests and finding request ids")
    s.add_argument("--store", metavar="DIR", help="also write the traces and findings into the store in DIR (see diag web)")
    s.set_defaults(func=cmd_scan)


def cmd_scan(args: argparse.Namespace) -> int:
    from diag.parsing.clock import iso, parse_user_time
    from diag.parsing.source import FORMATS
    from diag.pipeline import Pipeline
    from diag.report.document import TraceSummary

    if args.format and args.format not in FORMATS:
        raise UsageError(f"unknown format {args.format!r} (known: {', '.join(FORMATS)})")
    if args.max_line_bytes < 1024:
        raise UsageError(f"--max-line-bytes {args.max_line_bytes}: must be at least 1024")
    if args.compact and not args.json:
        raise UsageError("--compact is for --json (the JSON document on one line); the report has no compact form")
    try:  # (an empty value is no time: refused, not taken for no window)
        since = parse_user_time(args.since) if args.since is not None else None
        until = parse_user_time(args.until) if args.until is not None else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if since is not None and until is not None and since > until:
        raise UsageError(f"--since {args.since.strip()} ({iso(since)}) is after --until {args.until.strip()} ({iso(until)}): the window is empty")
    from diag.fsname import display

    for p in args.rules or []:  # a rule set asked for and absent is no run without it (a broken file is: reported)
        if not (os.path.isdir(p) or os.path.isfile(p)):  # what the loader reads
            raise UsageError(f"--rules {display(p)}: no such rule file or directory")
    rs = load_rules(args.rules)
    args.paths, unreadable = _files_of(args.paths)
    args.paths = _each_file_once(args.paths)
    if not args.paths:
        print("diag: no log files to scan", file=sys.stderr)
        return 2
    # Traces are streamed out as they settle (bounded memory): into the JSON spool or the report's
    # summary, and with --store into the store in batches. Only -v's request table keeps them.
    spool = summary = None
    if args.json:
        from diag.report.jsonstream import TraceSpool, stdout_writer, write_document

        spool = TraceSpool(indent=None if args.compact else 1)
        sink = spool.add
    else:
        summary = TraceSummary()
        sink = summary.add  # each trace as it settles: its place is (source, first line, arrival)
    store = _StoreWriter(args.store, sink, args.paths) if args.store else None
    matched: set[str] = set()  # the sources a rule matched a line of (an unknown format's lines are still read)

    def on_hit(hit: Any) -> None:
        matched.add(hit.path)
        if store is not None:
            store.hit(hit)

    pipe = Pipeline(rs, since=since, until=until, max_line=args.max_line_bytes, on_hit=on_hit,
                    keep_traces=bool(args.verbose and not args.json), trace_sink=store.trace if store else sink, keep_http=True)
    progress = None
    total = sum(os.path.getsize(p) for p in args.paths if p != "-" and os.path.isfile(p))
    if not args.json and total > 8 << 20 and (err := console(stderr=True)).is_terminal:
        from rich.progress import BarColumn, Progress, TransferSpeedColumn

        progress = Progress("[progress.description]{task.description}", BarColumn(), TransferSpeedColumn(), console=err, transient=True)
    if progress is not None:
        with progress:
            task = progress.add_task("scanning", total=total)
            for p in args.paths:
                _left_out(p, pipe.scan_path(p, args.format, progress=lambda n: progress.advance(task, n)).left_out)
    else:
        for p in args.paths:
            _left_out(p, pipe.scan_path(p, args.format).left_out)
    pipe.finish()
    bad = [s for s in pipe.sources if s.error]
    for s in bad:
        print(f"diag: {s.error}", file=sys.stderr)
    unrecognised = _unrecognised(pipe.sources, matched, args.format)
    window = _window(pipe, args.since, since, args.until, until)
    warnings = [w for w in (unrecognised, window and window[1]) if w]
    # nothing read as a server log (each file with lines unrecognised): no report to trust
    nothing = unrecognised is not None and not any(s.recognised for s in pipe.sources if s.lines)
    for w in warnings:
        print(f"diag: {w}", file=sys.stderr)
    if store is not None:
        store.finish(pipe)
    if spool is not None:
        try:
            write_document(pipe, spool, stdout_writer(), warnings)
        finally:
            spool.close()
    else:
        from diag.report.text import print_human  # (rich: only for a report people read)

        print_human(pipe, console(), verbose=args.verbose, summary=summary, warnings=warnings, window=window and window[0],
                    nothing_read=nothing)
    if bad or unreadable or nothing:
        return 2
    return 1 if pipe.findings.worst() in ("error", "critical") else 0


def _unrecognised(sources: list[Any], matched: set[str], forced: str | None) -> str | None:
    """Marks the sources diag read nothing of: lines, none of them a server's log line (the format
    is `unknown`, or the forced one read none), and no rule matched any (a kernel log's OOM kill is
    read, in no server's format); and says so in one line. Not an empty file (nothing to read), not
    a startup log (its lines are a server's, though no request is in them)."""
    from diag.parsing.source import FORMATS

    found = [s for s in sources if s.lines and not s.events and not s.error and s.path not in matched]
    if not found:
        return None
    for s in found:
        s.recognised = False
    what = forced or ", ".join(FORMATS[:-1]) + " or " + FORMATS[-1]
    how = f"read with --format {forced}" if forced else "--format NAME forces a format"
    if len(found) == 1:
        s = found[0]
        lines = "its one line is not" if s.lines == 1 else f"none of its {s.lines} lines is"
        return f"{s.path}: not recognised as a server log: {lines} a {what} log line, and no rule matched any ({how})"
    return (f"{len(found)} files not recognised as server logs: {found[0].path} and {len(found) - 1} more: none of their lines "
            f"is a {what} log line, and no rule matched any ({how})")


def _window(pipe: Any, since_arg: str | None, since: float | None, until_arg: str | None,
            until: float | None) -> tuple[str, str | None] | None:
    """With --since/--until: what the report says of the window (the window, and how many of the
    lines read it left out), and a warning when no line read has a time in it."""
    from diag.parsing.clock import iso

    if since is None and until is None:
        return None
    label = " ".join(f"--{k} {a.strip()}" for k, a in (("since", since_arg), ("until", until_arg)) if a is not None)
    if until is None:
        span = f"from {iso(since)} on"
    elif since is None:
        span = f"up to {iso(until)}"
    else:
        span = f"from {iso(since)} to {iso(until)}"
    st, lines = pipe.stats, pipe.stats.lines
    said = f"Window: {span} ({label}): {st.outside} of {lines} lines read fell outside it"
    if not st.outside and pipe.last_ts is None and lines:
        said += " (no line read has a time: the window left none out)"
    if not st.outside or pipe.last_ts is not None:
        return said, None
    first, last = iso(st.outside_first), iso(st.outside_last)
    return said, (f"{label}: none of the {lines} lines read has a time in the window ({span}): {st.outside} lines fall outside it, "
                  f"their times from {first} to {last}; widen the window")


def _files_of(paths: list[str]) -> tuple[list[str], bool]:
    """The paths, each directory replaced by the files below it (`diag.ingest.discover`): those
    left out are said in one line per directory, and so is a directory given again; and whether a
    directory below one could not be listed (said, each in a line: input not read, exit status 2)."""
    from diag.fsname import display, file_key
    from diag.ingest.discover import files_under

    out = []
    unreadable = False
    dirs: dict[str, str] = {}  # a directory's identity → the path it was first given as
    for p in paths:
        if p == "-" or not os.path.isdir(p):
            out.append(p)
            continue
        key = file_key(os.stat(p))
        if key in dirs:
            same = "given twice" if p == dirs[key] else f"the same directory as {display(dirs[key])}"
            print(f"diag: {display(p)}: {same}; read once", file=sys.stderr)
            continue
        dirs[key] = p
        found, left, unlisted = files_under(p)
        for why in unlisted:
            print(f"diag: {why}; not read", file=sys.stderr)
        unreadable = unreadable or bool(unlisted)
        _left_out(p, {why: [display(f) for f in files] for why, files in left.items()})
        if not found:
            print(f"diag: {display(p)}: no log files in it", file=sys.stderr)
        out.extend(found)
    return out, unreadable


def _left_out(where: str, left: dict[str, list[str]]) -> None:
    """A line for each kind of file that is no log (binary; source or config) a directory or an
    archive at `where` holds (by why, display names)."""
    from diag.fsname import display

    for why, names in left.items():
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        print(f"diag: {display(where)}: left out {len(names)} {why} file(s): {names[0]}{more}", file=sys.stderr)


def _each_file_once(paths: list[str]) -> list[str]:
    """The paths less those naming a file named before (`a.log ./a.log`, a glob and a name, a
    symlink: the same device and inode), each left out with one line: a file read twice would count
    its requests and findings twice."""
    from diag.fsname import display, file_key

    first: dict[str, str] = {}
    out = []
    for p in paths:
        try:
            st = os.stat(p) if p != "-" else None
        except OSError:  # not there or not readable: opening it says what is wrong
            st = None
        if st is not None:
            key = file_key(st)
            if key in first:
                same = "given twice" if p == first[key] else f"the same file as {display(first[key])}"
                print(f"diag: {display(p)}: {same}; read once", file=sys.stderr)
                continue
            first[key] = p
        out.append(p)
    return out


class _StoreWriter:
    """`diag scan --store DIR`: the same rows the daemon writes, so `diag web --state-dir DIR` shows a
    post-mortem. Traces and findings go in as they come, a batch per transaction: memory stays
    bounded however long the logs are. Scanning a file again replaces what the earlier scan of it
    stored, in the last transaction (`diag.store.rescan`)."""

    BATCH = 20000

    def __init__(self, state_dir: str, sink: Any, paths: list[str]) -> None:
        from pathlib import Path

        from diag.fsname import display
        from diag.store.db import Store, StoreError
        from diag.store.rescan import ScanRun

        self.path = Path(state_dir) / "diag.sqlite3"
        self.name = display(self.path)  # in messages (diag.fsname)
        self._errors = (StoreError, sqlite3.Error, OSError)
        self._sink = sink
        self.traces: list = []
        self.hits: list = []
        self.stored_traces = self.stored_hits = 0
        try:
            self.store = Store(self.path)
            self.run = ScanRun.begin(self.store.db, paths)
        except self._errors as exc:
            raise UsageError(f"cannot write the store in {display(state_dir)}: {exc}") from None

    def trace(self, t: Any) -> None:
        self._sink(t)
        self.traces.append(t)
        if len(self.traces) >= self.BATCH:
            self._commit()

    def hit(self, h: Any) -> None:
        self.hits.append(h)
        if len(self.hits) >= self.BATCH:
            self._commit()

    def _commit(self, meta: dict[str, Any] | None = None, samples: Any = (), extra: Any = None) -> None:
        try:
            self.store.commit(self.traces, self.hits, [], meta, samples, extra, scan=self.run)
        except self._errors as exc:
            raise UsageError(f"cannot write the store {self.name}: {exc}") from None
        self.stored_traces += len(self.traces)
        self.stored_hits += len(self.hits)
        self.traces, self.hits = [], []

    def finish(self, pipe: Any) -> None:
        import time

        try:
            meta = self.store.meta()
        except self._errors as exc:
            raise UsageError(f"cannot read the store {self.name}: {exc}") from None
        scanned = (meta.get("scanned") or [])[-50:]
        scanned.append({"at": time.time(), "sources": [s.to_dict() for s in pipe.sources],
                        "traces": self.stored_traces + len(self.traces), "findings": self.stored_hits + len(self.hits)})
        facts = dict(meta.get("facts") or {})
        facts.update(pipe.facts.by_source)
        # A file this run could not open keeps what an earlier scan stored for it.
        read = [s.path for s in pipe.sources if s.lines or not s.error]
        self._commit({"facts": facts, "scanned": scanned}, pipe.samples, lambda db: self.run.forget_earlier(db, read))
        self.store.close()
        print(f"diag: stored {self.stored_traces} traces and {self.stored_hits} findings in {self.name}", file=sys.stderr)
