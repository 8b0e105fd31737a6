"""Server-rendered pages: readable without JavaScript; the scripts only add live rows and charts."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from diag.alerts import view as alerts_view
from diag.store.views import status_doc
from diag.web import queries
from diag.web.auth import COOKIE, authorized, require_page, safe_next, session_value

router = APIRouter()
pages = APIRouter(dependencies=[Depends(require_page)])


def _render(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    ctx.setdefault("nav", name.split(".")[0])
    ctx["auth_enabled"] = request.app.state.web.token is not None
    return request.app.state.templates.TemplateResponse(request, name, ctx, status_code=status_code)


@pages.get("/", response_class=HTMLResponse)
def overview(request: Request) -> HTMLResponse:
    web = request.app.state.web
    store = web.store()
    meta = store.meta()
    return _render(request, "overview.html", status=status_doc(store), servers=queries.servers(store, meta),
                   traffic=queries.traffic(store), alerts=alerts_view.alerts_doc(store.db),
                   latest=queries.latest_findings(store), gpu=web.gpus.get(), scanned=(meta.get("scanned") or [])[-10:])


@pages.get("/requests", response_class=HTMLResponse)
def requests_page(request: Request, cursor: str | None = None, q: str = "", limit: int = queries.PAGE) -> Response:
    store = request.app.state.web.store()
    q = q.strip()[:300]
    matches: list[str] = []
    if q:
        tid, matches = queries.resolve(store, q)
        if tid is not None:
            return RedirectResponse(f"/trace/{quote(tid, safe='')}", status_code=303)
    flt = queries.Filters.from_query(request.query_params)
    error = None
    try:
        page = queries.list_traces(store, flt, cursor, limit)
    except queries.BadFilter as exc:
        error, page = str(exc), {"traces": [], "next": None}
    fq = flt.as_query() | ({"limit": str(limit)} if limit != queries.PAGE else {})
    next_url = f"/requests?{urlencode(fq | {'cursor': page['next']})}" if page["next"] else None
    return _render(request, "requests.html", page=page, flt=flt, error=error, q=q, matches=matches, next_url=next_url,
                   first_url=f"/requests?{urlencode(fq)}" if cursor else None, live=not cursor,
                   events_url=f"/api/events?{urlencode(flt.as_query())}", statuses=queries.STATUSES, models=queries.models(store))


@pages.get("/trace/{tid:path}", response_class=HTMLResponse)
def trace_page(request: Request, tid: str) -> HTMLResponse:
    store = request.app.state.web.store()
    d = queries.trace_detail(store, tid)
    if d is None:
        return _render(request, "notfound.html", status_code=404, tid=tid, matches=store.trace_candidates(tid), nav="requests")
    return _render(request, "trace.html", t=d, nav="requests")


@pages.get("/findings", response_class=HTMLResponse)
def findings_page(request: Request, rule: str | None = None) -> HTMLResponse:
    store = request.app.state.web.store()
    return _render(request, "findings.html", groups=queries.finding_groups(store, rule or None), rule=rule)


@pages.get("/alerts", response_class=HTMLResponse)
def alerts_page(request: Request) -> HTMLResponse:
    store = request.app.state.web.store()
    return _render(request, "alerts.html", alerts=alerts_view.alerts_doc(store.db))


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> Response:
    if request.app.state.web.token is None or authorized(request):
        return RedirectResponse(safe_next(next), status_code=303)
    return _render(request, "login.html", next=safe_next(next), error=None)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, token: str = Form(""), next: str = Form("/")) -> Response:
    import hmac

    web = request.app.state.web
    if web.token is None:
        return RedirectResponse(safe_next(next), status_code=303)
    if not hmac.compare_digest(token.strip().encode(), web.token.encode()):
        return _render(request, "login.html", status_code=401, next=safe_next(next), error="That is not the token.")
    resp = RedirectResponse(safe_next(next), status_code=303)
    resp.set_cookie(COOKIE, session_value(web.token), httponly=True, samesite="strict", secure=request.url.scheme == "https",
                    max_age=30 * 86400, path="/")
    return resp


router.include_router(pages)
