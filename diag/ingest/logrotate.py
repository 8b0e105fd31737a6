"""Where logrotate puts a log's rotated files: the `olddir` its configuration gives that log.

With `olddir archive` (or `/var/log/vllm/archive`) logrotate moves `vllm.log` to
`archive/vllm.log.1` instead of renaming it beside itself. The follower looks for a file rotated
while diag was down, and for copytruncate's copy, and retention for a finished file still on disk
(`diag.ingest.identity.still_on_disk`), in the log's own directory *and* there — so diag reads
the configuration logrotate itself runs with (`/etc/logrotate.conf`, which on Debian and RHEL
includes `/etc/logrotate.d`), as users wrote it, rather than asking them to repeat it.

Only what answers "which olddir applies to this file" is parsed: stanzas (file names or globs,
then `{ ... }`), `olddir`/`noolddir` inside a stanza or at the top (a global setting applies to
the stanzas after it), `include` of a file or a directory (its files in name order, without the
backup and package-manager names logrotate skips), and script blocks (`postrotate` ...
`endscript`), skipped whole because a script may contain anything. Every other directive is
ignored. Sizes are bounded (a file past MAX_BYTES, more than MAX_FILES files) and any problem
— unreadable, not text, a brace that does not close — is one warning line for that file; what
could be read still counts. Nothing here raises.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import stat
from dataclasses import dataclass
from typing import Iterable, Sequence

log = logging.getLogger("diag")

DEFAULT_CONFIG = ("/etc/logrotate.conf", "/etc/logrotate.d")  # [daemon] logrotate_config's default
MAX_BYTES = 1 << 20  # a configuration file longer than this is not read
MAX_FILES = 512  # files read at most, includes and directory entries together
MAX_DEPTH = 16  # includes nested deeper than this are not followed (each level is a few frames of recursion)
# logrotate's default `tabooext` (and its `taboopat` for hidden files): names in an included directory it skips
TABOO_SUFFIXES = (",v", ".cfsaved", ".disabled", ".dpkg-bak", ".dpkg-del", ".dpkg-dist", ".dpkg-new", ".dpkg-old",
                  ".rpmnew", ".rpmorig", ".rpmsave", ".swp", ".ucf-dist", ".ucf-new", ".ucf-old", "~")
SCRIPTS = {"postrotate", "prerotate", "firstaction", "lastaction", "preremove"}  # ... up to `endscript`
_TOKEN = re.compile(r'"[^"]*"?|\'[^\']*\'?|[{}]|[^\s{}"\']+')
_UNSET = object()


@dataclass(frozen=True)
class Stanza:
    patterns: tuple[str, ...]  # as written (absolute names or globs)
    olddir: str | None  # as written (relative to the log's directory unless absolute); None: beside the log
    where: str  # file:line, for messages


class LogrotateConfig:
    """The stanzas of a logrotate configuration and the olddir each one gives its files."""

    def __init__(self, stanzas: Sequence[Stanza] = (), warnings: Sequence[str] = ()):
        self.stanzas = list(stanzas)
        self.warnings = list(warnings)

    @classmethod
    def read(cls, roots: Iterable[str], quiet_missing: Iterable[str] = DEFAULT_CONFIG) -> "LogrotateConfig":
        """Read these files or directories (as `include` does) in order. A root in `quiet_missing`
        that does not exist is no warning (a machine without logrotate has no /etc/logrotate.conf)."""
        p = _Parser()
        quiet = set(quiet_missing)
        for root in roots:
            if root in quiet and not os.path.lexists(root):
                continue
            p.include(root, "diag's logrotate_config")
        return cls(p.stanzas, p.warnings)

    def olddir_for(self, path: str) -> str | None:
        """The absolute directory logrotate moves `path`'s rotated files to, or None (beside it).
        The first stanza naming the file decides (logrotate refuses a file two stanzas name); the
        name is matched as given and as the real path behind its symlinks."""
        names = [os.path.abspath(path)]
        real = os.path.realpath(path)
        if real != names[0]:
            names.append(real)
        for st in self.stanzas:
            for name in names:
                if any(_glob_match(os.path.expanduser(p), name) for p in st.patterns):
                    if st.olddir is None:
                        return None
                    return os.path.normpath(os.path.join(os.path.dirname(name), os.path.expanduser(st.olddir)))
        return None


def _glob_match(pattern: str, name: str) -> bool:
    """glob(3) semantics for one name: a wildcard matches within a path component, not a leading dot."""
    pp, np = pattern.split("/"), name.split("/")
    if len(pp) != len(np):
        return False
    for p, n in zip(pp, np):
        if p == n:
            continue
        if n.startswith(".") and not p.startswith(".") or not fnmatch.fnmatchcase(n, p):
            return False
    return True


def _unquote(tok: str) -> str:
    return tok[1:-1] if len(tok) >= 2 and tok[0] == tok[-1] and tok[0] in "\"'" else tok.strip("\"'")


class _Parser:
    """logrotate's grammar as far as olddir needs it; state carries across included files as in logrotate."""

    def __init__(self) -> None:
        self.stanzas: list[Stanza] = []
        self.warnings: list[str] = []
        self.global_olddir: str | None = None
        self.seen: set[str] = set()
        self.files = 0
        self.depth = 0  # includes being read, one inside the other

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        log.warning("logrotate config: %s", msg)

    def include(self, path: str, where: str) -> None:
        if self.depth >= MAX_DEPTH:
            self.warn(f"{path} (from {where}): includes nested more than {MAX_DEPTH} deep; not read")
            return
        self.depth += 1
        try:
            self._include(path, where)
        finally:
            self.depth -= 1

    def _include(self, path: str, where: str) -> None:
        try:
            if os.path.isdir(path):
                real = os.path.realpath(path)
                if real in self.seen or self.files > MAX_FILES:
                    return  # listed before, its files read then (a config may include one directory a
                    # thousand times: each listing would stat every entry again); or the bound is reached
                self.seen.add(real)
                names = sorted(os.listdir(path))
                for n in names:
                    full = os.path.join(path, n)
                    if n.startswith(".") or n.endswith(TABOO_SUFFIXES) or not os.path.isfile(full):
                        continue
                    self._file(full, where)
                return
        except OSError as exc:
            self.warn(f"{path} (from {where}): cannot list: {exc.strerror or exc}")
            return
        self._file(path, where)

    def _file(self, path: str, where: str) -> None:
        real = os.path.realpath(path)
        if real in self.seen:
            return  # included twice (logrotate.conf includes logrotate.d, which is also a root): read once
        self.seen.add(real)
        self.files += 1
        if self.files > MAX_FILES:
            if self.files == MAX_FILES + 1:
                self.warn(f"more than {MAX_FILES} files included; {path} and the rest are not read")
            return
        try:
            # not blocking: a FIFO named here would wait for a writer forever (logrotate skips
            # what is not a regular file, and so does this)
            with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    self.warn(f"{path} (from {where}): not a regular file; not read")
                    return
                data = f.read(MAX_BYTES + 1)
        except OSError as exc:
            self.warn(f"{path} (from {where}): cannot read: {exc.strerror or exc}")
            return
        if len(data) > MAX_BYTES:
            self.warn(f"{path}: longer than {MAX_BYTES >> 20} MiB; not read")
            return
        if b"\0" in data:
            self.warn(f"{path}: not a text file; not read")
            return
        self._parse(path, data.decode("utf-8", "replace").splitlines())

    def _parse(self, path: str, lines: list[str]) -> None:
        names: list[str] = []
        in_stanza = in_script = False
        olddir: object = _UNSET
        start = 0
        for no, line in enumerate(lines, 1):
            s = line.strip()
            if in_script:
                in_script = s.split(None, 1)[:1] != ["endscript"]
                continue
            if not s or s.startswith("#"):
                continue
            toks = _TOKEN.findall(s)
            i = 0
            while i < len(toks):
                tok = toks[i]
                if not in_stanza:
                    if tok == "{":
                        if not names:
                            self.warn(f"{path}:{no}: '{{' without file names before it")
                        in_stanza, olddir, start = True, _UNSET, no
                        i += 1
                        continue
                    if tok == "}":
                        self.warn(f"{path}:{no}: '}}' without a stanza to close")
                        i += 1
                        continue
                    if not names and tok[0] not in "/~\"'":  # a global directive: the rest of the line
                        self._global(path, no, tok.lower(), [_unquote(t) for t in toks[i + 1:]])
                        break
                    names.append(_unquote(tok))
                    i += 1
                    continue
                if tok == "}":
                    self.stanzas.append(Stanza(tuple(names), self.global_olddir if olddir is _UNSET else olddir, f"{path}:{start}"))
                    names, in_stanza = [], False
                    i += 1
                    continue
                j = next((k for k in range(i + 1, len(toks)) if toks[k] in "{}"), len(toks))
                key, args = tok.lower(), [_unquote(t) for t in toks[i + 1:j]]
                if key in SCRIPTS:
                    in_script = True
                    break  # (anything after it on this line is script too)
                if key == "olddir":
                    olddir = self._olddir(path, no, args, olddir)
                elif key == "noolddir":
                    olddir = None
                i = j
        if in_stanza or in_script:
            self.warn(f"{path}:{start}: the stanza opened here does not close; its olddir is not used")
        elif names:
            self.warn(f"{path}: file names at the end without a '{{' stanza: ignored")

    def _global(self, path: str, no: int, key: str, args: list[str]) -> None:
        if key == "olddir":
            self.global_olddir = self._olddir(path, no, args, self.global_olddir)  # type: ignore[assignment]
        elif key == "noolddir":
            self.global_olddir = None
        elif key == "include":
            if len(args) != 1:
                self.warn(f"{path}:{no}: include takes one path")
                return
            target = os.path.join(os.path.dirname(path), os.path.expanduser(args[0]))
            self.include(target, f"{path}:{no}")

    def _olddir(self, path: str, no: int, args: list[str], before: object) -> object:
        if len(args) != 1 or not args[0]:
            self.warn(f"{path}:{no}: olddir takes one directory")
            return before
        return args[0]
