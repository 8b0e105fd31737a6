"""Typed events: what a parsed log record is, independent of the server that wrote it.

Parsers turn physical lines into `Event`s; the trace assembler, the rule engine, the fact
collector and the stores only ever see events. `text` is log content and therefore
untrusted user data: it is matched against rules but never stored or printed as is (see
`diag.parsing.redact`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Event kinds. Request lifecycle kinds carry `request_id` in `fields`.
RECEIVED = "request.received"  # the API server accepted a request (vLLM Received, LMDeploy session=, guide's Added)
ADDED = "request.added"  # the engine queued it
STARTED = "request.started"  # a slot/engine began work (llama.cpp launch_slot, LMDeploy start)
ABORTED = "request.aborted"
FAILED = "request.failed"
FINISHED = "request.finished"
OUTPUT = "request.output"  # vLLM Generated response / guide's Generated token
TIMING = "request.timing"  # llama.cpp print_timing
ACCESS = "http.access"  # uvicorn / nginx / http.server / llama.cpp classic access line
STATS = "stats"
LOG = "log"  # any other record with a recognised prefix
RAW = "raw"  # a line with no recognised prefix (tracebacks, C++ output, garbage)

REQUEST_KINDS = frozenset({RECEIVED, ADDED, STARTED, ABORTED, FAILED, FINISHED, OUTPUT, TIMING})


@dataclass(slots=True)
class Event:
    path: str
    lineno: int
    fmt: str  # vllm, uvicorn, lmdeploy, llamacpp, nginx, proxy, unknown
    kind: str = LOG
    level: str | None = None
    ts: float | None = None  # epoch seconds; None where the line carries no time
    text: str = ""  # message without prefix; multi-line records joined with "\n"
    proc: str | None = None  # process tag: APIServer, EngineCore, Worker, slot...
    pid: int | None = None
    src: str | None = None  # file:line of the code that logged it
    end_lineno: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    ts_inferred: bool = False  # ts copied from a neighbouring line
    repeated: int = 1  # Ray "[repeated Nx across cluster]"
    gaps: list[tuple[int, int]] | None = None  # (offset in text, physical lines left out there): traceback frames
    # Code locations of a traceback's frames, `package/module.py:function` (diag.parsing.frames):
    # rules may match them (`frames`), never the code lines under them.
    frames: tuple[str, ...] | None = None

    def line_at(self, offset: int) -> int:
        """The physical line number of a character of `text` (records join lines, and leave frames out)."""
        n = self.lineno + self.text.count("\n", 0, offset)
        if self.gaps:
            n += sum(k for at, k in self.gaps if at < offset)
        return n

    @property
    def severe(self) -> bool:
        return self.level in ("ERROR", "CRITICAL")
