"""Scanning a file into a store again replaces what an earlier `diag scan --store` stored for it.

A finding has no natural key (the same rule, path and line recur across rotated files; an abort's
sibling traces share a line), so each finding and engine stats row says which scan run wrote it and
for which file: `scanned_path`, the file's absolute path (so `./vllm.log` and `/var/log/vllm.log`
are one file), NULL for what the daemon stored while following a log live, which no scan touches.
Traces too: a trace's id depends on which files were scanned together and in what order
(`diag.analysis.traceids`), so a rescan may store the same requests under other ids. The members of
an archive (a support bundle, `diag.ingest.archive`) are keyed by the archive's absolute path.

A run writes its rows a batch at a time as it reads (bounded memory), and deletes the rows earlier
runs wrote for the files it read in its last transaction: an interrupted rescan leaves the earlier
rows beside its partial ones, and the next complete rescan of the file removes both.

Counters only go up (Prometheus reads a decrease as a restart), so the rows a rescan replaces are
not subtracted. Instead a run counts a finding of a rule (a request of a model, status and HTTP
status) only past the number of those the earlier scans of these files stored (its `credit`): an
unchanged file scanned again leaves the counters where they were, and a file that grew adds only
what is new in it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from diag import fsname
from diag.ingest.archive import SEP as ARCHIVE_SEP
from diag.store.counters import labels_key

STDIN = "-"  # what a scan of stdin stores as its scanned_path: never the same file twice, never replaced


def _absolute(path: str) -> str:
    """The file's absolute path as a key: a name that is not UTF-8 as its bytes in hex (`diag.fsname.ident`)."""
    return path if path == STDIN else fsname.ident(os.path.realpath(path))


def _in(values: Iterable[str]) -> str:
    """A JSON array for `IN (SELECT value FROM json_each(?))`: one bound parameter for any number of paths."""
    return json.dumps(sorted(set(values)), ensure_ascii=False)


@dataclass
class ScanRun:
    """One `diag scan --store` run: its id, the files it reads, what earlier scans of them counted."""

    id: str
    paths: dict[str, str] = field(default_factory=dict)  # a path as the pipeline names it → the file's absolute path
    credit: Counter[str] = field(default_factory=Counter)  # counter label key → rows earlier scans counted
    given: tuple[str, ...] = ()  # the display names of the files named, longest first (`_archive_of`)

    @classmethod
    def begin(cls, db: sqlite3.Connection, paths: Iterable[str]) -> "ScanRun":
        run = cls(uuid.uuid4().hex)
        for p in paths:  # the real names: the pipeline names their sources by their display names
            run.paths[fsname.display(p)] = _absolute(p)
        run.given = tuple(sorted((p for p in run.paths if p != STDIN), key=len, reverse=True))
        files = _in(v for v in run.paths.values() if v != STDIN)
        rows = db.execute("SELECT rule, severity, category, count(*) FROM findings "
                          "WHERE scanned_path IN (SELECT value FROM json_each(?)) GROUP BY 1, 2, 3", (files,))
        for rule, severity, category, n in rows:
            run.credit[labels_key(rule=rule, severity=severity, category=category)] += n
        rows = db.execute("SELECT model, status, http_status, count(*) FROM traces "
                          "WHERE scanned_path IN (SELECT value FROM json_each(?)) AND counted GROUP BY 1, 2, 3", (files,))
        for model, status, http_status, n in rows:
            run.credit[labels_key(model_name=model, status=status, http_status=http_status)] += n
        return run

    def scanned_path(self, path: str) -> str:
        """The `scanned_path` of rows from `path` (a hit's or a stats line's path, as the pipeline names it)."""
        v = self.paths.get(path)
        if v is None:
            v = self.paths[path] = self._archive_of(path) or _absolute(path)
        return v

    def _archive_of(self, path: str) -> str | None:
        """The absolute path of the archive named in this run that `path` is a member of
        (`<archive>:<member>`, `diag.ingest.archive`): a member's rows are the archive's, so scanning
        the archive again replaces them all, a member it no longer holds included."""
        for given in self.given:
            if path.startswith(given) and path[len(given):len(given) + 1] == ARCHIVE_SEP:
                return self.paths[given]
        return None

    def _uncredited(self, key: str) -> bool:
        if self.credit[key] > 0:
            self.credit[key] -= 1
            return False
        return True

    def to_count(self, hits: Iterable[Any]) -> list[Any]:
        """The hits the findings counter has not counted yet: each one an earlier scan counted is used up."""
        return [h for h in hits if self._uncredited(labels_key(rule=h.rule.id, severity=h.rule.severity, category=h.rule.category))]

    def traces_to_count(self, final: Iterable[Any], counted: set[str]) -> list[Any]:
        """The finished traces the requests counters have not counted yet. A trace's id is no key across
        scans (`diag.analysis.traceids` suffixes the ids of every file but the first one named), so
        each trace uses up one an earlier scan of these files counted, whatever its id; past those, a
        trace counts unless its id was counted already (the daemon stored it)."""
        return [t for t in final
                if self._uncredited(labels_key(model_name=t.model, status=t.status, http_status=t.http_status)) and t.id not in counted]

    def forget_earlier(self, db: sqlite3.Connection, read: Iterable[str]) -> None:
        """Inside the run's last transaction: delete the rows earlier runs stored for the files it `read`."""
        files = _in(self.scanned_path(p) for p in read if p != STDIN)
        for table in ("traces", "findings", "engine_stats"):
            db.execute(f"DELETE FROM {table} WHERE scanned_path IN (SELECT value FROM json_each(?)) AND scan_run != ?",
                       (files, self.id))
