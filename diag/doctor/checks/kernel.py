"""The kernel's side of a crash: OOM-killer and NVIDIA Xid lines from the last hour.

When the kernel kills vLLM's EngineCore for memory, or the GPU driver reports an Xid, the server
itself can only say "engine core exited unexpectedly". The kernel log says why. It is read with
`journalctl -k` (the last hour, short-iso times) or, failing that, from `/dev/kmsg` (non-blocking,
times from the monotonic clock). Either may be denied to an unprivileged user: then the check
says so and moves on. Lines are matched by the same rule files as every other log, and reported
when they name one of the inference server's processes (or any process when none is known).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field

WINDOW_S = 3600.0
MAX_BYTES = 4 << 20
RULE_IDS = ("kernel-oom-killer", "gpu-xid")


@dataclass
class KernelLog:
    source: str | None = None  # "journalctl -k" or "/dev/kmsg"; None when neither could be read
    skipped: str | None = None  # why nothing was read
    lines: list[str] = field(default_factory=list)


def read(window_s: float = WINDOW_S) -> KernelLog:
    """The kernel log of the last `window_s` seconds, from journald or /dev/kmsg."""
    why = []
    if shutil.which("journalctl"):
        try:
            p = subprocess.run(["journalctl", "-k", "--no-pager", "-q", "-o", "short-iso", "--since", f"-{int(window_s)}s"],
                               capture_output=True, timeout=10)
            text = p.stdout[-MAX_BYTES:].decode("utf-8", "replace")
            if p.returncode == 0 and text.strip():
                return KernelLog("journalctl -k", None, text.splitlines())
            why.append(f"journalctl -k: {p.stderr.decode('utf-8', 'replace').strip()[:120] or 'no entries'}")
        except (OSError, subprocess.SubprocessError) as exc:
            why.append(f"journalctl -k: {exc}")
    try:
        lines = _kmsg(window_s)
        return KernelLog("/dev/kmsg", None, lines)
    except OSError as exc:
        why.append(f"/dev/kmsg: {exc.strerror or exc}")
    return KernelLog(None, "; ".join(why) or "no kernel log available", [])


def _kmsg(window_s: float) -> list[str]:
    """Records of /dev/kmsg newer than the window: `prio,seq,usec,flags;message`."""
    now_us = time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    out: list[str] = []
    size = 0
    try:
        while size < MAX_BYTES:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                break  # read everything there is
            except OSError as exc:
                if exc.errno == 32:  # EPIPE: a record was overwritten while we read; go on
                    continue
                raise
            if not rec:
                break
            size += len(rec)
            head, _, msg = rec.decode("utf-8", "replace").partition(";")
            parts = head.split(",")
            if len(parts) >= 3 and parts[2].isdigit() and now_us - int(parts[2]) > window_s * 1e6:
                continue
            out.append(msg.split("\n", 1)[0])
    finally:
        os.close(fd)
    return out


def findings(log: KernelLog, pids: set[int], rules_dirs: list[str] | None = None) -> list[tuple[str, str]]:
    """(rule id, excerpt) of OOM-killer and Xid lines that name one of `pids` (all when `pids` is empty)."""
    if not log.lines:
        return []
    from diag.analysis.rules import ruleset as rules
    from diag.analysis.findings import Hit
    from diag.pipeline import Pipeline, SourceResult
    from diag.parsing.source import SourceParser
    from diag.ingest.reader import iter_text_lines

    rs = rules.load(rules_dirs or [])
    rs.rules = [r for r in rs.rules if r.id in RULE_IDS]
    hits: list[Hit] = []
    pipe = Pipeline(rs, on_hit=hits.append, keep_traces=False)
    pipe.feed_lines(SourceParser(log.source or "kernel"), iter_text_lines("\n".join(log.lines) + "\n"), SourceResult("kernel"))
    pipe.finish()
    out = []
    for h in hits:
        # the rules capture who was killed or faulted (kernel-oom-killer: pid, proc; gpu-xid: pid, name)
        pid = int(h.fields["pid"]) if str(h.fields.get("pid", "")).isdigit() else None
        name = h.fields.get("proc") or h.fields.get("name")
        # a killed engine process is gone by now, so its pid cannot be among the live ones: its name tells
        if pids and (pid is None or (pid not in pids and not (name and _SERVER_NAME.match(name)))):
            continue
        out.append((h.rule.id, h.excerpt))
    return out


# Process names (comm, 15 characters) of inference servers: vLLM titles its processes VLLM::EngineCore,
# VLLM::Worker_TP0; Ray workers are ray::…; the rest run as python or llama-server.
_SERVER_NAME = re.compile(r"(?:VLLM::|vllm|ray::|llama-serv|lmdeploy|python|pt_main_thread)", re.I)

