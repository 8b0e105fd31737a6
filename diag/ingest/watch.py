"""Waking the daemon when a followed log changes: inotify, read by the main loop when it waits.

The daemon only needs to know *that* something happened to a followed path (new bytes, a new or
renamed file), not each event. So there is no watcher thread: the main loop, when it has nothing
to read, blocks in `poll` on the inotify descriptor (and a pipe that signal handlers write to),
then reads every pending event in one system call. A server whose logging writes each line on its
own produces an event per line; handled one by one in a watcher thread (watchdog) they cost more
CPU than reading the lines. While the daemon is busy (catching up) it does not read events at
all: the kernel coalesces repeats and, if its queue overflows, says so once (taken as "look
everywhere").
"""

from __future__ import annotations

import fnmatch
import logging
import os
import select
import time
from typing import Any, Sequence

log = logging.getLogger("diag")


class Waker:
    """A pipe a signal handler writes one byte to, to end the main loop's wait at once.

    Signal handlers run on the main thread between two bytecodes, possibly while it holds a lock
    (inside `threading.Event.clear`, say): a handler that takes a lock itself can deadlock the
    daemon, which then neither reloads nor stops. A write to a non-blocking pipe takes none."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._poll = select.poll()
        self._poll.register(self._r, select.POLLIN)

    def fileno(self) -> int:
        return self._r

    def poke(self) -> None:
        """From a signal handler: one non-blocking write, no lock."""
        try:
            os.write(self._w, b"\0")
        except OSError:
            pass  # the pipe is full (a wake is pending anyway) or closed (shutting down)

    def drain(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except OSError:  # BlockingIOError: empty
            pass

    def wait(self, timeout: float, fds: Sequence[int] = ()) -> bool:
        """Block up to `timeout` s, or until poked or one of `fds` (a journalctl child's output) has
        something to read; True if poked."""
        try:
            ready = _poll_with(self._poll, fds, timeout)
        except OSError:
            time.sleep(timeout)  # never a busy loop
            return False
        poked = self._r in ready
        if poked:
            self.drain()
        return poked

    def close(self) -> None:
        # The write end is forgotten before it is closed: a handler that runs now writes to nothing,
        # never to a descriptor number something else has just been given.
        r, w, self._r, self._w = self._r, self._w, -1, -1
        for fd in (w, r):
            try:
                os.close(fd)
            except OSError:
                pass


class DirWatch:
    """inotify watches on the directories of the followed paths; `wait` says what changed."""

    def __init__(self, patterns: list[str], dirs: list[str], waker: Waker | None = None):
        from inotify_simple import INotify, flags  # a dependency; ImportError/OSError: the caller polls

        self._flags = flags
        self._mask = (flags.MODIFY | flags.ATTRIB | flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO
                      | flags.DELETE_SELF | flags.MOVE_SELF)
        self._created = flags.CREATE | flags.MOVED_FROM | flags.MOVED_TO | flags.Q_OVERFLOW
        self._ino: Any = INotify(nonblocking=True)
        self._patterns = patterns
        self._dirs: dict[int, str] = {}
        self._own_waker = waker is None
        self._waker = Waker() if waker is None else waker
        self._poll = select.poll()  # not select(): a daemon following many files may hold descriptors past FD_SETSIZE
        self._poll.register(self._ino.fileno(), select.POLLIN)
        self._poll.register(self._waker.fileno(), select.POLLIN)
        for d in dirs:
            try:
                self._dirs[self._ino.add_watch(d, self._mask)] = d
            except OSError as exc:  # e.g. fs.inotify.max_user_watches exhausted
                log.warning("inotify: cannot watch %s (%s); polling it", d, exc.strerror or exc)

    def relevant(self, path: str) -> bool:
        # Only the configured logs matter: the state directory may share their directory,
        # and waking on our own SQLite writes would make the daemon chase its own tail.
        return any(path == p or fnmatch.fnmatch(path, p) for p in self._patterns)

    def poke(self) -> None:
        """Wake `wait` now (from a signal handler: one non-blocking write)."""
        self._waker.poke()

    def wait(self, timeout: float, fds: Sequence[int] = ()) -> tuple[bool, bool]:
        """Block up to `timeout` s, or until one of `fds` has something to read. (woken: a followed
        path changed or `poke` was called, created: a file appeared or was renamed there, so globs
        are expanded again)."""
        try:
            ready = _poll_with(self._poll, fds, timeout)
        except OSError:
            time.sleep(timeout)  # never a busy loop
            return False, False
        woken = created = False
        if self._waker.fileno() in ready:
            woken = True
            self._waker.drain()
        if self._ino.fileno() in ready:
            try:
                events = self._ino.read(timeout=0)
            except BlockingIOError:
                events = []
            for ev in events:
                if ev.mask & self._flags.Q_OVERFLOW:
                    woken = created = True
                    continue
                d = self._dirs.get(ev.wd)
                if d is None:
                    continue
                if not self.relevant(os.path.join(d, ev.name) if ev.name else d):
                    continue
                woken = True
                if ev.mask & self._created:
                    created = True
        return woken, created

    def close(self) -> None:
        if self._own_waker:
            self._waker.close()
        try:
            self._ino.close()
        except OSError:
            pass


def _poll_with(p: Any, fds: Sequence[int], timeout: float) -> set[int]:
    """The descriptors of `p`, and `fds` for this wait only, that are ready within `timeout` s.
    (A poll object's registrations are a dict in the process: adding and removing them is no system call.)"""
    for fd in fds:
        p.register(fd, select.POLLIN)
    try:
        return {fd for fd, _ in p.poll(timeout * 1000)}
    finally:
        for fd in fds:
            try:
                p.unregister(fd)
            except (KeyError, ValueError):
                pass
