"""`diag daemon`: follow the logs live under systemd, with the dashboard beside it; also
`--check-config` (ExecStartPre) and `--example-config`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from diag.cli.rules import load_rules
from diag.cli.state import add_state_options, daemon_config
from diag.cli.usage import UsageError


def add_parsers(sub: Any) -> None:
    dm = sub.add_parser("daemon", help="follow logs live; keep traces and findings in SQLite (run by systemd)")
    dm.add_argument("--log", action="append", metavar="PATH[:FORMAT]", help="a log file to follow; repeatable (globs in the config)")
    dm.add_argument("--journal", action="append", metavar="UNIT[:FORMAT]",
                    help="a systemd unit whose journal to follow (a server logging to journald); repeatable")
    dm.add_argument("--from-beginning", action="store_true", help="read files (and journals) seen for the first time from their start")
    dm.add_argument("--rules", action="append", metavar="DIR", help="extra rule directory")
    dm.add_argument("--check-config", action="store_true", help="validate the config and the rules, then exit (ExecStartPre)")
    dm.add_argument("--example-config", action="store_true", help="print the commented example config")
    dm.add_argument("--alert-webhook", action="append", metavar="URL", help="also send alerts to this webhook (Alertmanager format); repeatable")
    dm.add_argument("-v", "--verbose", action="store_true")
    dm.add_argument("--web", metavar="HOST:PORT", help="serve the dashboard and /metrics here (default [web] listen, 127.0.0.1:8765)")
    dm.add_argument("--no-web", action="store_true", help="serve no dashboard")
    add_state_options(dm)
    dm.set_defaults(func=cmd_daemon)


def cmd_daemon(args: argparse.Namespace) -> int:
    import logging

    from diag.daemon import config

    if args.example_config:
        sys.stdout.write(config.example_path().read_text(encoding="utf-8"))
        return 0
    from diag.fsname import display

    cfg, extra = daemon_config(args)
    if args.check_config:
        rs = load_rules(cfg.rules_dirs)
        print(f"config {cfg.source}: {len(cfg.logs)} log(s), {len(cfg.journals)} journal(s), state {display(cfg.db_path)}, {len(rs.rules)} rules")
        from diag.alerts.config import parse as parse_alerts

        sinks = parse_alerts(cfg.alerts_doc, extra_webhooks=cfg.alert_webhooks).sinks  # validated at load: types, URLs, secrets readable
        print(f"alerts: journal + {len(sinks)} sink(s)" + "".join(f"\n  {s.name}: {s.type} {s.url or ' '.join(s.command) or s.host}"
                                                                 for s in sinks))
        from diag.ingest.rotated_dirs import RotatedDirs

        rotated = RotatedDirs(cfg.logs, cfg.logrotate_config)  # (what logrotate's config does not say is a warning on stderr)
        for spec in cfg.logs:
            if dirs := rotated.for_path(spec.path):
                print(f"{display(spec.path)}: rotated files also looked for in {', '.join(map(display, dirs))}")
        return 1 if rs.errors else 0
    if not cfg.logs and not cfg.journals:
        raise UsageError("no logs to follow: give --log PATH[:FORMAT], --journal UNIT, or [[log]] / [[journal]] entries in the config")
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
        raise UsageError(f"cannot open the store in {display(cfg.state_dir)}: {exc}") from None
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
