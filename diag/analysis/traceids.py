"""Trace identity: which server run and which source a request id belongs to.

llama.cpp's `task-N` and LMDeploy's `session-N` count from 0 again after every restart, and two
servers' logs both have a `task-0`; even vLLM ids can repeat (clients may set `X-Request-Id`).
The store keys traces by id, so ids are scoped: every source (a log path) has an *epoch*, bumped
when its startup lines show a new server start, and a *tag* that tells it from the other sources.
The first epoch of the first source keeps ids as the server wrote them (`task-3`); others get a
suffix (`task-3#2` for the second start, `task-3@llama-b` for another source). Ids stay opaque
strings to everything downstream. The scopes are state: the daemon commits them with the store.

A source here is a log *family*, not a file: `vllm.log.1` and `vllm.log`, or the date-stamped
`vllm-2026-01-01.log` and `vllm-2026-01-02.log` in one directory, are one server's log cut in
pieces, and a request that spans the cut must keep one id.

vLLM 0.14+ logs a request's `Added` line with the engine's id, the request's and `-<8 hex>`
(`engine_base` gives the request's back): the trace table (`diag.analysis.tracetable`) aliases it.
"""

from __future__ import annotations

import re
from typing import Any

_TAG_CHARS = re.compile(r"[^\w.-]+")
# what rotation adds to a name: .1 .2.gz, -20260101, .2026-01-01, _2026-01-01T10-00-00, -1700000000
_ROTATION = re.compile(r"(?:[._-]\d{4}-?\d\d-?\d\d(?:[T_-]?\d\d[:-]?\d\d(?:[:-]?\d\d)?)?|[._-]\d{9,}|\.\d{1,3})+\Z")


def family(path: str) -> str:
    """The log a (rotated, date-stamped, compressed) file is a piece of: directory + stem."""
    d, _, name = path.rpartition("/")
    for _ in range(3):
        before = name
        for ext in (".gz", ".log", ".txt", ".out", ".err"):
            if name.endswith(ext):
                name = name[: -len(ext)]
        name = _ROTATION.sub("", name)
        if name == before:
            break
    return f"{d}/{name or 'log'}"


def engine_base(rid: str) -> str | None:
    """vLLM 0.14+: the engine's id is the request's id and "-<8 hex>"; that request id, or None."""
    n = len(rid)
    if n <= 9 or rid[n - 9] != "-":
        return None
    for i in range(n - 8, n):  # a loop of characters: a built package compiles it to C (traceids.pxd)
        if rid[i] not in "0123456789abcdef":
            return None
    return rid[:-9]


class Scope:
    """One log family's run (`epoch`, counted from 1) and `tag`; `suffix`, what its ids get, is
    kept with them (asked once per request line). `used`: a request was seen in this epoch
    (several startup lines of one start bump once)."""

    __slots__ = ("epoch", "tag", "used", "suffix")

    def __init__(self, epoch: int = 1, tag: str = "", used: bool = False) -> None:
        self.epoch = epoch
        self.tag = tag
        self.used = used
        self.suffix = tag + (f"#{epoch}" if epoch > 1 else "")

    def next_epoch(self) -> None:
        self.epoch += 1
        self.used = False
        self.suffix = self.tag + f"#{self.epoch}"


class IdScopes:
    def __init__(self) -> None:
        self.by_path: dict[str, Scope] = {}  # family -> scope: one per server log, however many files
        self._tags: set[str] = set()
        self._first_taken = False
        self._family: dict[str, str] = {}  # path -> family, cached (one regex per new path)

    def scope(self, path: str) -> Scope:
        fam = self._family.get(path)
        if fam is None:
            fam = family(path)
            if len(self._family) > 4096:
                self._family.clear()  # a cache only
            self._family[path] = fam
        s = self.by_path.get(fam)
        if s is None:
            s = self.by_path[fam] = Scope(tag=self._new_tag(fam))
        return s

    def suffix(self, path: str) -> str:
        s = self.scope(path)
        s.used = True
        return s.suffix

    def forget(self, path: str) -> None:
        """A file that is gone: its family's scope stays (the family may go on in the next file)."""
        self._family.pop(path, None)

    def new_epoch(self, path: str) -> bool:
        """A server start in `path`'s log: later ids belong to a new run. False if nothing was
        seen since the last start (one start writes several startup lines)."""
        s = self.scope(path)
        if not s.used:
            return False
        s.next_epoch()
        return True

    def _new_tag(self, path: str) -> str:
        if not self._first_taken:
            self._first_taken = True
            return ""
        stem = path.rsplit("/", 1)[-1]
        base = "@" + (_TAG_CHARS.sub("-", stem)[:24] or "src")
        tag, n = base, 2
        while tag in self._tags:
            tag = f"{base}.{n}"
            n += 1
        self._tags.add(tag)
        return tag

    # -- state the daemon commits ----------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"first_taken": self._first_taken, "tags": sorted(self._tags),
                "paths": {p: [s.epoch, s.tag, s.used] for p, s in self.by_path.items()}}

    def restore(self, d: Any) -> None:
        if not isinstance(d, dict):
            return
        try:
            self._first_taken = bool(d.get("first_taken"))
            self._tags = {str(t) for t in d.get("tags", [])}
            for p, (epoch, tag, used) in (d.get("paths") or {}).items():
                self.by_path[str(p)] = Scope(int(epoch), str(tag), bool(used))
        except (TypeError, ValueError):
            return
