"""Configuration: embedded defaults, a TOML file, command-line additions.

`diag daemon --log /var/log/vllm.log` alone must work, so every setting has a default; a file
(`--config FILE`, else `$DIAG_CONFIG`, else `/etc/diag/diag.toml` when it exists) changes them.
A commented example ships as `diag/daemon/example-config.toml` (`diag daemon --example-config`).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diag.fsname import display
from diag.ingest.logrotate import DEFAULT_CONFIG as LOGROTATE_CONFIG

SYSTEM_CONFIG = Path("/etc/diag/diag.toml")


class ConfigError(Exception):
    pass


def default_state_dir() -> Path:
    """systemd's StateDirectory= (STATE_DIRECTORY), else $XDG_STATE_HOME/diag, else ~/.local/state/diag."""
    sd = os.environ.get("STATE_DIRECTORY")
    if sd:
        return Path(sd.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "diag"


# The dashboard's default address: clear of 8000, 3001, 8080, 23333, 30000 (inference servers and
# proxies). Alert links point here unless [alerts] external_url says otherwise.
DEFAULT_WEB_LISTEN = "127.0.0.1:8765"


@dataclass
class LogSpec:
    path: str  # a file or a glob
    format: str | None = None
    rotated_dirs: tuple[str, ...] = ()  # where rotated copies go besides its directory (diag.ingest.rotated_dirs)

    @classmethod
    def parse(cls, arg: str) -> "LogSpec":
        """`PATH[:FORMAT]` from the command line."""
        path, fmt = _with_format(arg)
        return cls(path, fmt)


@dataclass
class JournalSpec:
    """A systemd unit whose journal is followed (`[[journal]]`, `--journal UNIT[:FORMAT]`): for a
    server run as a service that logs to journald and to no file (`diag.ingest.journal`)."""

    unit: str
    directory: str | None = None  # journalctl --directory: journal files somewhere else than the system's (any machine's
    # entries of the unit there are read; without it, this machine's only: `journal.unit_args`)
    format: str | None = None

    @property
    def name(self) -> str:
        """The source's name in traces, findings and `diag status` (a file's is its path)."""
        return f"journal:{self.unit}"

    @classmethod
    def parse(cls, arg: str) -> "JournalSpec":
        """`UNIT[:FORMAT]` from the command line."""
        unit, fmt = _with_format(arg)
        return cls(unit, None, fmt)


def _with_format(arg: str) -> tuple[str, str | None]:
    """`NAME[:FORMAT]` (`--log`, `--journal`): a last `:FORMAT` only when it names a format (a path
    may hold colons), else the whole argument and no format."""
    from diag.parsing.source import FORMATS

    head, sep, tail = arg.rpartition(":")
    if sep and tail in FORMATS and head:
        return head, tail
    return arg, None


def _check_format(fmt: Any, where: str, what: str) -> None:
    """A `format` setting names one of the parsers' formats (ConfigError naming them if not)."""
    from diag.parsing.source import FORMATS

    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"{where}: {what}: unknown format {fmt!r} (known: {', '.join(FORMATS)})")


@dataclass
class Config:
    logs: list[LogSpec] = field(default_factory=list)
    journals: list[JournalSpec] = field(default_factory=list)
    journal_args: list[JournalSpec] = field(default_factory=list)  # `--journal`: kept across reloads of the config file
    state_dir: Path = field(default_factory=default_state_dir)
    rules_dirs: list[str] = field(default_factory=list)
    from_beginning: bool = False
    poll_interval: float = 0.5  # seconds between checks when no inotify event arrives
    flush_after: float = 2.0  # a last line without newline is taken after this long
    # A record that may still go on (an ERROR line a traceback could follow, a possibly wrapped line)
    # is complete once its file has been quiet this long: a logger writes a record's lines in one go.
    record_quiet: float = 0.25
    rotate_wait: float = 5.0  # keep reading a rotated file this long after it went quiet
    stuck_after: float = 300.0  # a request in flight longer than this is stuck
    rescan_globs: float = 5.0
    retention_days: float = 14.0
    retention_traces: int = 1_000_000
    retention_findings: int = 200_000
    max_line_bytes: int = 1 << 20
    max_open_traces: int = 20_000
    use_inotify: bool = True
    # logrotate's configuration, read for the `olddir` of each log (files, or directories read as `include` does)
    logrotate_config: list[str] = field(default_factory=lambda: list(LOGROTATE_CONFIG))
    source: str = "defaults"
    # [doctor]: what `diag doctor` checks when its options do not say
    doctor_url: str | None = None
    doctor_model: str | None = None
    doctor_proxy_url: str | None = None
    # [alerts] and [[alerts.sink]] (parsed by diag.alerts.config)
    alerts_doc: dict[str, Any] = field(default_factory=dict)
    alert_webhooks: list[str] = field(default_factory=list)  # `--alert-webhook URL`: sinks webhook-cli-N beside [alerts]
    # [web]: the dashboard and /metrics served inside the daemon
    web_listen: str | None = DEFAULT_WEB_LISTEN  # None: --no-web
    web_token_file: str | None = None

    @property
    def db_path(self) -> Path:
        return self.state_dir / "diag.sqlite3"


_DAEMON_KEYS = {"state_dir": str, "rules_dirs": list, "from_beginning": bool, "poll_interval": (int, float),
                "flush_after": (int, float), "record_quiet": (int, float), "rotate_wait": (int, float), "stuck_after": (int, float),
                "rescan_globs": (int, float), "retention_days": (int, float), "retention_traces": int,
                "retention_findings": int, "max_line_bytes": int, "max_open_traces": int, "use_inotify": bool,
                "logrotate_config": list}


def config_path(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get("DIAG_CONFIG")
    if env:
        return Path(env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def load(explicit: str | None = None) -> Config:
    path = config_path(explicit)
    cfg = Config()
    if path is None:
        return cfg
    name = display(path)  # the file's name in messages and in `diag status` (diag.fsname)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: invalid TOML: {exc}") from None
    apply(cfg, doc, name)
    cfg.source = name
    return cfg


def apply(cfg: Config, doc: dict[str, Any], where: str = "config") -> None:
    unknown = set(doc) - {"daemon", "log", "journal", "doctor", "alerts", "web"}
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}")
    for section, want in (("daemon", dict), ("doctor", dict), ("web", dict), ("log", list), ("journal", list)):
        if section in doc and not isinstance(doc[section], want):
            shape = f"a [{section}] table" if want is dict else f"[[{section}]] tables"
            raise ConfigError(f"{where}: `{section}` must be {shape}, not {type(doc[section]).__name__}")
    daemon = doc.get("daemon", {})
    for key, val in daemon.items():
        typ = _DAEMON_KEYS.get(key)
        if typ is None:
            raise ConfigError(f"{where}: [daemon] has no setting {key!r}")
        if not isinstance(val, typ) or (typ in (int, (int, float)) and isinstance(val, bool)):
            raise ConfigError(f"{where}: [daemon] {key} has the wrong type ({type(val).__name__})")
        if typ in (int, (int, float)) and val <= 0:
            raise ConfigError(f"{where}: [daemon] {key} must be greater than 0 (is {val})")
        if key in ("rules_dirs", "logrotate_config") and not all(isinstance(d, str) for d in val):
            raise ConfigError(f"{where}: [daemon] {key} must be a list of paths (strings)")
        setattr(cfg, key, Path(val) if key == "state_dir" else val)
    for key, val in doc.get("doctor", {}).items():
        if key not in ("url", "model", "proxy_url") or not isinstance(val, str):
            raise ConfigError(f"{where}: [doctor] {key!r} must be one of url, model, proxy_url, as a string")
        setattr(cfg, f"doctor_{key}", val)
    if "alerts" in doc:
        from diag.alerts.config import AlertConfigError, parse as parse_alerts

        try:
            parse_alerts(doc["alerts"])  # fail at load (and on reload) on a broken [alerts] table
        except AlertConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        cfg.alerts_doc = doc["alerts"]
    for key, val in doc.get("web", {}).items():
        if key not in ("listen", "token_file") or not isinstance(val, str):
            raise ConfigError(f"{where}: [web] {key!r} must be one of listen (HOST:PORT, or \"off\"), token_file, as a string")
        setattr(cfg, f"web_{key}", None if key == "listen" and val == "off" else val)
    for i, item in enumerate(doc.get("log", [])):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise ConfigError(f"{where}: [[log]] #{i + 1} needs a `path` string")
        fmt = item.get("format")
        _check_format(fmt, where, f"[[log]] {display(item['path'])}")
        dirs = item.get("rotated_dirs", [])
        if not isinstance(dirs, list) or not all(isinstance(d, str) and d for d in dirs):
            raise ConfigError(f"{where}: [[log]] {display(item['path'])}: rotated_dirs must be a list of directories (strings)")
        cfg.logs.append(LogSpec(item["path"], fmt, tuple(dirs)))
    for i, item in enumerate(doc.get("journal", [])):
        cfg.journals.append(_journal_spec(item, i, where))
    names = [j.name for j in cfg.journals]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: [[journal]] names a unit twice: {sorted({n for n in names if names.count(n) > 1})}")


def _journal_spec(item: Any, i: int, where: str) -> JournalSpec:
    """One `[[journal]]` table: `unit`, and optionally `directory` and `format`."""
    if not isinstance(item, dict) or not isinstance(item.get("unit"), str) or not item["unit"].strip():
        raise ConfigError(f"{where}: [[journal]] #{i + 1} needs a `unit` string (vllm.service)")
    unit = item["unit"].strip()
    unknown = set(item) - {"unit", "directory", "format"}
    if unknown:
        raise ConfigError(f"{where}: [[journal]] {unit}: unknown setting(s) {sorted(unknown)} (known: unit, directory, format)")
    directory, fmt = item.get("directory"), item.get("format")
    if directory is not None and (not isinstance(directory, str) or not directory):
        raise ConfigError(f"{where}: [[journal]] {unit}: directory must be a path (string)")
    _check_format(fmt, where, f"[[journal]] {unit}")
    return JournalSpec(unit, directory, fmt)


def example_path() -> Path:
    return Path(__file__).resolve().parent / "example-config.toml"
