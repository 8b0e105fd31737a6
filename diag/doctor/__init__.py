"""`diag doctor`: triage a running inference server the way a careful engineer would.

Each check is a function of a shared `Context` returning a `Result` (status ok/warn/fail/skip/error,
one-line summary, details, remedy, duration). Checks run in a fixed order, later ones use what
earlier ones learned (is the server up, which models it serves, which process listens), and a
check that raises becomes an `error` result while the others still run. No prompt or image
content is ever printed: the probes send fixed text and a generated image, and report sizes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

OK, WARN, FAIL, SKIP, ERROR = "ok", "warn", "fail", "skip", "error"


@dataclass
class Result:
    id: str
    status: str
    summary: str
    details: list[str] = field(default_factory=list)
    remedy: str | None = None
    duration_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "summary": self.summary, "details": self.details,
                "remedy": self.remedy, "duration_ms": round(self.duration_ms, 1)}


@dataclass
class Context:
    url: str = "http://127.0.0.1:8000"
    model: str | None = None
    proxy_url: str | None = None
    timeout: float = 10.0
    logs: list[str] = field(default_factory=list)
    journals: list[Any] = field(default_factory=list)  # systemd units' journals to read (diag.daemon.config.JournalSpec)
    log_minutes: float = 30.0
    state_dir: str | None = None
    rules_dirs: list[str] = field(default_factory=list)
    nvml: Any = None  # the NVML binding; tests inject a fake through this one seam
    # learned along the way
    reachable: bool | None = None
    healthy: bool | None = None
    server_kind: str | None = None  # vllm, llamacpp, lmdeploy, unknown
    version: str | None = None
    served: list[str] = field(default_factory=list)
    model_roots: dict[str, str] = field(default_factory=dict)
    max_model_len: int | None = None
    server_pid: int | None = None
    server_pids: set[int] = field(default_factory=set)
    flags: dict[str, str] = field(default_factory=dict)
    log_facts: dict[str, Any] = field(default_factory=dict)
    log_models: list[str] = field(default_factory=list)
    journal_errors: dict[str, str] = field(default_factory=dict)  # a journal's name -> why it could not be read
    _client: Any = None
    _log_pipe: Any = None

    @property
    def served_model(self) -> str | None:
        if self.model and self.model in self.served:
            return self.model
        return self.served[0] if self.served else None

    def http(self):
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 3.0)),
                                        follow_redirects=False, trust_env=False)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


Check = Callable[[Context], Result]


def registry() -> dict[str, tuple[str, Check]]:
    """id -> (description, function), in the order they run."""
    from diag.doctor.checks import host, probes, vision

    return {
        "server": ("server reachable, /health, /version, response time", probes.check_server),
        "processes": ("server process, engine children, listening port, flags, RSS, open files", host.check_processes),
        "models": ("/v1/models serves the model clients ask for", probes.check_models),
        "generation": ("a short chat completion, non-streaming and streaming", probes.check_generation),
        "vision": ("an in-memory image reaches the model (prompt tokens with vs without)", vision.check_vision),
        "proxy": ("the proxy page, a completion through it, CORS, upstream errors", probes.check_proxy),
        "gpu": ("NVML: driver, memory, utilisation, temperature, processes, ECC", host.check_gpu),
        "logs": ("recent log findings and startup facts", host.check_logs),
        "host": ("free disk for state and models, free memory", host.check_host),
    }


def run(ctx: Context, only: list[str] | None = None) -> list[Result]:
    checks = registry()
    unknown = [c for c in (only or []) if c not in checks]
    if unknown:
        raise ValueError(f"unknown check(s): {', '.join(unknown)} (see --list-checks)")
    results = []
    try:
        _read_logs_first(ctx)
        for cid, (_desc, fn) in checks.items():
            if only and cid not in only:
                continue
            t0 = time.perf_counter()
            try:
                r = fn(ctx)
            except Exception as exc:  # a broken check must not take the others down
                r = Result(cid, ERROR, f"the check itself failed: {type(exc).__name__}: {exc}"[:300])
            r.id = cid
            r.duration_ms = (time.perf_counter() - t0) * 1000
            results.append(r)
    finally:
        ctx.close()
    return results


def _read_logs_first(ctx: Context) -> None:
    """The logs as they were before this run's probes, read once for every check that uses them.

    Some probes are answered with an error on purpose: an image sent to a text-only server, one image
    more than --limit-mm-per-prompt allows (400 both). Read after them, the log held doctor's own
    requests, and the logs check reported the server's refusals of them as the server's findings. A
    failure here is the logs check's to report (it reads again and says what is wrong)."""
    if not ctx.logs:
        return
    from diag.doctor.checks import host

    try:
        host.scan_logs(ctx)
    except Exception:  # noqa: BLE001 - see the docstring
        ctx._log_pipe = None


def verdict(results: list[Result]) -> str:
    statuses = {r.status for r in results}
    if FAIL in statuses or ERROR in statuses:
        return "fail"
    if WARN in statuses:
        return "warn"
    return "ok"


def exit_code(results: list[Result]) -> int:
    return {"ok": 0, "warn": 1, "fail": 2}[verdict(results)]
