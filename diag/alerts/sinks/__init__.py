"""Where notifications go. Each sink takes notification documents and delivers them, or raises
`DeliveryError` (the sender retries with backoff). The document is Alertmanager's webhook
message (version 4) plus a stable `notification_id`; Alertmanager sinks get raw alerts instead.
"""

from __future__ import annotations

from typing import Any

from diag.alerts.config import SinkConfig


class DeliveryError(Exception):
    """The receiver did not take it (down, refused, non-2xx, timeout): retry later."""


class Sink:
    """Base: `merges` sinks take every queued notification in one message (chat robots under a
    rate limit summarise the overflow rather than drop it); the others take one at a time."""

    merges = False

    def __init__(self, cfg: SinkConfig):
        self.cfg = cfg
        self.name = cfg.name

    def send(self, docs: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def build(cfg: SinkConfig) -> Sink:
    from diag.alerts.sinks import chat, email, exec as exec_sink, http

    kinds = {"webhook": http.WebhookSink, "alertmanager": http.AlertmanagerSink, "feishu": chat.FeishuSink,
             "dingtalk": chat.DingTalkSink, "wecom": chat.WeComSink, "email": email.EmailSink, "exec": exec_sink.ExecSink}
    return kinds[cfg.type](cfg)
