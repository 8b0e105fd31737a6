"""The logs inside a support bundle (a tar, compressed or not, or a zip), each read as its own source.

On the air-gapped servers diag is for, what a post-mortem has is often exactly such a bundle
(`tar czf logs.tgz /var/log/vllm/ /opt/proxy/*.log`, a zip a support script collected). Unpacking it
first needs a writable place and leaves copies of the logs (the users' content) lying around, so
`diag scan` reads the members where they are: streamed out of the archive, nothing written to disk,
memory bounded as for a file. Each member goes through the same opening as a file
(`diag.ingest.reader.open_stream`: a gzipped member such as a rotated `vllm.log.1.gz`, UTF-16, a
container runtime's log), and gets the member's own modification time from the archive (vLLM's
`MM-DD` times take their year from it).

A member's source is named `<archive>:<member>` (`logs.tgz:var/log/vllm/vllm.log`), both parts in
their display form (`diag.fsname.display`): a member's name is whatever the archive's maker wrote
(control characters, `..`, an absolute path are only text here: nothing is written). Every regular
file is read, in the archive's order (a tar compressed with gzip, bzip2 or xz is read once, as a
stream); directories, links, devices and FIFOs are passed over, as `diag scan` reads only regular
files, and so is a binary file (a core file, a screenshot) or code or a config by its name, as
`diag scan DIR` leaves one out (`diag.ingest.discover.left_out`). A member that is itself a tar or zip is not opened ("nested archive: unpack it"): a zip is
read by seeking, which a member is not, and archives within archives would want bounds of their own.

What cannot be read is one line for the member or the archive, and the rest goes on where it can:
an encrypted zip member, or one in a compression method the standard library does not read, is
passed over; a zip member that is corrupt ends that member. A tar that is truncated or corrupt ends
where it breaks: the members before it stay read (as the lines of a file read before it broke do),
and the error names the member it broke in, or the archive when it broke between members. A member
is cut by the same bounds as a file: a line past `--max-line-bytes` is cut, and a member, like a
file, is read to its end (a zip bomb costs the time to decompress it, not memory); an archive of
more than MAX_ENTRIES entries is read to that many.
"""

from __future__ import annotations

import lzma
import stat
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from diag.fsname import display, text
from diag.ingest.discover import HEAD as BINARY_HEAD, left_out
from diag.ingest.reader import Bundle, InputError, open_stream, rewound

MAX_ENTRIES = 20_000  # files, directories and links: an archive of a million empty files is no support bundle
SEP = ":"  # between the archive's name and the member's, in a member's source name
# what a truncated or corrupt archive raises as it is read (gzip's and bzip2's errors are OSErrors)
BROKEN = (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


def _why(exc: BaseException) -> str:
    """An exception in one line of text: zipfile's and tarfile's messages may quote a member's name."""
    return f"{type(exc).__name__}: {text(str(exc))}"


class CorruptArchive(OSError):
    """A member's bytes could not be read from its archive (`read_chunks` makes it the member's error)."""


@dataclass
class Member:
    """One member to read: its source name, its modification time, and the stream of the log it
    holds (`f`), or why it is not read (`error`, one line naming it; `left_out`: a core file, a
    screenshot, a script, left out as `diag scan DIR` leaves one out: `discover.left_out`'s why)."""

    name: str
    mtime: float | None = None
    f: BinaryIO | None = None
    error: str | None = None
    left_out: str | None = None


def source_name(archive: str, member: str) -> str:
    """A member's source name: the archive's path and the member's name, each in its display form."""
    return f"{display(archive)}{SEP}{display(member)}"


def members(path: str, kind: str) -> Iterator[Member]:
    """The members of the archive at `path` (`kind`: "tar" or "zip", as `reader.Bundle` told), in
    its order; the caller reads each one's `f` to its end (or gives up on it) before asking for the
    next. An archive that cannot be opened, or breaks between members, raises InputError after the
    members read before it."""
    if kind == "zip":
        yield from _zip_members(path)
    else:
        yield from _tar_members(path)


class _MemberStream:
    """A member's bytes as the archive hands them out, its errors made `CorruptArchive`. `broken`:
    reading it failed (the archive's own read of the next header would fail for the same cause)."""

    def __init__(self, f: BinaryIO, what: str):
        self._f = f
        self._what = what
        self.broken = False

    def read(self, size: int = -1) -> bytes:
        try:
            return self._f.read(size)
        except BROKEN as exc:
            self.broken = True
            raise CorruptArchive(f"{self._what} ({_why(exc)})") from None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        try:
            self._f.close()
        except BROKEN:
            pass


def _opened(name: str, mtime: float | None, raw: _MemberStream) -> Member:
    """The member `name` with its stream through `open_stream` (gunzipped, decoded), or why it is
    not read; a binary file, code or a config (`diag.ingest.discover.left_out`: read as a log, a core
    file's memory would raise findings and show what it held) is left out."""
    head, f = rewound(raw, False)  # type: ignore[arg-type]
    why = left_out(name, head[:BINARY_HEAD])
    if why is not None and not raw.broken:  # (one the archive breaks in says so as it is read)
        f.close()
        return Member(name, mtime, left_out=why)
    try:
        return Member(name, mtime, open_stream(f, name))
    except Bundle:
        return Member(name, mtime, error=f"{name}: nested archive: unpack it")
    except InputError as exc:
        return Member(name, mtime, error=str(exc))


class _Seen:
    """The entries met so far: MAX_ENTRIES bounds them (tarfile keeps a header read for every one,
    a directory's or a link's too), and a member name given twice (`tar rf` appends another copy)
    is read once."""

    def __init__(self, archive: str):
        self.archive = archive
        self.entries = 0
        self.names: set[str] = set()

    def entry(self) -> None:
        """One more entry (any kind): past MAX_ENTRIES, the archive is read no further."""
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise InputError(f"{display(self.archive)}: more than {MAX_ENTRIES} entries; the rest not read")

    def twice(self, name: str) -> str | None:
        """Why the regular member `name` is not read (a name read before), or None."""
        if name in self.names:
            return f"{name}: named twice in the archive; the first one read"
        self.names.add(name)
        return None


def _tar_members(path: str) -> Iterator[Member]:
    arch = display(path)
    seen = _Seen(path)
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{arch}: {exc.strerror or exc}") from None
    with raw:
        current: _MemberStream | None = None
        last = None
        try:
            # "r|*": a stream, read once in order, whatever compresses it (a compressed tar read by
            # seeking would decompress it again from its start for every member)
            with tarfile.open(fileobj=raw, mode="r|*") as tf:
                for info in tf:
                    seen.entry()
                    if not info.isreg():
                        continue  # directories, links (a hard link's bytes are another member's), devices, FIFOs
                    name = source_name(path, info.name)
                    last = name
                    why = seen.twice(name)
                    if why is not None:
                        yield Member(name, error=why)
                        continue
                    data = tf.extractfile(info) if info.sparse is not None else _TarData(tf, info)
                    current = _MemberStream(data, "the archive is truncated or corrupt here; the files after it not read")  # type: ignore[arg-type]
                    yield _opened(name, float(info.mtime), current)
                    if current.broken:
                        return  # said as that member's error: the archive ends there
                _rest_is_empty(tf, arch, last)
        except BROKEN as exc:
            if current is not None and current.broken:
                return
            where = f"after {last}" if last else "at its start"
            raise InputError(f"{arch}: truncated or corrupt tar archive {where} ({_why(exc)}); the rest not read") from None


class _TarData:
    """A regular tar member's bytes from the archive's stream: what `TarFile.extractfile` reads, less
    its all or nothing (a read the archive's end cuts short raised and lost the bytes that were
    there): a short read returns what is there, and the next one says the archive ends."""

    def __init__(self, tf: tarfile.TarFile, info: tarfile.TarInfo):
        self._stream = tf.fileobj
        self._pos = info.offset_data
        self._end = info.offset_data + info.size

    def read(self, size: int = -1) -> bytes:
        left = self._end - self._pos
        if size is None or size < 0 or size > left:
            size = left
        if size <= 0:
            return b""
        self._stream.seek(self._pos)  # (where it is: the stream moves only forward)
        data = self._stream.read(size)
        if not data:
            raise tarfile.ReadError("unexpected end of data")
        self._pos += len(data)
        return data

    def close(self) -> None:
        pass  # (the archive's stream: the next member is read from it)


def _rest_is_empty(tf: tarfile.TarFile, arch: str, last: str | None) -> None:
    """tarfile ends its listing quietly at a header it cannot read past the first: what follows the
    last member it listed must be the archive's end (zero blocks), else the archive is corrupt there."""
    stream = tf.fileobj
    if stream is None:
        return
    while True:
        data = stream.read(1 << 16)
        if not data:
            return
        if data.strip(b"\0"):
            where = f"after {last}" if last else "at its start"
            raise InputError(f"{arch}: corrupt tar archive {where} (a header that is not one); the rest not read")


def _zip_members(path: str) -> Iterator[Member]:
    arch = display(path)
    seen = _Seen(path)
    try:
        zf = zipfile.ZipFile(path)
    except BROKEN as exc:
        raise InputError(f"{arch}: truncated or corrupt zip archive ({_why(exc)})") from None
    with zf:
        for info in zf.infolist():
            seen.entry()
            if info.is_dir() or not _regular(info):
                continue
            name = source_name(path, info.filename)
            why = seen.twice(name)
            if why is not None:
                yield Member(name, error=why)
                continue
            mtime = _zip_time(info)
            if info.flag_bits & 0x1:
                yield Member(name, mtime, error=f"{name}: encrypted; not read")
                continue
            try:
                opened = zf.open(info)
            except NotImplementedError:
                yield Member(name, mtime, error=f"{name}: compressed with a method diag cannot read (zip method {info.compress_type}); not read")
                continue
            except BROKEN as exc:
                yield Member(name, mtime, error=f"{name}: corrupt ({_why(exc)}); not read")
                continue
            yield _opened(name, mtime, _MemberStream(opened, "corrupt member"))  # type: ignore[arg-type]


def _regular(info: zipfile.ZipInfo) -> bool:
    """A zip member that is a regular file: one made on Unix says its file type (a symbolic link's
    bytes are its target's name); others (Windows, most tools) hold only files and directories."""
    mode = info.external_attr >> 16
    return info.create_system != 3 or not stat.S_IFMT(mode) or stat.S_ISREG(mode)


def _zip_time(info: zipfile.ZipInfo) -> float | None:
    """A zip member's modification time: the local time its header records (no zone, as the server's logs)."""
    try:
        return time.mktime(info.date_time + (0, 0, -1))
    except (OverflowError, ValueError):
        return None
