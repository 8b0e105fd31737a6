"""The JSON API under /api/ (what the pages' scripts use; documented in the README), the event stream and /metrics."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from prometheus_client import CONTENT_TYPE_LATEST

from diag.alerts import view as alerts_view
from diag.store.views import status_doc
from diag.web import queries
from diag.web.auth import require_api
from diag.web.live import CLOSE, OVERFLOW
from diag.web.metrics import exposition

router = APIRouter(dependencies=[Depends(require_api)])


def _web(request: Request) -> Any:
    return request.app.state.web


@router.get("/api/traces")
def api_traces(request: Request, cursor: str | None = None, limit: int = queries.PAGE) -> dict[str, Any]:
    """Newest first, the /requests filters, keyset pagination: `{"traces": [...], "next": cursor}`."""
    flt = queries.Filters.from_query(request.query_params)
    try:
        return queries.list_traces(_web(request).store(), flt, cursor, limit)
    except queries.BadFilter as exc:
        raise HTTPException(400, str(exc)) from None


@router.get("/api/traces/{tid:path}")
def api_trace(request: Request, tid: str) -> dict[str, Any]:
    store = _web(request).store()
    d = queries.trace_detail(store, tid)
    if d is None:
        return JSONResponse({"detail": "no such trace", "prefix_matches": store.trace_candidates(tid)}, status_code=404)
    return d


@router.get("/api/findings")
def api_findings(request: Request, rule: str | None = None) -> dict[str, Any]:
    """Findings grouped by rule (count, first/last, redacted excerpt, remedy, request ids)."""
    return {"findings": queries.finding_groups(_web(request).store(), rule)}


@router.get("/api/alerts")
def api_alerts(request: Request) -> dict[str, Any]:
    """What the Alerts page and `diag alerts --json` show: firing, silenced, resolved, silences, outbox."""
    return alerts_view.alerts_doc(_web(request).store().db)


@router.get("/api/status")
def api_status(request: Request) -> dict[str, Any]:
    web = _web(request)
    store = web.store()
    doc = status_doc(store)
    meta = store.meta()
    doc["servers"] = [{k: s[k] for k in ("source", "facts", "latest")} for s in queries.servers(store, meta, series=False)]
    doc["alerts_firing"] = alerts_view.firing_count(store.db)
    doc["gpu"] = web.gpus.get()
    return doc


@router.get("/api/events", response_class=EventSourceResponse)
async def api_events(request: Request):
    """Server-Sent Events: `traces` events carry the rows (list shape) committed since the last one,
    filtered like /api/traces; `reload` when this client fell behind."""
    flt = queries.Filters.from_query(request.query_params)
    try:
        flt.compile()
    except queries.BadFilter as exc:
        yield ServerSentEvent(event="error", data={"detail": str(exc)})
        return
    live = _web(request).live
    q = await live.subscribe()
    try:
        yield ServerSentEvent(event="hello", data={"ok": True}, retry=2000)
        filtered = bool(flt.as_query())
        while True:
            batch = await q.get()
            if batch is CLOSE:
                return
            if batch is OVERFLOW:
                yield ServerSentEvent(event="reload", data={"reason": "too many changes at once"})
            elif not filtered:
                yield ServerSentEvent(event="traces", raw_data=batch.json())
            else:
                rows = [r for r in batch.rows if flt.matches(r)]
                if rows:
                    yield ServerSentEvent(event="traces", raw_data=json.dumps(rows, separators=(",", ":")))
    finally:
        live.unsubscribe(q)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    return Response(exposition(_web(request).registry), media_type=CONTENT_TYPE_LATEST)
