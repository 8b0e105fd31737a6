"""The config and the store a command works on: `--config FILE` and `--state-dir DIR`, shared by
`diag daemon`, `diag web`, the commands that read what the daemon stored (`status`, `trace`,
`findings`) and `diag silence` / `diag alerts`."""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from diag.cli.usage import UsageError

if TYPE_CHECKING:
    from diag.daemon.config import Config, LogSpec
    from diag.store.db import Store


def add_state_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="config file (default $DIAG_CONFIG, else /etc/diag/diag.toml)")
    p.add_argument("--state-dir", metavar="DIR", help="where the store is (overrides the config)")


def daemon_config(args: argparse.Namespace) -> tuple[Config, list[LogSpec]]:
    """The config file with the command line's additions; also the `--log` specs it added."""
    from diag.daemon import config

    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        raise UsageError(str(exc)) from None
    extra = [config.LogSpec.parse(a) for a in getattr(args, "log", None) or []]
    cfg.logs.extend(extra)
    named = {j.name for j in cfg.journals}
    cfg.journal_args = []
    for j in map(config.JournalSpec.parse, getattr(args, "journal", None) or []):
        if j.name not in named:  # (a unit the config or an earlier --journal names: once)
            named.add(j.name)
            cfg.journal_args.append(j)
    cfg.journals.extend(cfg.journal_args)
    if getattr(args, "state_dir", None):
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


def open_store(args: argparse.Namespace, write: bool = False) -> Store:
    """The store the config (or `--state-dir`) names: read-only unless the command changes it (`diag silence add`)."""
    from diag.store.db import Store, StoreError

    cfg, _ = daemon_config(args)
    try:
        return Store(cfg.db_path, readonly=not write)
    except (StoreError, sqlite3.Error, OSError) as exc:
        raise UsageError(str(exc)) from None
