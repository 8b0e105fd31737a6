"""Who may read the dashboard: anyone on loopback without a token; with a token, only its holders.

The token comes from `[web] token_file` or `$DIAG_WEB_TOKEN`. Scrapers and scripts send it as
`Authorization: Bearer TOKEN`; people type it once into /login, which sets an HttpOnly, SameSite=Strict
cookie holding an HMAC of the token (not the token itself). Binding anywhere but loopback without a
token is refused before anything listens (`check_bind`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from pathlib import Path
from urllib.parse import quote

from fastapi import HTTPException, Request

from diag.fsname import display

COOKIE = "diag_session"


class AuthError(Exception):
    """A token that cannot be read, or a bind that needs one: a one-line reason, exit 2."""


def load_token(token_file: str | None) -> str | None:
    env = os.environ.get("DIAG_WEB_TOKEN")
    if env and env.strip():
        return env.strip()
    if token_file:
        try:
            tok = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthError(f"web token_file {display(token_file)}: cannot read it ({exc.__class__.__name__}: {exc})") from None
        if not tok:
            raise AuthError(f"web token_file {display(token_file)} is empty")
        return tok
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    if token is None and not is_loopback(host):
        raise AuthError(f"refusing to serve the dashboard on {host}: anything but loopback needs a token "
                        "([web] token_file or DIAG_WEB_TOKEN)")


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"diag-web-session", hashlib.sha256).hexdigest()


def authorized(request: Request) -> bool:
    token: str | None = request.app.state.web.token
    if token is None:
        return True
    h = request.headers.get("authorization", "")
    if h[:7].lower() == "bearer " and hmac.compare_digest(h[7:].strip().encode(), token.encode()):
        return True
    c = request.cookies.get(COOKIE, "")
    return bool(c) and hmac.compare_digest(c.encode(), session_value(token).encode())


def require_page(request: Request) -> None:
    """Pages: a person without the cookie goes to the login form and comes back."""
    if not authorized(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(status_code=303, headers={"Location": f"/login?next={quote(target, safe='')}"})


def require_api(request: Request) -> None:
    """API, /metrics, the event stream: 401 with the scheme to use."""
    if not authorized(request):
        raise HTTPException(status_code=401, detail="a token is needed: Authorization: Bearer TOKEN",
                            headers={"WWW-Authenticate": "Bearer"})


def safe_next(target: str | None) -> str:
    """Only a path on this server (no //host, no scheme) may be a post-login redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
