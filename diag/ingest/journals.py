"""The daemon's journal sources together (`diag.ingest.journal`): the units configured, started and
stopped on a reload, read each turn, waited on, and committed as one meta value."""

from __future__ import annotations

from typing import Any

from diag.daemon.config import JournalSpec
from diag.ingest.journal import JournalSource


class Journals:
    """The daemon's journal sources, by name: read each turn, waited on, committed."""

    def __init__(self, specs: list[JournalSpec], stored: Any, max_line: int, from_beginning: bool):
        self.stored: dict[str, Any] = dict(stored) if isinstance(stored, dict) else {}  # name -> state, as last committed
        self.max_line = max_line
        self.from_beginning = from_beginning
        self.sources: dict[str, JournalSource] = {}
        self.configure(specs)

    def configure(self, specs: list[JournalSpec]) -> None:
        """Follow these units (at start, and on SIGHUP): new ones start, dropped ones stop (their
        committed state is kept: named again, they go on from it)."""
        want = {s.name: s for s in specs}
        for name in list(self.sources):
            if name not in want or want[name] != self.sources[name].spec:
                src = self.sources.pop(name)
                src.stop()
                self.stored[name] = src.state()
        for name, spec in want.items():
            if name not in self.sources:
                self.sources[name] = JournalSource(spec, self.stored.get(name), self.max_line, self.from_beginning)

    def read(self) -> tuple[list[tuple[JournalSource, bytes]], bool]:
        """(each source with the lines that came, whether a child started: its place is to be committed)."""
        out, started = [], False
        for src in self.sources.values():
            out.append((src, src.read()))
            started = started or src.started
            src.started = False
        return out, started

    def fds(self) -> list[int]:
        """The children's stdout: the main loop's wait ends when one has something."""
        return [fd for src in self.sources.values() if (fd := src.fileno()) is not None]

    @property
    def behind(self) -> bool:
        return any(src.behind for src in self.sources.values())

    def state(self) -> dict[str, Any]:
        """Every unit's place (those no longer configured too), for the store's meta."""
        out = dict(self.stored)
        out.update((name, src.state()) for name, src in self.sources.items())
        return out

    @property
    def errors(self) -> dict[str, str]:
        return {name: src.error for name, src in self.sources.items() if src.error}

    def stopping(self) -> None:
        """The daemon stops: read what the children wrote, start none again, report no exit."""
        for src in self.sources.values():
            src.wind_down()

    def close(self) -> None:
        for src in self.sources.values():
            src.stop()
