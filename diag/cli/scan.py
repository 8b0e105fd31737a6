"""`diag scan`: the pipeline over existing files (post-mortem), printed as a report or the JSON
document, and optionally written into a store for `diag web`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from diag.cli.rules import load_rules
from diag.cli.usage import UsageError, console


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("scan", help="run the pipeline over existing log files (post-mortem)")
    s.add_argument("paths", nargs="+", metavar="PATH", help="log files, .gz files, or - for stdin")
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
    from diag.parsing.clock import parse_user_time
    from diag.parsing.source import FORMATS
    from diag.pipeline import Pipeline
    from diag.report.document import TraceSummary
    from diag.report.text import print_human

    err = console(stderr=True)
    if args.format and args.format not in FORMATS:
        raise UsageError(f"unknown format {args.format!r} (known: {', '.join(FORMATS)})")
    if args.max_line_bytes < 1024:
        raise UsageError(f"--max-line-bytes {args.max_line_bytes}: must be at least 1024")
    try:
        since = parse_user_time(args.since) if args.since else None
        until = parse_user_time(args.until) if args.until else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rs = load_rules(args.rules)
    hits: list = []
    # Traces are streamed out as they settle (bounded memory); -v's request table and --store keep them.
    spool = summary = None
    if args.json:
        from diag.report.jsonstream import TraceSpool, stdout_writer, write_document

        spool = TraceSpool()
        sink = spool.add
    else:
        summary = TraceSummary()
        sink = summary.add_settled
    pipe = Pipeline(rs, since=since, until=until, max_line=args.max_line_bytes, on_hit=hits.append if args.store else None,
                    keep_traces=bool(args.store or (args.verbose and not args.json)), trace_sink=sink, keep_http=True)
    progress = None
    total = sum(os.path.getsize(p) for p in args.paths if p != "-" and os.path.isfile(p))
    if not args.json and err.is_terminal and total > 8 << 20:
        from rich.progress import BarColumn, Progress, TransferSpeedColumn

        progress = Progress("[progress.description]{task.description}", BarColumn(), TransferSpeedColumn(), console=err, transient=True)
    if progress is not None:
        with progress:
            task = progress.add_task("scanning", total=total)
            for p in args.paths:
                pipe.scan_path(p, args.format, progress=lambda n: progress.advance(task, n))
    else:
        for p in args.paths:
            pipe.scan_path(p, args.format)
    pipe.finish()
    bad = [s for s in pipe.sources if s.error]
    for s in bad:
        print(f"diag: {s.error}", file=sys.stderr)
    if args.store:
        _scan_to_store(args.store, pipe, hits)
    if spool is not None:
        try:
            write_document(pipe, spool, stdout_writer(), indent=None if args.compact else 1)
        finally:
            spool.close()
    else:
        print_human(pipe, console(), verbose=args.verbose, summary=summary)
    if bad:
        return 2
    return 1 if pipe.findings.worst() in ("error", "critical") else 0


def _scan_to_store(state_dir: str, pipe, hits: list) -> None:
    """`diag scan --store DIR`: the same rows the daemon writes, so `diag web --state-dir DIR` shows a post-mortem."""
    import sqlite3
    import time
    from pathlib import Path

    from diag.store.db import Store, StoreError

    try:
        store = Store(Path(state_dir) / "diag.sqlite3")
        meta = store.meta()
        scanned = (meta.get("scanned") or [])[-50:]
        scanned.append({"at": time.time(), "sources": [s.to_dict() for s in pipe.sources], "traces": len(pipe.traces),
                        "findings": len(hits)})
        facts = dict(meta.get("facts") or {})
        facts.update(pipe.facts.by_source)
        traces, step = pipe.traces, 20000
        store.commit(traces[:step], hits, [], {"facts": facts, "scanned": scanned}, pipe.samples)
        for i in range(step, len(traces), step):
            store.commit(traces[i:i + step], [], [])
        store.close()
    except (StoreError, sqlite3.Error, OSError) as exc:
        raise UsageError(f"cannot write the store in {state_dir}: {exc}") from None
    print(f"diag: stored {len(pipe.traces)} traces and {len(hits)} findings in {Path(state_dir) / 'diag.sqlite3'}", file=sys.stderr)
