"""Which traces of one source still wait for their access line: an index, not a list to scan.

Access lines (uvicorn) carry no request id, so each one asks "which requests of this file could
I belong to?" (see the rule in `diag.analysis.access_lines`). Scanning every waiting trace per access line made
attachment O(waiting) per line; this index answers in O(1): live candidates are kept per endpoint
family (`chat`, `completions`, unknown), in arrival order, and counted.

A trace stops being a candidate when it gets an HTTP status, is aborted, or ends without failing
(`died`). The assembler reports that as it happens; the entry is only *forgotten* at the next
access line of the source (when the old code pruned it), because until then it still counts for
membership ("was this request already waiting?") and for the cap on waiting entries. A trace
that becomes a candidate again before that (a failure reported after its end) is revived.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from diag.analysis.trace import Trace

CAP = 1024


def is_candidate(t: "Trace") -> bool:
    """Can an access line still belong to this trace?"""
    return t.http_status is None and not t._aborted and not (t._ended and not t._failed)


class AwaitingIndex:
    """The traces of one source without an access line yet."""

    __slots__ = ("entries", "live", "died", "_seq")

    def __init__(self) -> None:
        self.entries: OrderedDict[str, tuple[int, Trace]] = OrderedDict()  # every entry, arrival order
        self.live: dict[str | None, dict[str, tuple[int, Trace]]] = {}  # endpoint family -> live entries
        self.died: list[Trace] = []  # stopped being candidates since the last access line
        self._seq = 0

    def __contains__(self, tid: str) -> bool:
        return tid in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, t: "Trace") -> None:
        if t.id in self.entries:
            return  # re-adding keeps the first arrival (as an OrderedDict assignment did)
        self._seq += 1
        e = (self._seq, t)
        self.entries[t.id] = e
        self._live(t.endpoint)[t.id] = e
        if len(self.entries) > CAP:
            tid, (_, old) = self.entries.popitem(last=False)
            self.live.get(old.endpoint, {}).pop(tid, None)

    def remove(self, tid: str) -> None:
        e = self.entries.pop(tid, None)
        if e is not None:
            self.live.get(e[1].endpoint, {}).pop(tid, None)

    def settled(self, t: "Trace") -> None:
        """The assembler changed `t`: if it can no longer take an access line, it is no candidate."""
        live = self.live.get(t.endpoint)
        if live is not None and t.id in live and not is_candidate(t):
            del live[t.id]
            self.died.append(t)

    def prune(self) -> None:
        """An access line arrived: forget the entries that died, revive the ones that came back."""
        if not self.died:
            return
        entries = self.entries
        for t in self.died:
            e = entries[t.id] if t.id in entries else None  # not .get: a method call when compiled
            if e is None or e[1] is not t:
                continue
            if is_candidate(t):
                self._live(t.endpoint)[t.id] = e
            else:
                del entries[t.id]
        self.died.clear()

    def _live(self, family: str | None) -> dict[str, tuple[int, Trace]]:
        """The live entries of an endpoint family, made when first needed (setdefault would make an
        empty dict on every call)."""
        d = self.live.get(family)
        if d is None:
            d = self.live[family] = {}
        return d

    def _families(self, fam: str | None) -> Iterator[dict[str, tuple[int, Trace]]]:
        """The non-empty live entries an access line of family `fam` may belong to."""
        return (d for k, d in self.live.items() if d and (fam is None or k is None or k == fam))

    def sole(self, fam: str | None) -> tuple[int, "Trace | None"]:
        """(how many live candidates for family `fam`, the trace when there is exactly one): the
        question each access line asks, answered without building lists."""
        n = 0
        only = None
        for k, d in self.live.items():  # `_families`, without a generator per access line
            if d and (fam is None or k is None or k == fam):
                n += len(d)
                only = d
        if n == 1:
            for _, t in only.values():  # type: ignore[union-attr]
                return 1, t
        return n, None

    def candidates(self, fam: str | None) -> list["Trace"]:
        """Live candidates for an access line of family `fam`, in arrival order."""
        ds = list(self._families(fam))
        if len(ds) == 1:
            return [t for _, t in sorted(ds[0].values(), key=_seq)] if len(ds[0]) > 1 else [t for _, t in ds[0].values()]
        return [t for _, t in sorted((e for d in ds for e in d.values()), key=_seq)]

    def __iter__(self) -> Iterator["Trace"]:
        """Every entry, dead or alive, in arrival order."""
        return (t for _, t in self.entries.values())


def _seq(e: tuple[int, "Trace"]) -> int:
    return e[0]
