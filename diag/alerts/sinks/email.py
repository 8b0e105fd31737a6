"""Email through the site's SMTP relay: STARTTLS unless turned off, optional login."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

from diag.alerts.sinks import DeliveryError, Sink
from diag.alerts.sinks.text import render, truncate_utf8


class EmailSink(Sink):
    merges = True

    def send(self, docs: list[dict[str, Any]]) -> None:
        c = self.cfg
        title, text = render(docs)
        msg = EmailMessage()
        msg["Subject"] = "[diag] " + truncate_utf8(title, 200)
        msg["From"] = c.sender
        msg["To"] = ", ".join(c.to)
        msg["X-Diag-Notification-Id"] = str(docs[-1].get("notification_id", ""))
        msg.set_content(text)
        try:
            with smtplib.SMTP(c.host, c.port, timeout=c.timeout) as s:
                if c.starttls:
                    s.starttls(context=ssl.create_default_context(cafile=c.ca_file) if c.ca_file else ssl.create_default_context())
                if c.username:
                    s.login(c.username, c.password)
                s.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"SMTP {c.host}:{c.port}: {type(exc).__name__}: {exc}") from None
