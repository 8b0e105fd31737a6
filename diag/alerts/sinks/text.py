"""Notifications as text for people: chat robots, email, the journal line.

Only labels, derived fields and the redacted excerpt go in; every string from a log is bounded,
and a message is cut to the receiver's byte limit on a UTF-8 boundary (never split in two).
"""

from __future__ import annotations

from typing import Any

ELLIPSIS = "…"


def truncate_utf8(text: str, limit: int) -> str:
    """At most `limit` bytes of UTF-8, cut between characters, marked with … when cut."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    keep = max(0, limit - len(ELLIPSIS.encode()))
    return raw[:keep].decode("utf-8", errors="ignore") + ELLIPSIS


def headline(doc: dict[str, Any]) -> str:
    """`[FIRING:2] cuda-oom server=vllm` — Alertmanager's default title shape."""
    alerts = doc.get("alerts", [])
    firing = sum(1 for a in alerts if a["status"] == "firing")
    status = doc.get("status", "firing").upper()
    n = firing if status == "FIRING" else len(alerts)
    group = " ".join(f"{k}={v}" for k, v in doc.get("groupLabels", {}).items() if k != "alertname")
    name = doc.get("groupLabels", {}).get("alertname") or doc.get("commonLabels", {}).get("alertname", "diag")
    sev = doc.get("commonLabels", {}).get("severity", "")
    return f"[{status}:{n}] {name}" + (f" {group}" if group else "") + (f" ({sev})" if sev else "")


def alert_lines(a: dict[str, Any], markdown: bool = False) -> list[str]:
    ann, lab = a.get("annotations", {}), a.get("labels", {})
    b = (lambda s: f"**{s}**") if markdown else (lambda s: s)
    status = "RESOLVED" if a.get("status") == "resolved" else "FIRING"
    where = ", ".join(f"{k}={lab[k]}" for k in ("server", "model", "host", "source") if lab.get(k))
    out = [f"{b(status)} {lab.get('alertname', '?')} ×{ann.get('count', '1')} [{lab.get('severity', '')}] {where}",
           ann.get("summary", "")]
    if ann.get("excerpt"):
        out.append(("> " if markdown else "  ") + ann["excerpt"])
    if ann.get("request_ids"):
        out.append(f"requests: {ann['request_ids']}")
    if ann.get("first_seen"):
        out.append(f"first seen {ann['first_seen']}, last seen {ann.get('last_seen', '')}")
    if ann.get("remedy") and a.get("status") != "resolved":
        out.append(f"{b('remedy')}: {ann['remedy']}")
    if ann.get("url"):
        out.append(f"[{ann['url']}]({ann['url']})" if markdown else ann["url"])
    return [x for x in out if x]


def render(docs: list[dict[str, Any]], markdown: bool = False) -> tuple[str, str]:
    """(title, body) for one notification, or for several merged after a rate limit held them."""
    last = docs[-1]
    title = headline(last)
    lines: list[str] = []
    if len(docs) > 1:
        lines.append(f"{len(docs)} notifications were held back by this channel's rate limit; in order:")
        lines += [f"- {headline(d)}" for d in docs[:-1]]
        lines.append("latest:")
    if markdown:
        lines.insert(0, f"### {title}")
    for a in last.get("alerts", []):
        lines += alert_lines(a, markdown)
        lines.append("")
    lines.append(f"notification {last.get('notification_id', '')}")
    return title, "\n".join(lines)
