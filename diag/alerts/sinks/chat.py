"""Group-chat robots: Feishu/Lark, DingTalk, WeCom — their payloads and signatures exactly.

They differ in where the timestamp and signature go and what is HMAC-ed:
- Feishu: timestamp in seconds; HMAC-SHA256 with key `"{timestamp}\\n{secret}"` over an EMPTY
  message, base64; both in the JSON body. Body at most 20 KB.
- DingTalk: timestamp in milliseconds; HMAC-SHA256 with key `secret` over `"{timestamp}\\n{secret}"`,
  base64 then URL-encoded; both in the URL query. Markdown text kept within 20,000 bytes.
- WeCom: no signature (the `key` in the URL is the credential); markdown content at most 4,096 bytes.
All three answer HTTP 200 with a JSON error code; non-zero is a failed delivery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import quote_plus

from diag.alerts.config import SinkConfig
from diag.alerts.sinks import DeliveryError, Sink
from diag.alerts.sinks.http import client, post
from diag.alerts.sinks.text import render, truncate_utf8


def feishu_sign(timestamp: str, secret: str) -> str:
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def dingtalk_sign(timestamp_ms: str, secret: str) -> str:
    """The URL-encoded signature for the query string."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(mac).decode())


class _Robot(Sink):
    merges = True
    limit = 4096  # bytes of message text
    markdown = True

    def __init__(self, cfg: SinkConfig):
        super().__init__(cfg)
        self.http = client(cfg)

    def payload(self, title: str, text: str, now: float) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def message(self, docs: list[dict[str, Any]]) -> tuple[str, str]:
        title, text = render(docs, markdown=self.markdown)
        return truncate_utf8(title, 256), truncate_utf8(text, self.limit)

    def send(self, docs: list[dict[str, Any]]) -> None:
        title, text = self.message(docs)
        url, body = self.payload(title, text, time.time())
        r = post(self.http, url, json.dumps(body, ensure_ascii=False).encode(), dict(self.cfg.headers))
        try:
            answer = r.json()
        except ValueError:
            raise DeliveryError(f"not a JSON answer: {r.text[:200]!r}") from None
        code = answer.get("code", answer.get("errcode", answer.get("StatusCode", 0)))
        if code not in (0, None):
            raise DeliveryError(f"robot refused it: code {code}: {str(answer.get('msg') or answer.get('errmsg'))[:200]}")

    def close(self) -> None:
        self.http.close()


class FeishuSink(_Robot):
    limit = 18000  # the whole body must stay under 20 KB; the rest is JSON framing
    markdown = False

    def payload(self, title: str, text: str, now: float) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"msg_type": "text", "content": {"text": text}}
        if self.cfg.secret:
            ts = str(int(now))
            body = {"timestamp": ts, "sign": feishu_sign(ts, self.cfg.secret), **body}
        return self.cfg.url, body


class DingTalkSink(_Robot):
    limit = 20000

    def payload(self, title: str, text: str, now: float) -> tuple[str, dict[str, Any]]:
        url = self.cfg.url
        if self.cfg.secret:
            ts = str(int(now * 1000))
            url += f"&timestamp={ts}&sign={dingtalk_sign(ts, self.cfg.secret)}"
        return url, {"msgtype": "markdown", "markdown": {"title": title, "text": text}, "at": {"atMobiles": [], "isAtAll": False}}


class WeComSink(_Robot):
    limit = 4096

    def payload(self, title: str, text: str, now: float) -> tuple[str, dict[str, Any]]:
        url = self.cfg.url
        if "key=" not in url and self.cfg.secret:
            url += ("&" if "?" in url else "?") + "key=" + quote_plus(self.cfg.secret)
        return url, {"msgtype": "markdown", "markdown": {"content": text}}
