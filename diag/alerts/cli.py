"""`diag silence …` and `diag alerts …`: the commands, registered by `diag.cli`.

They mirror amtool: `diag silence add [--for 2h] [--comment TEXT] MATCHER…`, `diag silence list`,
`diag silence expire ID`; `diag alerts` shows firing, recently resolved and silenced alerts and the
outbox; `diag alerts test` sends a synthetic alert through each sink's real delivery code.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import time
from typing import Any, Callable

from diag.alerts import silences as sil
from diag.alerts import view
from diag.alerts.config import AlertConfigError, AlertsConfig, parse as parse_alerts
from diag.cli.state import daemon_config, open_store
from diag.cli.usage import UsageError, console


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    s = sub.add_parser("silence", help="mute alert notifications by label matchers (like amtool silence)")
    ssub = s.add_subparsers(dest="silence_cmd", metavar="ACTION")
    sa = ssub.add_parser("add", help="add a silence: MATCHER is label=value, label!=value, label=~regex or label!~regex")
    sa.add_argument("matchers", nargs="+", metavar="MATCHER")
    sa.add_argument("--for", dest="duration", default="2h", metavar="DURATION", help="how long (90s, 30m, 2h, 1d; default 2h)")
    sa.add_argument("--comment", default="", help="why (shown by `diag silence list` and `diag alerts`)")
    sa.add_argument("--author", default=None, help="who (default user@host)")
    sl = ssub.add_parser("list", help="active silences (--all: expired ones too)")
    sl.add_argument("--all", action="store_true")
    sl.add_argument("--json", action="store_true")
    se = ssub.add_parser("expire", help="end a silence now (a unique prefix of its id is enough)")
    se.add_argument("id")
    for x in (sa, sl, se):
        common(x)
    s.set_defaults(func=cmd_silence, silence_cmd=None)

    a = sub.add_parser("alerts", help="firing, resolved and silenced alerts and the outbox; `alerts test` checks the sinks")
    asub = a.add_subparsers(dest="alerts_cmd", metavar="ACTION")
    at = asub.add_parser("test", help="send a synthetic test alert to every sink (or --sink NAME); exit 0 if all delivered, else 2")
    at.add_argument("--sink", action="append", metavar="NAME")
    common(at)
    a.add_argument("--json", action="store_true")
    common(a)
    a.set_defaults(func=cmd_alerts, alerts_cmd=None)


def cmd_silence(args: argparse.Namespace) -> int:
    if args.silence_cmd is None:
        raise UsageError("silence: choose add, list or expire")
    store = open_store(args, write=args.silence_cmd != "list")
    try:
        if args.silence_cmd == "add":
            try:
                matchers = [sil.Matcher.parse(m) for m in args.matchers]
                s = sil.add(store.db, matchers, sil.parse_duration(args.duration), args.comment,
                            args.author or f"{getpass.getuser()}@{socket.gethostname()}")
            except sil.MatcherError as exc:
                raise UsageError(str(exc)) from None
            print(s.id)
            return 0
        if args.silence_cmd == "expire":
            s = sil.expire(store.db, args.id)
            if s is None:
                print(f"diag: no active silence with id {args.id!r} (or the prefix is not unique)", file=sys.stderr)
                return 1
            print(f"expired {s.id}")
            return 0
        rows = [s.to_dict() for s in _silences(store, args.all)]
        if args.json:
            print(json.dumps(rows, indent=1, ensure_ascii=False))
            return 0
        from rich.markup import escape
        from rich.table import Table

        t = Table(show_edge=False, header_style="bold")
        for c in ("id", "matchers", "ends", "state", "created by", "comment"):
            t.add_column(c)
        for r in rows:
            t.add_row(r["id"], escape(" ".join(r["matchers"])), r["ends_at"], r["state"], escape(r["created_by"]), escape(r["comment"]))
        console().print(t if rows else "no silences")
        return 0
    finally:
        store.close()


def _silences(store: Any, include_expired: bool = False) -> list[sil.Silence]:
    return view.silences(store.db, include_expired)


def cmd_alerts(args: argparse.Namespace) -> int:
    if args.alerts_cmd == "test":
        return cmd_alerts_test(args)
    store = open_store(args)
    try:
        doc = view.alerts_doc(store.db)
    finally:
        store.close()
    if args.json:
        print(json.dumps(doc, indent=1, ensure_ascii=False))
        return 0
    from rich.markup import escape
    from rich.table import Table

    con = console()
    for title, key in (("Firing", "firing"), ("Silenced or inhibited", "silenced"), ("Resolved (last 24 h)", "resolved")):
        items = doc[key]
        con.print(f"[bold]{title}[/] ({len(items)})")
        if not items:
            continue
        t = Table(show_edge=False, header_style="bold")
        for c in ("alert", "severity", "server", "source", "count", "since", "summary" if key != "silenced" else "muted by"):
            t.add_column(c)
        for a in items:
            lab = a["labels"]
            why = ", ".join(a["silenced_by"]) or (f"inhibited by {a['inhibited_by']}" if a["inhibited_by"] else "")
            t.add_row(lab["alertname"], lab.get("severity", ""), lab.get("server", ""), escape(lab.get("source", "")), str(a["count"]),
                      a["starts_at"] or "", escape(a["summary"][:120] if key != "silenced" else why))
        con.print(t)
    ob = doc["outbox"]
    con.print(f"[bold]Outbox[/]: {ob['queued']} queued, {ob['delivered']} delivered, {ob['expired']} expired")
    for s in ob["sinks"]:
        line = f"  {s['sink']}: {s['queued']} queued, {s['delivered']} delivered, {s['expired']} expired"
        if s["last_error"]:
            line += f" — failing: {s['last_error']}"
        con.print(escape(line))
    con.print(f"[bold]Silences[/]: {len(doc['silences'])} active")
    return 0


def test_document(cfg: AlertsConfig, now: float) -> dict[str, Any]:
    from diag.alerts.manager import AlertManager
    from diag.alerts.model import Alert

    m = AlertManager(cfg)
    labels = {"alertname": "diag-test", "severity": "info", "category": "diag", "server": "diag", "source": "diag alerts test",
              "host": m.host}
    a = Alert(labels, "diag test alert", "A test notification from `diag alerts test`; nothing is wrong.",
              "Nothing to do: this checks that the notification reached you.", "", now, now, count=1)
    m.alerts[a.fp] = a
    from diag.alerts.manager import Group

    g = Group("{}:{alertname=\"diag-test\"}", {"alertname": "diag-test"}, [a.fp])
    nid = f"test-{int(now * 1000)}"
    doc = m.document(g, [a], nid, "test")
    doc["am_alerts"] = [{"labels": labels, "annotations": a.annotations(cfg.external_url), "startsAt": doc["alerts"][0]["startsAt"]}]
    return doc


def cmd_alerts_test(args: argparse.Namespace) -> int:
    from diag.alerts.outbox import deliver
    from diag.alerts.sinks import build, journal

    cfg, _ = daemon_config(args)
    try:
        acfg = parse_alerts(cfg.alerts_doc, extra_webhooks=cfg.alert_webhooks, web_listen=cfg.web_listen)
    except AlertConfigError as exc:
        raise UsageError(str(exc)) from None
    chosen = acfg.sinks
    if args.sink:
        unknown = set(args.sink) - {s.name for s in acfg.sinks} - {"journal"}
        if unknown:
            raise UsageError(f"no sink named {', '.join(sorted(unknown))} (configured: {', '.join(s.name for s in acfg.sinks) or 'none'})")
        chosen = [s for s in acfg.sinks if s.name in args.sink]
    doc = test_document(acfg, time.time())
    failed = 0
    if not args.sink or "journal" in args.sink:
        print(f"journal: {journal.line(doc)[1]}")
    for s in chosen:
        sink = build(s)
        err = deliver(sink, [{**doc, "receiver": s.name}])
        sink.close()
        if err is None:
            print(f"{s.name} ({s.type}): delivered")
        else:
            failed += 1
            print(f"{s.name} ({s.type}): FAILED: {err}")
    if not acfg.sinks:
        print("no [[alerts.sink]] configured: only the journal line is written", file=sys.stderr)
    return 2 if failed else 0
