"""The dashboard's ASGI application: server-rendered pages, a JSON API, an event stream, /metrics.

It only reads the store, through read-only SQLite connections of its own (one per server thread),
so the daemon's main loop stays the single writer. Every string that came from a log is untrusted
(request ids are client-chosen): pages are Jinja2 templates with autoescaping, the browser code
builds DOM nodes with textContent only, and a Content-Security-Policy forbids inline script.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from diag import __version__
from diag.parsing.clock import iso
from diag.store.db import Store
from diag.web.gpu import GpuCache
from diag.web.live import Live
from diag.web.metrics import make_registry

HERE = Path(__file__).resolve().parent
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]


@dataclass
class WebState:
    """What the routes share: where the store is, the token, the live stream, the metrics registry."""

    db_path: Path
    token: str | None = None
    nvml: Any = None
    live: Live = field(init=False)
    _local: threading.local = field(default_factory=threading.local, init=False)

    def __post_init__(self) -> None:
        self.live = Live(self.open_store)
        self.gpus = GpuCache(self.nvml)
        self.registry = make_registry(self.store, self.gpus.get)

    def open_store(self) -> Store:
        return Store(self.db_path, readonly=True)

    def store(self) -> Store:
        """This thread's read-only connection (sqlite3 connections stay in the thread that made them)."""
        s = getattr(self._local, "store", None)
        if s is None:
            s = self._local.store = self.open_store()
        return s


class SecurityHeaders:
    """Pure ASGI (streams pass through untouched): CSP and friends on every response."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                msg["headers"] = list(msg.get("headers", [])) + HEADERS
            await send(msg)

        await self.app(scope, receive, send_with_headers)


def when(value: Any) -> str:
    """The one form the pages show a time in: `2026-11-22 18:27:00`, this server's local time (the
    footer says so), to the second. Takes epoch seconds or the ISO text the JSON documents carry
    (`diag.parsing.clock.iso`, which the API keeps); anything else shows as it is, nothing as nothing.
    The live rows' script cuts the same form out of the same ISO text (`diag.js`)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            value = iso(value)
        except (OverflowError, OSError, ValueError):
            return ""
    if not isinstance(value, str) or not value:
        return ""
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    if t.tzinfo is not None:
        t = t.astimezone()  # a UTC `Z` time (Alertmanager's form) in local time like the rest
    return t.strftime("%Y-%m-%d %H:%M:%S")


def utc_offset() -> int:
    """This server's UTC offset now, in seconds: the page's charts draw times on its clock (`diag.js`)."""
    return time.localtime().tm_gmtoff


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}".rstrip("0").rstrip(".") if v != int(v) or digits == 0 else str(int(v))
    return str(v)


def templates() -> Jinja2Templates:
    env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = when
    env.globals["utc_offset"] = utc_offset
    env.filters["num"] = _num
    env.globals["version"] = __version__
    return Jinja2Templates(env=env)


def create_app(db_path: Path | str, token: str | None = None, nvml: Any = None) -> FastAPI:
    """The app over the store at `db_path`. `app.state.web.live.poke` is what a writer in this process calls after a commit."""
    from diag.web import api, pages

    app = FastAPI(title="diag", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.web = WebState(Path(db_path), token, nvml)
    app.state.templates = templates()
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(pages.router)
    app.include_router(api.router)
    app.add_middleware(SecurityHeaders)
    return app
