"""The directories, besides its own, where a followed log's rotated files may be.

A rotated file is found by its identity (device and inode, then its first bytes) among the files
of a directory: by the follower when the file was rotated while diag was down, or copied by
copytruncate (`diag.ingest.follow`), and by retention while a finished file is on disk
(`diag.ingest.identity.still_on_disk`). logrotate's `olddir` moves it out of the log's directory;
so do other tools. The directories looked in too are, for each log, its `[[log]] rotated_dirs`
(diag's configuration: for rotation diag cannot read about) and the olddir logrotate's own
configuration gives it (`diag.ingest.logrotate`), read once — at start and on each reload.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from typing import Callable, Sequence

from diag.daemon.config import LogSpec
from diag.ingest.logrotate import DEFAULT_CONFIG, LogrotateConfig

CACHED = 4096  # paths whose answer is kept


class RotatedDirs:
    """`for_path(path)`: the other directories to look in for `path`'s rotated files."""

    def __init__(self, logs: Sequence[LogSpec], logrotate_config: Sequence[str] = DEFAULT_CONFIG):
        self._logs = list(logs)
        self._roots = tuple(logrotate_config)
        self._logrotate: LogrotateConfig | None = None  # read at the first question (most runs see no rotation)
        self._cache: dict[str, tuple[str, ...]] = {}

    @property
    def logrotate(self) -> LogrotateConfig:
        if self._logrotate is None:
            self._logrotate = LogrotateConfig.read(self._roots)
        return self._logrotate

    def for_path(self, path: str) -> tuple[str, ...]:
        """Absolute directories other than `path`'s own, each once: its symlink's target's, the
        `rotated_dirs` of every configured log naming `path` (relative ones from `path`'s
        directory), then logrotate's olddir."""
        got = self._cache.get(path)
        if got is not None:
            return got
        own = os.path.dirname(os.path.abspath(path))
        # a symlink's target's directory (kubelet's /var/log/containers/*.log name /var/log/pods/…/0.log, rotated there)
        out: list[str] = [os.path.dirname(os.path.realpath(path))]
        for spec in self._logs:
            if spec.rotated_dirs and (spec.path == path or glob.has_magic(spec.path) and fnmatch.fnmatch(path, spec.path)):
                out.extend(os.path.normpath(os.path.join(own, d)) for d in spec.rotated_dirs)
        if self._roots:
            old = self.logrotate.olddir_for(path)
            if old is not None:
                out.append(old)
        if len(self._cache) >= CACHED:
            self._cache.clear()  # (date-stamped names a glob finds: one entry each, over months)
        got = self._cache[path] = tuple(d for d in dict.fromkeys(out) if d != own)
        return got

    def search(self, path: str) -> list[str]:
        """Where to look for `path`'s rotated files: its own directory first, then `for_path`."""
        return [os.path.dirname(path) or ".", *self.for_path(path)]

    def find(self, path: str, accept: Callable[[os.DirEntry, os.stat_result], bool]) -> str | None:
        """The first regular file in `search(path)`'s directories that `accept`s (given its entry and
        stat; it may read the file): an unreadable directory or file is passed over."""
        for directory in self.search(path):
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for e in entries:
                try:
                    if e.is_file() and accept(e, e.stat()):
                        return e.path
                except OSError:
                    continue
        return None
