"""The journal: one line per notification on the daemon's stderr, always on.

Under systemd (`JOURNAL_STREAM` set) each line starts with the sd-daemon `<N>` priority prefix
for the worst severity in it, so `journalctl -p err -u diag` shows what pages.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from diag.alerts.model import SEVERITY_PRIORITY
from diag.alerts.sinks.text import headline

log = logging.getLogger("diag")
_LEVEL = {2: logging.CRITICAL, 3: logging.ERROR, 4: logging.WARNING, 5: logging.INFO, 6: logging.INFO}


def line(doc: dict[str, Any]) -> tuple[int, str]:
    """(priority, text) of one notification."""
    alerts = doc.get("alerts", [])
    resolved = doc.get("status") == "resolved"
    prio = 5 if resolved else min((SEVERITY_PRIORITY.get(a["labels"].get("severity", "info"), 6) for a in alerts), default=6)
    parts = []
    for a in alerts[:5]:
        ann = a.get("annotations", {})
        parts.append(f"{a['labels'].get('alertname')} {a['status']} ×{ann.get('count', '1')} source={a['labels'].get('source', '')}: "
                     f"{ann.get('summary', '')[:300]}")
    more = f" (+{len(alerts) - 5} more)" if len(alerts) > 5 else ""
    text = f"alert {headline(doc)}: " + " | ".join(parts) + more + f" [notification {doc.get('notification_id', '')}]"
    return prio, text.replace("\n", " ")


def emit(doc: dict[str, Any]) -> None:
    prio, text = line(doc)
    if os.environ.get("JOURNAL_STREAM"):
        sys.stderr.write(f"<{prio}>{text}\n")
        sys.stderr.flush()
    else:
        log.log(_LEVEL.get(prio, logging.INFO), "%s", text)
