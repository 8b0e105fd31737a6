"""`[alerts]` and `[[alerts.sink]]` in the daemon's TOML: timers, grouping, where to send.

Timers carry Alertmanager's names and meanings. Secrets (HMAC keys, robot secrets, SMTP
passwords, a URL that embeds a token) can come from a file or an environment variable, so the
config file itself can stay world-readable.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from diag.daemon.config import DEFAULT_WEB_LISTEN
from diag.fsname import display, text
from diag.analysis.rules.ruleset import CATEGORIES, SEVERITIES

SINK_TYPES = ("webhook", "alertmanager", "feishu", "dingtalk", "wecom", "email", "exec")
DEFAULT_URLS = {"feishu": "https://open.feishu.cn/open-apis/bot/v2/hook/", "dingtalk": "https://oapi.dingtalk.com/robot/send",
                "wecom": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"}
CHAT_TYPES = ("feishu", "dingtalk", "wecom")


def dashboard_url(listen: str | None) -> str:
    """The dashboard's address as a person opens it, from `[web] listen` / `--web` (HOST:PORT or PORT):
    an alert's `url` must lead to a page that exists. A wildcard bind is reached by this host's name;
    no dashboard (`--no-web`) is no URL."""
    if not listen:
        return ""
    host, sep, port = listen.strip().rpartition(":")
    if not sep:
        host, port = "127.0.0.1", listen.strip()
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = socket.getfqdn()
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


class AlertConfigError(ValueError):
    pass


_NUM = (int, float)
_TIMERS = {"group_wait": 10.0, "group_interval": 300.0, "repeat_interval": 4 * 3600.0, "resolve_after": 900.0,
           "max_age": 86400.0, "backoff_max": 30.0, "resend_interval": 60.0}
_SINK_KEYS: dict[str, Any] = {
    "name": str, "type": str, "url": str, "url_file": str, "url_env": str, "secret": str, "secret_file": str, "secret_env": str,
    "min_severity": str, "categories": list, "rules": list, "send_resolved": bool, "rate_limit": int, "timeout": _NUM,
    "headers": dict, "ca_file": str, "signature_header": str, "verify_tls": bool,
    # email
    "host": str, "port": int, "starttls": bool, "username": str, "password": str, "password_file": str, "password_env": str,
    "from": str, "to": list,
    # exec
    "command": list,
}


@dataclass
class SinkConfig:
    name: str
    type: str
    url: str = ""
    secret: str = ""
    min_severity: str = "info"
    categories: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    send_resolved: bool = True
    rate_limit: int = 0  # notifications per minute; 0 = unlimited
    timeout: float = 10.0
    headers: dict[str, str] = field(default_factory=dict)
    ca_file: str | None = None
    verify_tls: bool = True
    signature_header: str = "X-Diag-Signature"
    host: str = ""
    port: int = 25
    starttls: bool = True
    username: str = ""
    password: str = ""
    sender: str = ""
    to: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)

    def accepts(self, labels: dict[str, str]) -> bool:
        """Whether an alert with these labels goes to this sink (min_severity, categories, rules)."""
        from diag.analysis.rules.ruleset import SEVERITY_RANK

        if SEVERITY_RANK.get(labels.get("severity", "info"), 0) < SEVERITY_RANK[self.min_severity]:
            return False
        if self.categories and labels.get("category") not in self.categories:
            return False
        return not self.rules or labels.get("alertname") in self.rules


@dataclass
class AlertsConfig:
    group_by: list[str] = field(default_factory=lambda: ["alertname", "server"])
    group_wait: float = 10.0
    group_interval: float = 300.0
    repeat_interval: float = 4 * 3600.0
    resolve_after: float = 900.0
    max_age: float = 86400.0  # an undeliverable notification is given up (and logged) after this long
    backoff_max: float = 30.0
    resend_interval: float = 60.0  # alertmanager sinks: re-push firing alerts (below its resolve_timeout, 5 min)
    external_url: str = field(default_factory=lambda: dashboard_url(DEFAULT_WEB_LISTEN))
    sinks: list[SinkConfig] = field(default_factory=list)


def _secret(item: dict[str, Any], key: str, where: str) -> str:
    """`key`, else the contents of `key_file` (stripped), else `$key_env`."""
    if isinstance(item.get(key), str):
        return item[key]
    path = item.get(f"{key}_file")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AlertConfigError(f"{where}: cannot read {key}_file {display(path)}: {getattr(exc, 'strerror', None) or exc}") from None
    env = item.get(f"{key}_env")
    if env:
        val = os.environ.get(env)
        if val is None:
            raise AlertConfigError(f"{where}: {key}_env names ${env}, which is not set")
        return val
    return ""


def parse_sink(item: Any, i: int) -> SinkConfig:
    if not isinstance(item, dict):
        raise AlertConfigError(f"[[alerts.sink]] #{i + 1} must be a table")
    typ = item.get("type")
    name = item.get("name") or (f"{typ}-{i + 1}" if isinstance(typ, str) else f"#{i + 1}")
    where = f"[[alerts.sink]] {name}"
    if typ not in SINK_TYPES:
        raise AlertConfigError(f"{where}: type must be one of {', '.join(SINK_TYPES)} (got {typ!r})")
    for k, v in item.items():
        want = _SINK_KEYS.get(k)
        if want is None:
            raise AlertConfigError(f"{where}: unknown setting {k!r}")
        if not isinstance(v, want) or (want is _NUM and isinstance(v, bool)):
            raise AlertConfigError(f"{where}: {k} has the wrong type ({type(v).__name__})")
    s = SinkConfig(name=str(name), type=typ)
    s.url = _secret(item, "url", where) or (DEFAULT_URLS.get(typ, "") if typ != "feishu" else "")
    s.secret = _secret(item, "secret", where)
    s.password = _secret(item, "password", where)
    for k in ("min_severity", "send_resolved", "timeout", "ca_file", "verify_tls", "signature_header", "host", "port",
              "starttls", "username"):
        if k in item:
            setattr(s, k, item[k])
    s.categories = [str(c) for c in item.get("categories", [])]
    s.rules = [str(r) for r in item.get("rules", [])]
    s.headers = {str(k): str(v) for k, v in item.get("headers", {}).items()}
    s.sender = item.get("from", "")
    s.to = [str(t) for t in item.get("to", [])]
    s.command = [str(c) for c in item.get("command", [])]
    s.rate_limit = int(item.get("rate_limit", 20 if typ in CHAT_TYPES else 0))
    if s.min_severity not in SEVERITIES:
        raise AlertConfigError(f"{where}: min_severity must be one of {', '.join(SEVERITIES)}")
    bad = [c for c in s.categories if c not in CATEGORIES and c != "diag"]
    if bad:
        raise AlertConfigError(f"{where}: unknown categories {bad} (known: {', '.join(CATEGORIES)}, diag)")
    if s.timeout <= 0 or s.rate_limit < 0:
        raise AlertConfigError(f"{where}: timeout must be positive and rate_limit not negative")
    validate_sink(s, where)
    return s


def validate_sink(s: SinkConfig, where: str) -> None:
    """What can be checked without sending: URLs, files, commands, addresses."""
    if s.type in ("webhook", "alertmanager", *CHAT_TYPES):
        for u in s.url.split(",") if s.type == "alertmanager" else [s.url]:
            parts = urlsplit(u.strip())
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise AlertConfigError(f"{where}: url {u!r} is not an http(s) URL")
            try:
                u.encode("utf-8")
            except UnicodeEncodeError:  # bytes that are not UTF-8 (a command-line argument): no URL, and no text to print
                raise AlertConfigError(f"{where}: url {text(u)!r} has bytes that are not UTF-8") from None
        if s.type == "wecom" and "key=" not in s.url and not s.secret:
            raise AlertConfigError(f"{where}: a WeCom robot needs its key (in the url as ?key=, or as secret/secret_file/secret_env)")
        if s.type == "dingtalk" and "access_token=" not in s.url:
            raise AlertConfigError(f"{where}: a DingTalk robot url carries ?access_token=…")
    if s.ca_file and not os.access(s.ca_file, os.R_OK):
        raise AlertConfigError(f"{where}: ca_file {display(s.ca_file)} is not readable")
    if s.type == "email":
        if not s.host or not s.to or not s.sender:
            raise AlertConfigError(f"{where}: email needs host, from and to")
    if s.type == "exec":
        import shutil

        if not s.command:
            raise AlertConfigError(f"{where}: exec needs command = [\"program\", \"arg\", …]")
        if shutil.which(s.command[0]) is None:
            raise AlertConfigError(f"{where}: command {s.command[0]!r} not found or not executable")


def parse(doc: Any, extra_webhooks: list[str] | None = None, web_listen: str | None = DEFAULT_WEB_LISTEN) -> AlertsConfig:
    """The `[alerts]` table (may be empty) plus `--alert-webhook` URLs. Without `external_url` the
    links in alerts follow the dashboard's listen address `web_listen` (none when it is off)."""
    if not isinstance(doc, dict):
        raise AlertConfigError("[alerts] must be a table")
    cfg = AlertsConfig(external_url=dashboard_url(web_listen))
    for k, v in doc.items():
        if k == "sink":
            continue
        if k in _TIMERS:
            if not isinstance(v, _NUM) or isinstance(v, bool) or v < 0:
                raise AlertConfigError(f"[alerts] {k} must be a number of seconds >= 0")
            setattr(cfg, k, float(v))
        elif k == "group_by":
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise AlertConfigError("[alerts] group_by must be a list of label names")
            cfg.group_by = list(v)
        elif k == "external_url":
            if not isinstance(v, str):
                raise AlertConfigError("[alerts] external_url must be a string")
            cfg.external_url = v.rstrip("/")
        else:
            raise AlertConfigError(f"[alerts] has no setting {k!r}")
    if cfg.group_interval <= 0 or cfg.repeat_interval <= 0:
        raise AlertConfigError("[alerts] group_interval and repeat_interval must be positive")
    sinks = doc.get("sink", [])
    if not isinstance(sinks, list):
        raise AlertConfigError("[[alerts.sink]] must be an array of tables")
    for i, item in enumerate(sinks):
        cfg.sinks.append(parse_sink(item, i))
    for j, url in enumerate(extra_webhooks or []):
        cfg.sinks.append(parse_sink({"name": f"webhook-cli-{j + 1}", "type": "webhook", "url": url}, len(cfg.sinks)))
    names = [s.name for s in cfg.sinks]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise AlertConfigError(f"[[alerts.sink]]: duplicate sink name(s) {sorted(dup)}")
    return cfg
