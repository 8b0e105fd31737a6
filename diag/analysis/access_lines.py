"""Access lines attached to the traces they answer, when that is unambiguous.

Access lines (uvicorn, nginx, http.server) carry no request id. They are attached to a trace
only when that is unambiguous, by this rule:

* only POSTs to a generation endpoint are candidates, and only for traces of the same source
  file whose id family matches the endpoint (`chatcmpl-` ↔ chat, `cmpl-` ↔ completions);
* a candidate trace has been received, has no HTTP status yet and was not aborted;
* the line comes right after the explicit end of a candidate (LMDeploy's `session N finished`,
  vLLM's `Request X failed`), with no other request line between them → attached to it;
* exactly one candidate → the line is attached (status and client address);
* several candidates → the lines wait; when as many lines wait as there are candidates and
  all carry the same status, that status is attached to all of them (not the client, which
  stays ambiguous);
* otherwise the line stays an HTTP record of its own.

The candidates of each source are kept in an index (`diag.analysis.access_index`); the trace
assembler (`diag.analysis.traces`) says which request line ended a trace last (`just_ended`) and
gives up waiting lines when a request line for another request arrives (`waits_apart`, `give_up`).
"""

from __future__ import annotations

from typing import Any, Callable

from diag.parsing.events import ACCESS, Event
from diag.analysis.trace import Trace
from diag.analysis.tracetable import MAX_OPEN, TraceTable

GEN_ENDPOINTS = frozenset({"/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions", "/completion",
                           "/v1/responses", "/generate", "/v1/messages",
                           "/openai/v1/chat/completions", "/openai/v1/completions"})  # vLLM behind KServe
# the id family an endpoint's requests have (`chatcmpl-` ↔ chat, `cmpl-` ↔ completions), None: any
_FAMILY = {p: "completions" if "completions" in p and "chat" not in p else ("chat" if "chat" in p else None) for p in GEN_ENDPOINTS}


class AccessAttacher(TraceTable):
    """A trace table that also takes access lines: attached to their trace, or kept as HTTP records."""

    __slots__ = ('http_count', 'http_records', 'just_ended', 'keep_http', 'shared_clients', 'waiting_lines')

    def __init__(self, on_done: Callable[[Trace], None] | None = None, max_open: int = MAX_OPEN, keep_http: bool = True):
        super().__init__(on_done, max_open)
        self.http_records: list[dict[str, Any]] = []
        self.http_count = 0
        self.keep_http = keep_http  # `diag scan` reports HTTP records; the daemon only counts them
        # the clients of access lines attached by count (the rule above): each line is one of the waiting
        # requests', which one is not known, so no trace takes its client; `diag scan`'s top clients count them
        self.shared_clients: list[str] = []
        self.waiting_lines: dict[str, list[Event]] = {}  # source -> access lines waiting for disambiguation
        self.just_ended: dict[str, Trace] = {}  # source -> trace whose end was the last request line

    def take_access(self, ev: Event) -> Trace | None:
        """Apply an access line's event by the rule above; returns the trace it was attached to, when
        it was attached to one alone."""
        f = ev.fields
        path = f.get("path") or ""
        if ev.fmt in ("nginx", "proxy") or f.get("method") != "POST" or path not in GEN_ENDPOINTS:
            self._record(ev)
            return None
        fam = _FAMILY[path]
        adj = self.just_ended.pop(ev.path, None)
        if adj is not None and adj.http_status is None and not self.waiting_lines.get(ev.path):
            self._attach_line(adj, ev, with_client=True)
            aw = self.awaiting.get(ev.path)
            if aw is not None:
                aw.remove(adj.id)
            return adj
        # Candidates: live, received, no status yet, same family (a rejected one has its status).
        aw = self.awaiting.get(ev.path)
        if aw is not None:
            aw.prune()
            n, only = aw.sole(fam)
        else:
            n, only = 0, None
        waiting = self.waiting_lines.get(ev.path)
        if only is not None and not waiting:
            self._attach_line(only, ev, with_client=True)
            return only
        if not n:
            self.flush_waiting(ev.path)
            self._record(ev)
            return None
        if waiting is None:
            waiting = self.waiting_lines[ev.path] = []
        waiting.append(ev)
        if len(waiting) >= n:
            statuses = {w.fields.get("status") for w in waiting}
            if len(waiting) == n and len(statuses) == 1:
                for t in aw.candidates(fam):  # type: ignore[union-attr]
                    self._attach_line(t, waiting[0], with_client=False)
                if self.keep_http:
                    for w in waiting:
                        c = w.fields.get("client")
                        if c and len(self.shared_clients) < 100000:
                            self.shared_clients.append(c)
                waiting.clear()
                return None
            self.flush_waiting(ev.path)
        return None

    # -- the plain case, without an event (see `TraceAssembler`'s plain lifecycle) ----------
    def plain_access(self, path: str, method: str, hpath: str) -> Trace | None:
        """The trace an access line is attached to, when it is the only request of the source that
        waits for one and no line before it makes that less plain."""
        if method != "POST" or hpath not in GEN_ENDPOINTS or path in self.just_ended or self.waiting_lines.get(path):
            return None
        aw = self.awaiting.get(path)
        if aw is None:
            return None
        aw.prune()  # what `take_access` does first: forgetting dead entries changes no answer
        return aw.sole(_FAMILY[hpath])[1]

    def apply_access(self, t: Trace, path: str, lineno: int, client: str | None, method: str, hpath: str, status: int,
                     ts: float | None) -> None:
        self.attach(t, path, lineno, ts, client, method, hpath, status, True)

    def waits_apart(self, path: str, tid: str) -> bool:
        """Do access lines of `path` wait to be told apart among requests that `tid` is not one of?
        A request line for it then gives them up (`give_up`)."""
        if not self.waiting_lines.get(path):
            return False
        aw = self.awaiting.get(path)
        return aw is None or tid not in aw

    def _attach_line(self, t: Trace, ev: Event, with_client: bool) -> None:
        f = ev.fields
        self.attach(t, ev.path, ev.lineno, ev.ts, f.get("client"), f.get("method"), f.get("path"), f.get("status"), with_client)

    def attach(self, t: Trace, path: str, lineno: int, ts: float | None, client: str | None, method: str | None,
               hpath: str | None, status: int | None, with_client: bool) -> None:
        t.http_status = status
        if with_client:
            t.client = client
        t.http = {"method": method, "path": hpath, "status": status, "path_file": path, "line": lineno,
                  "client": client if with_client else None}
        self.add_timeline(t, ACCESS, ts, lineno, path)
        self.changed.add(t.id)
        self.settle(t)

    def give_up(self, path: str) -> None:
        """Access lines still waiting when a new request arrives cannot be told apart any more:
        their candidates end as `unknown` instead of staying in flight forever."""
        for t in list(self.awaiting.pop(path, ())):
            if t.http_status is None and not t._ended:
                t._ended = True
                self.settle(t)
                self.changed.add(t.id)
        self.flush_waiting(path)

    def flush_waiting(self, path: str) -> None:
        """The access lines of `path` still waiting are told apart from no trace: HTTP records."""
        for w in self.waiting_lines.pop(path, []):
            self._record(w)

    def _record(self, ev: Event) -> None:
        self.http_count += 1
        f = ev.fields
        if self.keep_http and len(self.http_records) < 100000:
            self.http_records.append({"source": ev.path, "line": ev.lineno, "time": ev.ts, "server": ev.fmt,
                                      "client": f.get("client"), "method": f.get("method"), "path": f.get("path"),
                                      "status": f.get("status")})
