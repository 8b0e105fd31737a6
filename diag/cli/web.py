"""`diag web`: the dashboard over an existing store, read-only (one copied off a server, or a
`diag scan --store`); the daemon serves the same app live."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from diag.cli.state import add_state_options, daemon_config
from diag.cli.usage import UsageError


def add_parsers(sub: Any) -> None:
    wb = sub.add_parser("web", help="serve the dashboard over an existing store, read-only (following nothing)")
    wb.add_argument("--listen", metavar="HOST:PORT", help="default [web] listen, else 127.0.0.1:8765")
    add_state_options(wb)
    wb.set_defaults(func=cmd_web)


def cmd_web(args: argparse.Namespace) -> int:
    """`diag web`: serve an existing store (one copied off a server, or a `diag scan --store`) read-only."""
    from diag.daemon import config
    from diag.fsname import display
    from diag.store.db import Store, StoreError
    from diag.store.migrations import MIGRATIONS
    from diag.web.server import WebError, prepare

    cfg, _ = daemon_config(args)
    name = display(cfg.db_path)  # in messages (diag.fsname)
    if not cfg.db_path.exists():
        raise UsageError(f"{name}: no diag store here (give --state-dir DIR, or fill one with diag scan --store DIR FILE)")
    try:
        probe = Store(cfg.db_path, readonly=True)
        version = probe.schema_version
        probe.close()
        if version < len(MIGRATIONS):  # an older diag wrote it: bring its schema up once, then read only
            Store(cfg.db_path).close()
            print(f"diag: upgraded {name} from schema {version} to {len(MIGRATIONS)}", file=sys.stderr)
        web = prepare(cfg.db_path, args.listen or cfg.web_listen or config.DEFAULT_WEB_LISTEN, cfg.web_token_file)
    except (StoreError, WebError, Exception) as exc:  # sqlite3.Error too
        raise UsageError(str(exc)) from None
    print(f"diag: serving {name} read-only on {web.url}" + (" (token required)" if web.token else ""), file=sys.stderr)
    try:
        web.serve()
    finally:
        web.stop()
    return 0
