"""HTTP sinks: a webhook in Alertmanager's format, and Alertmanager's own `/api/v2/alerts`."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

import httpx

from diag import __version__
from diag.alerts.config import SinkConfig
from diag.alerts.sinks import DeliveryError, Sink

USER_AGENT = f"diag/{__version__}"
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per POST would drown the journal


def client(cfg: SinkConfig) -> httpx.Client:
    verify: Any = cfg.verify_tls
    if cfg.ca_file:
        import ssl

        verify = ssl.create_default_context(cafile=cfg.ca_file)
    return httpx.Client(timeout=cfg.timeout, verify=verify, headers={"User-Agent": USER_AGENT}, trust_env=False)


def post(c: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    try:
        r = c.post(url, content=body, headers={"Content-Type": "application/json", **headers})
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
    if not 200 <= r.status_code < 300:
        raise DeliveryError(f"HTTP {r.status_code}: {r.text[:200]!r}")
    return r


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256(secret, body)>` over the exact bytes sent (GitHub's scheme)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSink(Sink):
    """POST the Alertmanager webhook message (version 4) — any Alertmanager receiver accepts it."""

    def __init__(self, cfg: SinkConfig):
        super().__init__(cfg)
        self.http = client(cfg)

    def send(self, docs: list[dict[str, Any]]) -> None:
        for doc in docs:
            body = json.dumps({**doc, "receiver": self.name}, ensure_ascii=False, separators=(",", ":")).encode()
            headers = dict(self.cfg.headers)
            if self.cfg.secret:
                headers[self.cfg.signature_header] = signature(self.cfg.secret, body)
            post(self.http, self.cfg.url, body, headers)

    def close(self) -> None:
        self.http.close()


class AlertmanagerSink(Sink):
    """POST alerts to each Alertmanager's `/api/v2/alerts`, as Prometheus does: firing alerts are
    pushed again every `resend_interval` (below Alertmanager's resolve_timeout), resolved ones
    with their `endsAt`. Alertmanager groups, routes, silences and dedups on its side."""

    def __init__(self, cfg: SinkConfig):
        super().__init__(cfg)
        self.http = client(cfg)
        self.urls = [u.strip().rstrip("/") + "/api/v2/alerts" for u in cfg.url.split(",") if u.strip()]

    def send(self, docs: list[dict[str, Any]]) -> None:
        alerts = [a for d in docs for a in d.get("am_alerts", [])]
        if not alerts:
            return
        body = json.dumps(alerts, ensure_ascii=False, separators=(",", ":")).encode()
        errors = []
        for url in self.urls:
            try:
                post(self.http, url, body, dict(self.cfg.headers))
            except DeliveryError as exc:
                errors.append(f"{url}: {exc}")
        if errors:
            raise DeliveryError("; ".join(errors))

    def close(self) -> None:
        self.http.close()
