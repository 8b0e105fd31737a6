"""Following log files live: rotation, truncation, absence, permissions, partial lines.

A file is identified by device/inode plus a fingerprint of its first bytes, never by name: a
renamed file is read to its end before its successor is opened (and kept open for
`rotate_wait` in case the writer still appends), a truncated one (copytruncate) is read from
the start again after the bytes it lost are taken from the copy that carries its fingerprint,
and a rotation that happened while the daemon was down is found again by inode in the directory
(or where logrotate's `olddir` moves it: `diag.ingest.rotated_dirs`), or as its archive when it is
only left compressed (`diag.ingest.compressed`). Each open file is a
`FileReader` (`diag.ingest.filereader`) with its own line splitter and source parser, so a
multi-line record never spans two files.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from dataclasses import replace
from typing import Callable

from diag.daemon.config import Config, LogSpec
from diag.fsname import display, file_key
from diag.ingest.compressed import archived, find_archive, salvage_archive, take
from diag.ingest.filereader import FP_BYTES, HEAD_BYTES, READ_CHUNK, FileReader, fingerprint_of, reader_at
from diag.ingest.identity import COMPRESSED, UNCHANGED, FinishedFiles, prefix_of_followed, starts_with
from diag.ingest.reader import Line, crlf_ends
from diag.ingest.rotated_dirs import RotatedDirs
from diag.parsing.source import PARSERS
from diag.store.db import SourceState

log = logging.getLogger("diag")
SALVAGE_BUDGET = 64 * READ_CHUNK  # at most this much is read back from a copytruncate copy (memory: its lines are applied at once)


class Follower:
    def __init__(self, cfg: Config, stored: list[SourceState],
                 consume: Callable[[FileReader, list[Line], bool], None] | None = None,
                 forget: Callable[[str], None] | None = None, raw_chunks: bool = False):
        """`consume(reader, lines, flush)` runs lines through the reader's parser at once; the
        follower needs it when lines come from a copy and must be applied before the file restarts.
        `forget(path)` is told when a path is gone for good (a deleted file no configured path names).
        Paths are the real names (they open files); what leaves the follower for the pipeline, the
        store's meta and the log (`errors`, `forget`, parsers, messages) is their display name
        (`diag.fsname`: text, whatever the name's bytes).
        With `raw_chunks`, readers hand new data over as bytes (see `FileReader.raw`)."""
        self.raw_chunks = raw_chunks
        self.consume = consume or (lambda r, lines, flush: r.pending_lines.extend(lines))
        self.forget = forget or (lambda path: None)
        self.cfg = cfg
        self.readers: dict[str, FileReader] = {}  # key -> reader (active and rotated)
        self.by_path: dict[str, str] = {}  # configured path -> key of its active reader
        self.stored = {s.key: s for s in stored}
        self.errors: dict[str, str] = {}  # display name of the path -> last error
        self.started = False
        self._last_glob = 0.0
        self._retired: list[SourceState] = []
        self.dirty = False  # inotify saw a file created or moved: expand globs now
        self.rotations: dict[str, int] = {}
        for s in stored:
            self.rotations[s.path] = max(self.rotations.get(s.path, 0), s.rotations)
        self.finished = FinishedFiles()  # files read to their end, by identity (`diag.ingest.identity`)
        # globbed names not opened yet because their bytes so far are a followed file's (a copy being
        # made, an empty file): asked again on every call, not only when the glob is due
        self.deferred: dict[str, LogSpec] = {}
        # where rotated files go besides their log's directory (logrotate's olddir, [[log]] rotated_dirs)
        self.rotated_dirs = RotatedDirs(cfg.logs, cfg.logrotate_config)

    # -- discovery ------------------------------------------------------------------------
    def expand(self, globs: bool = True) -> list[tuple[str, LogSpec]]:
        """(path, its spec) for each configured name; a path two of them name (`*.log` and
        `vllm.log*`) once, with the first."""
        out: dict[str, LogSpec] = {}
        for spec in self.cfg.logs:
            if glob.has_magic(spec.path):
                if not globs:
                    continue
                # a compressed rotation (vllm.log.2.gz) is an archive, not a log being written: `diag scan` reads those
                for p in sorted(glob.glob(spec.path)):
                    if os.path.isfile(p) and not p.endswith(COMPRESSED):
                        out.setdefault(p, spec)
            else:
                out.setdefault(spec.path, spec)
        return list(out.items())

    def discover(self, force: bool = False) -> list[FileReader]:
        """Open configured files not followed yet; on the first call, resume from the store.

        Plain paths are checked on every call (a stat each: a file that appears is read from its
        first byte); globs are expanded every `rescan_globs` seconds, or at once when inotify
        reported a new file (`dirty`).
        """
        now = time.monotonic()
        globs_due = force or not self.started or self.dirty or now - self._last_glob >= self.cfg.rescan_globs
        if globs_due:
            self._last_glob = now
            self.dirty = False
        elif not self.deferred and all(s.path in self.by_path for s in self.cfg.logs if not glob.has_magic(s.path)):
            return []  # every turn of a steady stream asks: every plain path is followed, no glob is due
        pending: list = []
        if not self.started:
            pending.extend(self._resume_rotated())
        found = dict(self.expand(globs=globs_due))
        if not globs_due:
            found.update((p, spec) for p, spec in self.deferred.items() if p not in found and os.path.exists(p))
        self.deferred = {}
        todo = [(path, spec) for path, spec in found.items() if path not in self.by_path]
        if len(todo) > 1:  # of two paths naming one file (`_open` follows it once), the one the store resumes by first
            todo.sort(key=lambda ps: not self._known_path(ps[0]))
        for path, spec in todo:
            r = self._open(path, spec, successor=self.started, globbed=glob.has_magic(spec.path))
            if r is not None:
                pending.append(r)
        self.started = True
        return pending

    def _resume_rotated(self) -> list[FileReader]:
        """Rotated-away files the daemon had not finished when it stopped: find them by inode."""
        out = []
        for s in self.stored.values():
            if s.state not in ("rotated", "active"):
                continue
            try:
                st = os.stat(s.path)
                if file_key(st) == s.key:
                    continue  # still at its path: opened normally
            except OSError:
                pass
            counted = s.state == "active"
            if counted:
                # It was the path's current file when last committed and is not any more: rotated (or
                # deleted) while diag was down, or just before a kill -9 ended the run that saw it. The
                # committed count does not include it yet; it is counted here, once, and committed with
                # the states that record the rotation (this one as rotated/done, its successor as active).
                s.rotations = self._count_rotation(s.path)
            found = self._find_by_key(s.path, s.key, s.fingerprint, s.fp_len)
            if found is None and (r := archived(self.rotated_dirs, s, self.cfg.max_line_bytes, self.raw_chunks)) is not None:
                r.rotated_at = time.monotonic()  # compressed at once (no delaycompress) while diag was down: read on in it
                self.readers[s.key] = r
                out.append(r)
                continue
            if found is None:
                if counted:
                    looked = ", ".join(map(display, self.rotated_dirs.search(s.path)))
                    self._error(s.path, f"the file read before the restart ({s.key}) is gone; bytes after offset {s.offset} are lost "
                                        f"(looked in {looked}; [[log]] rotated_dirs names more)")
                s.state = "done"
                s.updated_at = time.time()
                self._retired.append(s)  # committed as done: the next start neither looks for it nor counts it again
                continue
            # "unknown" (committed by a run that read no line of it) names no parser: detect again
            r = self._reader_for(found, s.path, s.format if s.format in PARSERS else None, s, rotated=True)
            if r is not None:
                out.append(r)
                log.info("%s: finishing %s (rotated while diag was down) from byte %d", display(s.path), display(found), s.offset)
            elif counted:  # cannot be opened now: committed as rotated (with its count), so it is not counted again
                s.state = "rotated"
                self._retired.append(s)
        return out

    def _find_by_key(self, path: str, key: str, fp: str, fp_len: int) -> str | None:
        """The file rotated away from `path` with this device/inode (and first bytes)."""
        return self._find(path, fp, fp_len, lambda e, st: file_key(st) == key)

    def _find(self, path: str, fp: str, fp_len: int, accept: Callable[[os.DirEntry, os.stat_result], bool]) -> str | None:
        """The first regular file where `path`'s rotated files go that `accept`s and starts with the
        fingerprinted bytes (`RotatedDirs.find`)."""
        return self.rotated_dirs.find(path, lambda e, st: accept(e, st) and (not fp_len or starts_with(e.path, fp, fp_len)))

    def _open(self, path: str, spec: LogSpec, successor: bool, globbed: bool = False) -> FileReader | None:
        """Follow the file at `path`: resumed where the store left it, or new. `globbed`: a name a
        glob found, which may be a rotated file's new name (`diag.ingest.identity`)."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._error(path, "waiting for the file to appear")
            return None
        except OSError as exc:
            self._error(path, f"cannot stat: {exc.strerror}")
            return None
        key = file_key(st)
        twin = next((p for p, k in self.by_path.items() if k == key), None)
        if twin is not None:  # a symlink, `./a.log` beside `a.log`, a glob and a name: read once
            self._error(path, f"the same file as {display(twin)}; read once")
            return None
        if key in self.readers:  # rotated to this name, still being read to its end under its old one
            self.errors.pop(display(path), None)  # (a rename between two turns made it look like a twin)
            return None
        stored = self.stored.get(key)
        if stored is not None and stored.path == path:
            state = stored  # resume where the last run committed
        elif (done := self.finished.finished_as(key, path, st.st_size, stored)) is not None:
            # read to its end under its old name (rotated to this one): only what was written to it
            # since, as the rotated file it is (its lines are its old name's)
            self.errors.pop(display(path), None)
            if done is UNCHANGED:
                return None
            log.info("%s: %s grew after it was read to its end; reading from byte %d", display(done.path), display(path), done.offset)
            return self._reader_for(path, done.path, done.format if done.format in PARSERS else None, replace(done, last_error=None),
                                    rotated=True)
        elif globbed and prefix_of_followed(path, self.readers.values()):
            self.deferred[path] = spec  # copytruncate's copy being made, or an empty file: asked again next turn
            return None
        else:
            state = SourceState(key, path, format=spec.format, rotations=self.rotations.get(path, 0))
            if not successor and not self._known_path(path) and not self.cfg.from_beginning:
                # A file diag has never seen, present at start: only what is written from now on.
                state.offset = st.st_size
                state.lineno = -1  # the lines skipped were not counted
        return self._reader_for(path, path, spec.format, state, rotated=False)

    def _known_path(self, path: str) -> bool:
        return any(s.path == path for s in self.stored.values())

    def _reader_for(self, real_path: str, path: str, fmt: str | None, state: SourceState, rotated: bool) -> FileReader | None:
        try:
            f = open(real_path, "rb", buffering=0)
        except PermissionError:
            self._error(path, "permission denied (diag will retry)")
            return None
        except OSError as exc:
            self._error(path, f"cannot open: {exc.strerror}")
            return None
        st = os.fstat(f.fileno())
        head = os.pread(f.fileno(), FP_BYTES, 0)
        changed = bool(state.fp_len) and fingerprint_of(head[: state.fp_len]) != state.fingerprint
        restart_at_zero = changed or state.offset > st.st_size  # truncated (and maybe regrown) while diag was down
        os.lseek(f.fileno(), state.offset if not restart_at_zero else 0, os.SEEK_SET)
        r = reader_at(state, f, display(path), st.st_mtime, fmt, self.cfg.max_line_bytes, self.raw_chunks)
        if state.offset and not restart_at_zero and r.decoder is None:  # (a decoder judged its decoded lines)
            # Line ends are judged from a file's first bytes (`crlf_ends`), not from where a resumed
            # reader starts: the daemon resumes at the start of a record it was assembling, whose
            # lines all end in vLLM's \r\n when the server had not written its last line yet.
            r.splitter.crlf = crlf_ends(os.pread(f.fileno(), HEAD_BYTES, 0))
        was_current = state.state == "active"  # as last committed: the path's file (a new state is "active" too)
        state.state = "rotated" if rotated else "active"
        if restart_at_zero:
            log.info("%s: truncated or rewritten while diag was down; resuming from the start", display(path))
            if was_current:
                # copytruncate while diag was down (or seen by a run killed before it committed), maybe
                # followed by a rename (then both count): the committed state still has the old
                # fingerprint, so this is counted exactly once, and committed with the offsets that restart at 0.
                state.rotations = self._count_rotation(path)
            self._salvage(path, r, state.offset)
        state.fingerprint, state.fp_len = fingerprint_of(head), len(head)
        if rotated:
            r.rotated_at = time.monotonic()
        else:
            self.by_path[path] = state.key
        self.readers[state.key] = r
        self.errors.pop(display(path), None)
        state.last_error = None
        return r

    def _error(self, path: str, msg: str) -> None:
        name = display(path)
        if self.errors.get(name) != msg:
            log.warning("%s: %s", name, msg)
        self.errors[name] = msg

    # -- following ------------------------------------------------------------------------
    def poll(self) -> list[tuple[FileReader, list[Line]]]:
        """One round over every reader: detect rotation/truncation, read what is new."""
        out: list[tuple[FileReader, list[Line]]] = []
        for path, key in list(self.by_path.items()):
            r = self.readers.get(key)
            if r is None:
                continue
            out.extend(self._check(path, r))
        for r in list(self.readers.values()):
            if r.state.state == "rotated":
                lines = r.read_to_eof()
                out.append((r, lines))  # even empty: its parser may still hold the file's last record
                if not lines and time.monotonic() - r.last_data > self.cfg.rotate_wait:
                    self._retire(r)
            elif self.by_path.get(r.state.path) == r.key:
                lines = r.read()
                if lines:
                    out.append((r, lines))
        return out

    def _check(self, path: str, r: FileReader) -> list[tuple[FileReader, list[Line]]]:
        out = []
        try:
            st = os.stat(path)
        except FileNotFoundError:
            # deleted or renamed away: keep reading what we have; the path may come back
            if r.rotated_at is None:
                self._rotate(path, r)
            return out
        except OSError as exc:
            self._error(path, f"cannot stat: {exc.strerror}")
            return out
        if file_key(st) != r.key:
            self._rotate(path, r)
            spec = next((s for p, s in self.expand() if p == path), LogSpec(path))
            self._open(path, spec, successor=True)
            return out
        fd = r.fileno()
        pos = os.lseek(fd, 0, os.SEEK_CUR)
        truncated = st.st_size < pos
        if not truncated and r.state.fp_len and st.st_size >= r.state.fp_len:
            head = os.pread(fd, FP_BYTES, 0)
            truncated = not r.head_matches(head)
            if not truncated and len(head) > r.state.fp_len:
                r.state.fingerprint, r.state.fp_len = fingerprint_of(head), len(head)  # the file grew: fingerprint more of it
        elif not truncated and not r.state.fp_len and st.st_size:
            head = os.pread(fd, FP_BYTES, 0)
            r.state.fingerprint, r.state.fp_len = fingerprint_of(head), len(head)
        if truncated:
            self._salvage(path, r, pos)
            r.state.rotations = self._count_rotation(path)
        return out

    def _count_rotation(self, path: str) -> int:
        """One more rotation of `path`. The caller stores the new count in the state that records the
        rotation (new fingerprint and offset, or state rotated), so the count and the offsets reflecting
        it are committed in one transaction: a kill -9 loses both or neither."""
        self.rotations[path] = self.rotations.get(path, 0) + 1
        return self.rotations[path]

    def _rotate(self, path: str, r: FileReader) -> None:
        r.state.state = "rotated"
        r.rotated_at = time.monotonic()
        r.last_data = time.monotonic()
        self.by_path.pop(path, None)
        r.state.rotations = self._count_rotation(path)  # committed with state=rotated even if no successor is open yet
        log.info("%s: rotated (rename or delete); finishing the old file", display(path))

    def _salvage(self, path: str, r: FileReader, pos: int) -> None:
        """copytruncate: take the bytes not read yet from the copy that has our first bytes, then restart at 0."""
        out: list[Line] = r.settle()
        copy = self._find_copy(path, r.state.fingerprint, r.state.fp_len, r.key, pos) if r.state.fp_len else None
        archive = find_archive(self.rotated_dirs, path, r.state.fingerprint, r.state.fp_len, pos) if copy is None else None
        if copy is not None:
            with open(copy, "rb") as f:
                f.seek(pos)
                out.extend(take(f, r.line_feed, SALVAGE_BUDGET))
                copy_st = os.fstat(f.fileno())
                left = copy_st.st_size - f.tell()
                done = SourceState(file_key(copy_st), r.state.path, r.state.fingerprint, r.state.fp_len, r.parser.detected,
                                   offset=copy_st.st_size, state="done")  # (its line count once the splitter is flushed, below)
                self.finished.add(done, f.fileno())
            # the copy is finished (committed so, for a restart): a glob that matches its name finds it known
            self._retired.append(done)
            log.info("%s: truncated (copytruncate); read bytes %d.. from the copy %s", display(path), pos, display(copy))
            if left > 0:
                self._error(path, f"copytruncate: {left} bytes of the copy past the {SALVAGE_BUDGET >> 20} MiB salvage budget were skipped")
        elif archive is not None:
            if not salvage_archive(archive, path, r.line_feed, out, SALVAGE_BUDGET):
                self._error(path, f"copytruncate: the compressed copy's bytes past the {SALVAGE_BUDGET >> 20} MiB salvage budget were skipped")
        elif pos > 0:
            log.warning("%s: truncated at byte %d; no copy with the same first bytes found, lines written just before "
                        "the truncation may be missing", display(path), pos)
        out.extend(r.line_feed.flush())
        if copy is not None:
            done.lineno = r.splitter.lineno  # (with the copy's last line when it had no line end)
        self.consume(r, out, True)  # applied now: these bytes belong to the content before the truncation
        os.lseek(r.fileno(), 0, os.SEEK_SET)
        r.restart()
        head = os.pread(r.fileno(), FP_BYTES, 0)
        r.state.fingerprint, r.state.fp_len = fingerprint_of(head), len(head)

    def _find_copy(self, path: str, fp: str, fp_len: int, key: str, min_size: int) -> str | None:
        """copytruncate's copy: another (uncompressed) file with our first bytes, at least as long as what we read."""
        return self._find(path, fp, fp_len,
                          lambda e, st: file_key(st) != key and st.st_size >= min_size and not e.name.endswith(COMPRESSED))

    def _retire(self, r: FileReader) -> None:
        r.state.state = "done"
        s = r.sync_state()
        self.readers.pop(r.key, None)
        try:
            if os.fstat(r.fileno()).st_nlink:  # a deleted file turns up under no other name
                self.finished.add(s, r.fileno())  # (its end fingerprinted, and committed so: for a restart)
        except OSError:
            pass
        self._retired.append(s)
        r.close()
        path = r.state.path
        if path not in self.by_path and not any(x.state.path == path for x in self.readers.values()) \
                and not os.path.exists(path) and not any(s.path == path for s in self.cfg.logs):
            # a globbed file that is gone (date-stamped logs deleted by rotation): nothing keeps its path
            self.rotations.pop(path, None)
            self.errors.pop(display(path), None)
            self.stored = {k: s for k, s in self.stored.items() if s.path != path}
            self.forget(display(path))

    def idle_flush(self, r: FileReader) -> list[Line]:
        """A last line the writer has not terminated for `flush_after` seconds is taken as is."""
        if r.holding and time.monotonic() - r.last_data > self.cfg.flush_after:
            return r.flush()
        return []

    def states(self) -> list[SourceState]:
        out, self._retired = self._retired, []
        for r in self.readers.values():
            s = r.sync_state()
            if r.state.state == "active":
                s.rotations = self.rotations.get(s.path, s.rotations)
            out.append(s)
        return out

    @property
    def behind(self) -> bool:
        """Some file has more to read than the last poll took (catching up, not following)."""
        return any(r.behind for r in self.readers.values())

    def close(self) -> None:
        for r in self.readers.values():
            r.close()
