"""The live stream behind `/api/events`: one poller for all open pages, woken by the daemon's commits.

However many pages are open, the store is asked once per commit (or every `poll` seconds when no
daemon runs in this process, as with `diag web`) for the traces committed since the last look,
through an index on `updated_at`. The daemon's main loop only calls `poke()`, which schedules a
wake-up on the web server's event loop and returns at once: a slow page can never slow ingestion.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from diag.store.db import Store
from diag.web import queries

log = logging.getLogger("diag")
OVERFLOW = object()  # put in a subscriber's queue when it fell behind: the page reloads the list
CLOSE = object()  # the server is stopping: the stream ends


class Batch:
    """Rows committed together, JSON-encoded at most once however many unfiltered pages receive them."""

    __slots__ = ("rows", "_json")

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows
        self._json: str | None = None

    def json(self) -> str:
        if self._json is None:
            self._json = json.dumps(self.rows, separators=(",", ":"))
        return self._json


class Live:
    def __init__(self, open_store: Callable[[], Store], poll: float = 0.5, min_gap: float = 0.05, burst_gap: float = 1.0):
        self.open_store = open_store
        self.poll = poll
        self.min_gap = min_gap
        self.burst_gap = burst_gap
        self.subs: set[asyncio.Queue] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diag-live")  # one thread: its own connection
        self._store: Store | None = None
        self._poked = False

    def poke(self) -> None:
        """Something was committed (any thread). Cheap and non-blocking: at most one wake-up is pending,
        so a daemon committing hundreds of times a second does not hand the GIL to this loop each time."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or not self.subs or self._poked:
            return
        self._poked = True
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # the loop is closed: the web server stopped
            pass

    def close_streams(self) -> None:
        """Shutting down (any thread): every open stream ends now, so the server stops without waiting on them."""
        loop = self._loop
        if loop is None:
            return
        for q in list(self.subs):
            try:
                loop.call_soon_threadsafe(q.put_nowait, CLOSE)
            except (RuntimeError, asyncio.QueueFull):
                pass

    async def subscribe(self) -> asyncio.Queue:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
        q: asyncio.Queue = asyncio.Queue(maxsize=32)
        self.subs.add(q)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self.subs.discard(q)

    def _db(self) -> Store:
        if self._store is None:
            self._store = self.open_store()
        return self._store

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        self._poked = False  # a wake-up meant for a loop that ended with its last subscriber
        mark: tuple[float, int] | None = None
        failing = False
        while self.subs:
            try:
                if mark is None:
                    mark = await loop.run_in_executor(self._pool, lambda: queries.high_water(self._db()))
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll)
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
                self._poked = False
                rows, mark, truncated = await loop.run_in_executor(self._pool, lambda m=mark: queries.changed_since(self._db(), m))
                failing = False
            except Exception as exc:  # noqa: BLE001 - store busy or replaced, or a bug: say so once, keep trying
                if not failing:
                    log.error("web: live stream cannot read the store (%s: %s); retrying", exc.__class__.__name__, exc)
                    failing = True
                await asyncio.sleep(self.poll)
                continue
            if rows:
                self._publish(rows)
            if truncated:
                self._publish(None)
            # A burst (more than a page can show) is skipped with a reload notice; while it lasts, look
            # once a second rather than at every commit, so the daemon's ingestion keeps the CPU.
            await asyncio.sleep(self.burst_gap if truncated else self.min_gap)

    def _publish(self, rows: list[dict[str, Any]] | None) -> None:
        """Rows to every subscriber; None: rows were skipped, pages should offer a reload."""
        batch = Batch(rows) if rows is not None else OVERFLOW
        for q in list(self.subs):
            try:
                q.put_nowait(batch)
            except asyncio.QueueFull:
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(OVERFLOW)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
