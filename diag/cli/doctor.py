"""`diag doctor`: its options; the checks are `diag.doctor`."""

from __future__ import annotations

import argparse
import os
from typing import Any

from diag.cli.usage import UsageError


def add_parsers(sub: Any) -> None:
    d = sub.add_parser("doctor", help="triage a running inference server: health, models, generation, vision, GPU, logs")
    d.add_argument("--url", help="the inference server (default: [doctor] url in the config, $DIAG_URL, http://127.0.0.1:8000)")
    d.add_argument("--config", metavar="FILE", help="config file: [doctor] defaults and the [[log]] files to check")
    d.add_argument("--model", help="the model name clients ask for")
    d.add_argument("--proxy-url", help="a proxy in front of the server (chat.html + proxy_server.py, nginx)")
    d.add_argument("--log", action="append", metavar="PATH", help="a server log to check; repeatable")
    d.add_argument("--journal", action="append", metavar="UNIT[:FORMAT]",
                   help="a systemd unit whose journal to check (a server logging to journald); repeatable")
    d.add_argument("--log-minutes", type=float, default=30.0, metavar="N", help="how far back the log check looks (default 30)")
    d.add_argument("--state-dir", help="diag's state directory (for the disk check)")
    d.add_argument("--rules", action="append", metavar="DIR", help="extra rule directory for the log check")
    d.add_argument("--timeout", type=float, default=10.0, help="seconds per network call (default 10)")
    d.add_argument("--check", action="append", metavar="ID", help="run only this check; repeatable (see --list-checks)")
    d.add_argument("--list-checks", action="store_true", help="list the checks and exit")
    d.add_argument("--json", action="store_true", help='print {"checks": [...], "verdict"}')
    d.add_argument("-v", "--verbose", action="store_true", help="show each check's details")
    d.set_defaults(func=cmd_doctor)


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
    given = bool(args.log or args.journal)  # on the command line: those alone, else the config's [[log]] and [[journal]]
    logs = (args.log or []) if given else [p for spec in cfg.logs
                                           for p in (sorted(globmod.glob(spec.path)) if globmod.has_magic(spec.path) else [spec.path])]
    journals = [config.JournalSpec.parse(j) for j in args.journal or []] if given else list(cfg.journals)
    url = args.url or cfg.doctor_url or os.environ.get("DIAG_URL") or "http://127.0.0.1:8000"
    ctx = doctor.Context(url=url.rstrip("/"), model=args.model or cfg.doctor_model, proxy_url=args.proxy_url or cfg.doctor_proxy_url,
                         timeout=args.timeout, logs=logs, journals=journals, log_minutes=args.log_minutes,
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
