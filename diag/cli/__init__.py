"""The `diag` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from rich.console import Console

from diag import __version__


class UsageError(Exception):
    """Bad arguments or unreadable input: exit status 2 with a one-line reason."""


def _console(stderr: bool = False) -> Console:
    no_color = bool(os.environ.get("NO_COLOR"))
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 160  # a pipe or file gets long lines, not 80-column wrapping
    return Console(stderr=stderr, no_color=no_color, highlight=False, soft_wrap=False, width=width)


def _load_rules(dirs: Sequence[str] | None, err: Console):
    from diag.analysis.rules import ruleset as rules

    rs = rules.load(dirs or [])
    for e in rs.errors:
        print(f"diag: rule error: {e}", file=sys.stderr)
    return rs


# -- scan ------------------------------------------------------------------------------------
def cmd_scan(args: argparse.Namespace) -> int:
    from diag.parsing.clock import parse_user_time
    from diag.parsing.source import FORMATS
    from diag.pipeline import Pipeline
    from diag.report.document import TraceSummary, print_human

    err = _console(stderr=True)
    if args.format and args.format not in FORMATS:
        raise UsageError(f"unknown format {args.format!r} (known: {', '.join(FORMATS)})")
    if args.max_line_bytes < 1024:
        raise UsageError(f"--max-line-bytes {args.max_line_bytes}: must be at least 1024")
    try:
        since = parse_user_time(args.since) if args.since else None
        until = parse_user_time(args.until) if args.until else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rs = _load_rules(args.rules, err)
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
        print_human(pipe, _console(), verbose=args.verbose, summary=summary)
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


# -- rules -----------------------------------------------------------------------------------
def cmd_rules(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from diag.analysis.rules import ruleset as rules

    out, err = _console(), _console(stderr=True)
    if args.rules_cmd == "list":
        rs = _load_rules(args.rules, err)
        if args.json:
            json.dump([r.meta() for r in rs.rules], sys.stdout, indent=1)
            sys.stdout.write("\n")
            return 0
        t = Table(show_edge=False, header_style="bold")
        for c in ("id", "severity", "category", "scope", "title"):
            t.add_column(c)
        for r in sorted(rs.rules, key=lambda r: (r.category, r.id)):
            t.add_row(r.id, r.severity, r.category, r.scope, escape(r.title))
        out.print(t)
        out.print(f"{len(rs.rules)} rules from {rules.builtin_dir()}" + (f" and {', '.join(args.rules)}" if args.rules else ""))
        return 0 if not rs.errors else 1
    if args.rules_cmd == "test":
        from diag.analysis.rules.examples import test_ruleset

        if args.files:
            rs = rules.load(args.files, builtin=False)
        else:
            rs = rules.load(args.rules or [])
        for e in rs.errors:
            out.print(f"[red]ERROR[/] {escape(e)}")
        results = test_ruleset(rs)
        failed = [r for r in results if not r.ok]
        for r in failed:
            kind = "positive" if r.positive else "negative"
            first = r.example.text.strip().splitlines()[0][:160] if r.example.text.strip() else ""
            out.print(f"[red]FAIL[/] {r.rule.id} ({r.rule.file}:{r.rule.line}) {kind} example: {escape(r.message)}\n     {escape(first)}")
        n_rules = len(rs.rules)
        out.print(f"{len(results) - len(failed)} passed, {len(failed)} failed ({n_rules} rules, {len(results)} examples)")
        return 1 if failed or rs.errors else 0
    if args.rules_cmd == "lint":
        from diag.analysis.rules.lint import lint

        rs = rules.load(args.files or args.rules or [], builtin=not args.files)
        problems = list(rs.errors) + lint(rs)
        for p in problems:
            out.print(f"[red]{escape(p)}[/]")
        out.print(f"{len(rs.rules)} rules checked, {len(problems)} problem(s)")
        return 1 if problems else 0
    raise UsageError("rules: choose list, test or lint")


# -- doctor ----------------------------------------------------------------------------------
def cmd_doctor(args: argparse.Namespace) -> int:
    from diag import doctor
    from diag.doctor.output import render, to_json

    if args.list_checks:
        for cid, (desc, _fn) in doctor.registry().items():
            print(f"{cid:11} {desc}")
        return 0
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    from diag.daemon import config
    import glob as globmod

    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        raise UsageError(str(exc)) from None
    logs = args.log or [p for spec in cfg.logs for p in (sorted(globmod.glob(spec.path)) if globmod.has_magic(spec.path) else [spec.path])]
    url = args.url or cfg.doctor_url or os.environ.get("DIAG_URL") or "http://127.0.0.1:8000"
    ctx = doctor.Context(url=url.rstrip("/"), model=args.model or cfg.doctor_model, proxy_url=args.proxy_url or cfg.doctor_proxy_url,
                         timeout=args.timeout, logs=logs, log_minutes=args.log_minutes,
                         state_dir=args.state_dir or str(cfg.state_dir), rules_dirs=(args.rules or []) + cfg.rules_dirs)
    try:
        results = doctor.run(ctx, args.check)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(to_json(results))
    else:
        render(results, verbose=args.verbose)
    return doctor.exit_code(results)


# -- daemon and what it stored ---------------------------------------------------------------
def _daemon_config(args: argparse.Namespace):
    from diag.daemon import config

    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        raise UsageError(str(exc)) from None
    extra = [config.LogSpec.parse(a) for a in getattr(args, "log", None) or []]
    cfg.logs.extend(extra)
    if getattr(args, "state_dir", None):
        from pathlib import Path

        cfg.state_dir = Path(args.state_dir)
    if getattr(args, "from_beginning", False):
        cfg.from_beginning = True
    if getattr(args, "rules", None):
        cfg.rules_dirs.extend(args.rules)
    if getattr(args, "alert_webhook", None):  # quick start: webhook sinks without a config file
        cfg.alert_webhooks = list(args.alert_webhook)
        from diag.alerts.config import AlertConfigError, parse as parse_alerts

        try:
            parse_alerts(cfg.alerts_doc, extra_webhooks=cfg.alert_webhooks)
        except AlertConfigError as exc:
            raise UsageError(f"--alert-webhook: {exc}") from None
    return cfg, extra


def cmd_daemon(args: argparse.Namespace) -> int:
    import logging

    from diag.daemon import config
    from diag.analysis.rules import ruleset as rules

    if args.example_config:
        sys.stdout.write(config.example_path().read_text(encoding="utf-8"))
        return 0
    cfg, extra = _daemon_config(args)
    if args.check_config:
        rs = rules.load(cfg.rules_dirs)
        for e in rs.errors:
            print(f"diag: rule error: {e}", file=sys.stderr)
        print(f"config {cfg.source}: {len(cfg.logs)} log(s), state {cfg.db_path}, {len(rs.rules)} rules")
        from diag.alerts.config import parse as parse_alerts

        sinks = parse_alerts(cfg.alerts_doc, extra_webhooks=cfg.alert_webhooks).sinks  # validated at load: types, URLs, secrets readable
        print(f"alerts: journal + {len(sinks)} sink(s)" + "".join(f"\n  {s.name}: {s.type} {s.url or ' '.join(s.command) or s.host}"
                                                                 for s in sinks))
        return 1 if rs.errors else 0
    if not cfg.logs:
        raise UsageError("no logs to follow: give --log PATH[:FORMAT] or [[log]] entries in the config")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(message)s" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s %(levelname)s %(message)s")
    from diag.daemon.service import Daemon
    from diag.store.db import StoreError

    listen = None if args.no_web else (args.web or cfg.web_listen)
    web = None
    if listen:
        from diag.web.server import BindError, WebError, prepare

        try:
            web = prepare(cfg.db_path, listen, cfg.web_token_file)  # refuses before anything is read
        except BindError as exc:  # following the logs matters more than the dashboard
            logging.getLogger("diag").error("%s; the dashboard is off", exc)
            listen = None
        except WebError as exc:
            raise UsageError(str(exc)) from None
    cfg.web_listen = listen  # what is served: alerts link to it (--web/--no-web included)
    try:
        d = Daemon(cfg, args.config, extra)
    except (StoreError, OSError) as exc:
        if web is not None:
            web.stop()
        raise UsageError(f"cannot open the store in {cfg.state_dir}: {exc}") from None
    d.install_signals()
    if web is not None:
        d.on_commit.append(web.app.state.web.live.poke)
        web.start_thread()
        logging.getLogger("diag").info("web: dashboard on %s, Prometheus metrics on %smetrics%s", web.url, web.url,
                                       " (token required)" if web.token else "")
    try:
        return d.run()
    finally:
        if web is not None:
            web.stop()


def cmd_web(args: argparse.Namespace) -> int:
    """`diag web`: serve an existing store (one copied off a server, or a `diag scan --store`) read-only."""
    from diag.daemon import config
    from diag.store.db import MIGRATIONS, Store, StoreError
    from diag.web.server import WebError, prepare

    cfg, _ = _daemon_config(args)
    if not cfg.db_path.exists():
        raise UsageError(f"{cfg.db_path}: no diag store here (give --state-dir DIR, or fill one with diag scan --store DIR FILE)")
    try:
        probe = Store(cfg.db_path, readonly=True)
        version = probe.schema_version
        probe.close()
        if version < len(MIGRATIONS):  # an older diag wrote it: bring its schema up once, then read only
            Store(cfg.db_path).close()
            print(f"diag: upgraded {cfg.db_path} from schema {version} to {len(MIGRATIONS)}", file=sys.stderr)
        web = prepare(cfg.db_path, args.listen or cfg.web_listen or config.DEFAULT_WEB_LISTEN, cfg.web_token_file)
    except (StoreError, WebError, Exception) as exc:  # sqlite3.Error too
        raise UsageError(str(exc)) from None
    print(f"diag: serving {cfg.db_path} read-only on {web.url}" + (" (token required)" if web.token else ""), file=sys.stderr)
    try:
        web.serve()
    finally:
        web.stop()
    return 0


def _open_store(args: argparse.Namespace):
    from diag.store.db import Store, StoreError

    cfg, _ = _daemon_config(args)
    try:
        return Store(cfg.db_path, readonly=True)
    except (StoreError, Exception) as exc:  # sqlite3.Error too
        raise UsageError(str(exc)) from None


def cmd_status(args: argparse.Namespace) -> int:
    from diag.store.views import status_doc, print_status

    store = _open_store(args)
    doc = status_doc(store)
    if args.json:
        print(json.dumps(doc, indent=1, ensure_ascii=False))
    else:
        print_status(doc, _console())
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from diag.store.views import print_trace, trace_doc

    store = _open_store(args)
    doc = trace_doc(store, args.id)
    if doc is None:
        cands = store.trace_candidates(args.id, 21)
        if len(cands) > 1:
            more = " …" if len(cands) > 20 else ""
            raise UsageError(f"{args.id!r} is ambiguous: {len(cands) if not more else 'more than 20'} traces start with it "
                             f"({', '.join(cands[:20])}{more})")
        print(f"diag: no trace {args.id!r} in {store.path}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=1, ensure_ascii=False))
    else:
        print_trace(doc, _console())
    return 0


def cmd_findings(args: argparse.Namespace) -> int:
    from diag.parsing.clock import parse_user_time
    from diag.store.views import print_findings

    store = _open_store(args)
    try:
        since = parse_user_time(args.since) if args.since else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rows = store.findings(since=since)
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
    else:
        print_findings(rows, _console())
    return 0


# -- main ------------------------------------------------------------------------------------
class _Version(argparse.Action):
    """`diag --version`: also says whether the compiled log classifier is in use (imported only here)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from diag.ingest.fastpath import IMPLEMENTATION

        print(f"diag {__version__} (log classifier: {IMPLEMENTATION})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diag", description="Diagnostics for self-hosted LLM inference servers (vLLM, LMDeploy, llama.cpp).")
    p.add_argument("--version", action=_Version, nargs=0, help="show the version and which log classifier is in use, and exit")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

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

    d = sub.add_parser("doctor", help="triage a running inference server: health, models, generation, vision, GPU, logs")
    d.add_argument("--url", help="the inference server (default: [doctor] url in the config, $DIAG_URL, http://127.0.0.1:8000)")
    d.add_argument("--config", metavar="FILE", help="config file: [doctor] defaults and the [[log]] files to check")
    d.add_argument("--model", help="the model name clients ask for")
    d.add_argument("--proxy-url", help="a proxy in front of the server (chat.html + proxy_server.py, nginx)")
    d.add_argument("--log", action="append", metavar="PATH", help="a server log to check; repeatable")
    d.add_argument("--log-minutes", type=float, default=30.0, metavar="N", help="how far back the log check looks (default 30)")
    d.add_argument("--state-dir", help="diag's state directory (for the disk check)")
    d.add_argument("--rules", action="append", metavar="DIR", help="extra rule directory for the log check")
    d.add_argument("--timeout", type=float, default=10.0, help="seconds per network call (default 10)")
    d.add_argument("--check", action="append", metavar="ID", help="run only this check; repeatable (see --list-checks)")
    d.add_argument("--list-checks", action="store_true", help="list the checks and exit")
    d.add_argument("--json", action="store_true", help='print {"checks": [...], "verdict"}')
    d.add_argument("-v", "--verbose", action="store_true", help="show each check's details")
    d.set_defaults(func=cmd_doctor)

    dm = sub.add_parser("daemon", help="follow logs live; keep traces and findings in SQLite (run by systemd)")
    dm.add_argument("--log", action="append", metavar="PATH[:FORMAT]", help="a log file to follow; repeatable (globs in the config)")
    dm.add_argument("--from-beginning", action="store_true", help="read files seen for the first time from their start")
    dm.add_argument("--rules", action="append", metavar="DIR", help="extra rule directory")
    dm.add_argument("--check-config", action="store_true", help="validate the config and the rules, then exit (ExecStartPre)")
    dm.add_argument("--example-config", action="store_true", help="print the commented example config")
    dm.add_argument("--alert-webhook", action="append", metavar="URL", help="also send alerts to this webhook (Alertmanager format); repeatable")
    dm.add_argument("-v", "--verbose", action="store_true")
    dm.add_argument("--web", metavar="HOST:PORT", help="serve the dashboard and /metrics here (default [web] listen, 127.0.0.1:8765)")
    dm.add_argument("--no-web", action="store_true", help="serve no dashboard")
    dm.set_defaults(func=cmd_daemon)
    wb = sub.add_parser("web", help="serve the dashboard over an existing store, read-only (following nothing)")
    wb.add_argument("--listen", metavar="HOST:PORT", help="default [web] listen, else 127.0.0.1:8765")
    wb.set_defaults(func=cmd_web)
    st = sub.add_parser("status", help="what the daemon follows and how far it got (reads the store)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    tr = sub.add_parser("trace", help="one request's timeline from the store")
    tr.add_argument("id", help="request id (a unique prefix is enough)")
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(func=cmd_trace)
    fi = sub.add_parser("findings", help="findings the daemon stored")
    fi.add_argument("--since", metavar="T", help="ISO time, epoch, or a duration like 2h")
    fi.add_argument("--json", action="store_true")
    fi.set_defaults(func=cmd_findings)
    for x in (dm, st, tr, fi, wb):
        x.add_argument("--config", metavar="FILE", help="config file (default $DIAG_CONFIG, else /etc/diag/diag.toml)")
        x.add_argument("--state-dir", metavar="DIR", help="where the store is (overrides the config)")

    from diag.alerts.cli import add_parsers as add_alert_parsers

    def store_options(x: argparse.ArgumentParser) -> None:
        x.add_argument("--config", metavar="FILE", help="config file (default $DIAG_CONFIG, else /etc/diag/diag.toml)")
        x.add_argument("--state-dir", metavar="DIR", help="where the store is (overrides the config)")

    add_alert_parsers(sub, store_options)

    r = sub.add_parser("rules", help="list, test and lint rule files")
    rsub = r.add_subparsers(dest="rules_cmd", metavar="ACTION")
    rl = rsub.add_parser("list", help="list the rules in effect")
    rl.add_argument("--json", action="store_true")
    rt = rsub.add_parser("test", help="run every rule's examples (non-zero exit on a failure)")
    rt.add_argument("files", nargs="*", metavar="FILE", help="rule files or directories (default: built-in + --rules)")
    rn = rsub.add_parser("lint", help="check rule files for mistakes and slow patterns")
    rn.add_argument("files", nargs="*", metavar="FILE")
    for x in (rl, rt, rn):
        x.add_argument("--rules", action="append", metavar="DIR", help="extra rule directory")
    r.set_defaults(func=cmd_rules, rules_cmd=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"diag: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
