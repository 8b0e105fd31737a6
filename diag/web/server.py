"""Serving the dashboard: inside the daemon (a uvicorn thread) or alone (`diag web`).

The listening socket is bound before anything else starts, so a port in use or a refused bind
is a one-line error at startup, not a traceback in a thread later. uvicorn's own logging setup is
left out (`log_config=None`): the daemon's log format stays the only one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diag.daemon.config import DEFAULT_WEB_LISTEN
from diag.web.auth import AuthError, check_bind, load_token

log = logging.getLogger("diag")
# Inside the daemon the server's housekeeping (its Date header, "should I exit") runs this often, not
# uvicorn's 10 times a second: those wake-ups took the GIL from the daemon's follow loop ten times a second
# for nothing (0.1-0.2 % of a core, tests/bench/bench_daemon.py). `stop` wakes it at once.
DAEMON_TICK = 1.0


class WebError(Exception):
    """Cannot serve: a one-line reason (exit status 2)."""


class BindError(WebError):
    """The address is taken or not ours: `diag web` exits 2; the daemon says so and follows its logs anyway."""


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `PORT` (loopback)."""
    v = value.strip()
    if v.isdigit():
        host, port = "127.0.0.1", v
    elif v.startswith("["):
        host, _, port = v[1:].partition("]:")
    else:
        host, _, port = v.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise WebError(f"--web/listen {value!r}: expected HOST:PORT, for example {DEFAULT_WEB_LISTEN}")
    return host, int(port)


@dataclass
class WebServer:
    app: Any
    host: str
    port: int
    sock: socket.socket
    token: str | None
    _server: Any = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def _uvicorn(self, tick: float | None = None) -> Any:
        """`tick`: seconds between housekeeping wake-ups (None: uvicorn's own loop, which a signal ends)."""
        import uvicorn

        live = self.app.state.web.live

        class Server(uvicorn.Server):
            _wake: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

            def handle_exit(self, sig: int, frame: Any) -> None:  # SIGINT/SIGTERM under `diag web`
                live.close_streams()  # open event streams end now: a clean, immediate shutdown
                super().handle_exit(sig, frame)

            async def main_loop(self) -> None:
                if tick is None:
                    return await super().main_loop()
                stop = asyncio.Event()
                self._wake = (asyncio.get_running_loop(), stop)
                while not await self.on_tick(0):  # tick 0: the Date header is refreshed each time
                    try:
                        await asyncio.wait_for(stop.wait(), tick)
                    except asyncio.TimeoutError:
                        pass

            def wake(self) -> None:
                """From another thread: run the housekeeping now (it sees `should_exit`)."""
                if self._wake is not None:
                    loop, stop = self._wake
                    try:
                        loop.call_soon_threadsafe(stop.set)
                    except RuntimeError:  # its loop is closed: the server has stopped
                        pass

        cfg = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=2,
                             proxy_headers=False, server_header=False)
        self._server = Server(cfg)
        return self._server

    def start_thread(self) -> None:
        """Serve from a daemon thread (inside `diag daemon`)."""
        server = self._uvicorn(tick=DAEMON_TICK)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [self.sock]}, name="diag-web", daemon=True)
        self._thread.start()

    def serve(self) -> None:
        """Serve from this thread until SIGINT/SIGTERM (`diag web`)."""
        self._uvicorn().run(sockets=[self.sock])

    def stop(self) -> None:
        self.app.state.web.live.close_streams()
        if self._server is not None:
            self._server.should_exit = True
            self._server.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.app.state.web.live.close()
        try:
            self.sock.close()
        except OSError:
            pass


def prepare(db_path: Path, listen: str, token_file: str | None, nvml: Any = None) -> WebServer:
    """Token, bind check, socket: everything that can refuse, before the daemon starts reading."""
    from diag.web.app import create_app

    host, port = parse_listen(listen)
    try:
        token = load_token(token_file)
        check_bind(host, token)
    except AuthError as exc:
        raise WebError(str(exc)) from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise WebError(f"web: cannot resolve {host}: {exc}") from None
    family, socktype, proto, _, addr = infos[0]
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only for those (without it,
    # Nagle's algorithm and delayed ACKs add 40 ms to every keep-alive response)
    sock = socket.socket(family, socktype, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise BindError(f"web: cannot listen on {host}:{port}: {exc.strerror or exc} (another diag? use --web HOST:PORT or --no-web)") from None
    sock.setblocking(False)
    return WebServer(create_app(db_path, token, nvml), host, port, sock, token)
