"""Turning bytes into bounded, decoded lines.

Everything downstream sees the same thing whether the bytes came from a file read to the
end (`diag scan`), a compressed one (gzip, bzip2, xz), a UTF-16 file (`diag.ingest.utf16`), a container runtime's
log file (`diag.ingest.containerlog`), stdin or a file followed
live (`diag daemon`), with Unix or Windows line ends (`crlf_ends`): a `Line`
with its number, its byte offset just past its newline, and text that is safe to match on.
Nothing here can raise on content: invalid UTF-8 is replaced, NUL bytes and ANSI escapes are
dropped, and a line longer than the limit is cut (and flagged) instead of growing memory.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
import sys
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator

from diag.fsname import display
from diag.ingest.containerlog import ContainerLogSource, container_format
from diag.ingest.decoded import DecodedSource
from diag.ingest.journalexport import JournalExportSource, journal_export
from diag.ingest.utf16 import Utf16Source, utf16_encoding
from diag.parsing.base import without_bidi

DEFAULT_MAX_LINE = 1024 * 1024
CHUNK = 1 << 20

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")


@dataclass(slots=True)
class Line:
    """One physical line, normalised for matching.

    `cr` records that the line ended in a carriage return before its newline: vLLM's
    `NewLineFormatter` ends every line of a multi-line record but the last with `\\r`, which is
    the most reliable sign that the next line continues the same record.
    """

    lineno: int
    text: str
    cr: bool = False
    truncated: bool = False
    end_offset: int = 0


def normalise(raw: bytes, crlf: bool | None = False) -> tuple[str, bool]:
    """Decode one raw line (without its newline) and strip what only disturbs matching; and
    `Line.cr`: whether it ended in vLLM's \\r. In a stream whose lines end in \\r\\n (`crlf`) the
    last \\r is the line end, and only one before it is that mark (\\r\\r\\n: a conversion that made
    every \\n a \\r\\n)."""
    cr = raw.endswith(b"\r\r") if crlf else raw.endswith(b"\r")
    if cr:
        raw = raw.rstrip(b"\r")
    text = raw.decode("utf-8", "replace")
    if "\r" in text:
        # tqdm redraws a bar with a leading \r; what is visible is the last segment.
        parts = [p for p in text.split("\r") if p]
        text = parts[-1] if parts else ""
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    if "\x00" in text:
        text = text.replace("\x00", "")
    if text[:1] == "\ufeff":  # a byte-order mark (UTF-8 as Notepad or PowerShell's -Encoding utf8 save it): not the line's
        text = text[1:]
    return without_bidi(text), cr


def crlf_ends(data: bytes, before: bytes = b"") -> bool | None:
    """Do a stream's lines end in \\r\\n? Judged from its first bytes read: True when every complete
    line in `data` does, False when one ends in \\n alone, None when `data` holds no complete line.
    `before`: the byte read just before `data` (a read may end between a line's \\r and its \\n).

    Windows line ends (a log copied through a Windows desktop, saved by an editor or a support
    tool) put a \\r before every newline, which in a log with Unix line ends is vLLM's mark of a
    record going on (`Line.cr`). Taken as that, a busy server's lines from one source within the
    same second were joined into one record, and the requests of all but the first vanished. A
    vLLM record always ends with a line in \\n alone, so a log with Unix line ends has one among
    its first complete lines (the first bytes of a file, or what a follower reads first)."""
    lines = data.count(b"\n")
    if not lines:
        return None
    return data.count(b"\r\n") + (before == b"\r" and data[:1] == b"\n") == lines


class LineSplitter:
    """Splits a byte stream fed in arbitrary chunks into lines of bounded length.

    Memory is bounded by `max_line`: once a line is longer, its first `max_line` bytes are
    emitted as a truncated line and the rest is skipped up to the next newline. The caller
    decides what to do with an unterminated tail (`flush`): a scan flushes it at EOF, a live
    follower waits for the newline and flushes only after a timeout.

    `crlf`: the stream's lines end in \\r\\n (`crlf_ends` of the first bytes fed, unless the
    caller judged it first); a line's \\r is then its line end (`normalise`).
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, offset: int = 0, lineno: int = 0):
        self.max_line = max_line
        self.offset = offset  # byte offset of the start of `self._buf`
        self.lineno = lineno
        self._buf = bytearray()
        self._skipping = False  # inside the overflow of a truncated line
        self.truncated_lines = 0
        self.crlf: bool | None = None
        self._before = b""  # the last byte fed while `crlf` is not judged yet

    @property
    def idle(self) -> bool:
        """Between lines: nothing held, not skipping the rest of a cut line."""
        return not self._buf and not self._skipping

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a complete line."""
        return len(self._buf)

    def judge(self, data: bytes) -> None:
        """`crlf` from the first complete lines fed, however the reads that fed them were cut."""
        if self.crlf is None:
            self.crlf = crlf_ends(data, self._before)
            if data:
                self._before = data[-1:]

    def feed(self, data: bytes) -> Iterator[Line]:
        if self.crlf is None:
            self.judge(data)
        buf = self._buf
        start = 0
        n = len(data)
        while start < n:
            nl = data.find(b"\n", start)
            if self._skipping:
                if nl < 0:
                    self.offset += n - start
                    return
                self.offset += nl + 1 - start
                self._skipping = False
                start = nl + 1
                continue
            if nl < 0:
                room = self.max_line - len(buf)
                piece = data[start:]
                if len(piece) > room:
                    buf += piece[:room]
                    consumed = len(buf)
                    yield self._emit(bytes(buf), consumed, truncated=True)
                    buf.clear()
                    self.offset += len(piece) - room
                    self._skipping = True
                else:
                    buf += piece
                return
            piece = data[start:nl]
            if buf:
                total = len(buf) + len(piece)
                if total > self.max_line:
                    keep = self.max_line - len(buf)
                    buf += piece[:keep]
                    yield self._emit(bytes(buf), total + 1, truncated=True)
                else:
                    buf += piece
                    yield self._emit(bytes(buf), total + 1)
                buf.clear()
            elif len(piece) > self.max_line:
                yield self._emit(piece[: self.max_line], len(piece) + 1, truncated=True)
            else:
                yield self._emit(piece, len(piece) + 1)
            start = nl + 1

    def flush(self) -> Iterator[Line]:
        """Emit a held unterminated line (EOF, or a writer that never finished its line)."""
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            yield self._emit(data, len(data))
        self._skipping = False

    def _emit(self, raw: bytes, consumed: int, truncated: bool = False) -> Line:
        self.lineno += 1
        self.offset += consumed
        if truncated:
            self.truncated_lines += 1
        text, cr = normalise(raw, self.crlf)
        return Line(self.lineno, text, cr, truncated, self.offset)


class InputError(Exception):
    """An input that cannot be read at all (missing, a directory, permission denied)."""


class Bundle(InputError):
    """An archive of several files (a support bundle): `kind` "tar" (plain or compressed with gzip,
    bzip2 or xz) or "zip". `diag scan` reads its members (`diag.ingest.archive`); elsewhere it is an
    input that cannot be read as one log."""

    def __init__(self, name: str, kind: str):
        what = "a tar archive of several files" if kind == "tar" else "a zip archive"
        super().__init__(f"{name}: {what}: unpack it and scan the logs in it")
        self.kind = kind


HEAD = 1 << 16  # what a source's kind is judged from
_GZIP = b"\x1f\x8b"
_BZIP2 = b"BZh"
_XZ = b"\xfd7zXZ\x00"
ZSTD = b"\x28\xb5\x2f\xfd"  # a zstd frame: no reader in the standard library, refused in one line that says how to read it
# What logrotate's `compress` (and compresscmd bzip2 / xz) writes, by its first bytes, read as a
# stream: a rotated log is scanned as the text it was.
DECOMPRESSORS: dict[bytes, Callable[[BinaryIO], BinaryIO]] = {
    _GZIP: lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),  # type: ignore[dict-item]
    _BZIP2: lambda raw: bz2.BZ2File(raw, "rb"),  # type: ignore[dict-item]
    _XZ: lambda raw: lzma.LZMAFile(raw, "rb"),  # type: ignore[dict-item]
}
# what a corrupt or truncated archive raises while it is read (gzip.BadGzipFile and bz2's
# "Invalid data stream" are OSErrors)
BROKEN = (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


def decompressor(head: bytes) -> Callable[[BinaryIO], BinaryIO] | None:
    """How to read a file that begins with `head` as the text it compresses, if it is compressed."""
    for magic, opener in DECOMPRESSORS.items():
        if head.startswith(magic):
            return opener
    return None


def open_source(path: str) -> tuple[BinaryIO, float | None]:
    """Open a path (`-` for stdin; compressed, UTF-16 and container runtimes' files transparently) and
    return it with its mtime. An archive of several files raises `Bundle`.

    The modification time gives a year to timestamps that have none (vLLM's `MM-DD`).
    """
    if path == "-":  # decompressed and decoded as a file is (`cat vllm.log.1.gz | diag scan -`)
        try:
            return open_stream(sys.stdin.buffer, "-"), None
        except Bundle:  # (a pipe is read once: an archive's members are read from its path)
            raise InputError("-: an archive of several files on standard input: give its path (diag scan logs.tgz)") from None
    name = display(path)  # for the messages: text whatever the name's bytes (diag.fsname)
    try:
        st = os.stat(path)
        if not os.path.isfile(path):
            raise InputError(f"{name}: not a regular file")
        f: BinaryIO = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except PermissionError:
        raise InputError(f"{name}: permission denied") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory") from None
    except OSError as exc:
        raise InputError(f"{name}: {exc.strerror or exc}") from None
    return open_stream(f, name), st.st_mtime


def open_stream(f: BinaryIO, name: str) -> BinaryIO:
    """A file, or an archive's member, read from its start (`f`, named `name` in messages), as the
    log it holds: gunzipped, UTF-16 decoded, a container runtime's records unwrapped. One that is
    itself an archive of several files is closed and raises `Bundle`.

    `f` need not be seekable (a member of a compressed tar is read once, in order): its first bytes
    are read again from memory then."""
    seekable = f.seekable()
    head, f = rewound(f, seekable)
    opener = decompressor(head)
    if opener is not None:
        f = opener(f)
        head, f = rewound(f, seekable)  # (a corrupt archive: reading it says so, `read_chunks`)
    elif head.startswith(ZSTD):
        f.close()
        if name.endswith((".tar.zst", ".tzst")):  # (a bundle on stdin is refused: its members are read from its path)
            raise InputError(f"{name}: zstd-compressed, which Python cannot read: zstd -d {name}, then scan the tar it writes")
        raise InputError(f"{name}: zstd-compressed, which Python cannot read: zstd -dc {name} | diag scan -")
    kind = bundle_kind(head)
    if kind is not None:  # read as a log, its members' lines would run together between binary headers
        f.close()
        if kind == "zip" and opener is not None:  # (its directory is at its end: read by seeking)
            raise InputError(f"{name}: a zip archive compressed as a whole: decompress it first")
        raise Bundle(name, kind)
    return _decoded(f, head)


def rewound(f: BinaryIO, seekable: bool) -> tuple[bytes, BinaryIO]:
    """`f`'s first bytes, and `f` to read from its start again (`seekable`: the file under it is).
    A stream that breaks within them (a truncated archive) gives those before the break, and
    reading it again raises there."""
    head, broke = _gathered(getattr(f, "read1", f.read), HEAD)
    if seekable:
        f.seek(0)  # (read again, it breaks again)
        return head, f
    return head, _Replayed(head, f, broke)  # type: ignore[return-value]


def _gathered(read: Callable[[int], bytes], size: int) -> tuple[bytes, BaseException | None]:
    """`size` bytes (fewer at the end) by calls of `read` (a `read1`: each returns what there is),
    and the error that cut them short, if one did: the bytes before it are kept."""
    parts: list[bytes] = []
    got = 0
    while got < size:
        try:
            data = read(size - got)
        except BROKEN as exc:
            return b"".join(parts), exc
        if not data:
            break
        parts.append(data)
        got += len(data)
    return (parts[0] if len(parts) == 1 else b"".join(parts)), None


class _Replayed(DecodedSource):
    """A stream that cannot seek, its first bytes (already read) put back in front of it, and the
    error that ended them, if one did, raised once they are read."""

    def __init__(self, head: bytes, f: BinaryIO, broke: BaseException | None = None):
        super().__init__(f)
        self._head = head
        self._broke = broke

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0:
                data, self._head = self._head, b""
                return data + self.read()
            data, self._head = self._head[:size], self._head[size:]
            return data
        if self._broke is not None:
            exc, self._broke = self._broke, None
            raise exc
        return self._raw.read(size)

    def read1(self, size: int = -1) -> bytes:
        """`read`, by the stream's own `read1` once its first bytes are read again (`read_chunks`)."""
        if self._head or self._broke is not None:
            return self.read(size)
        return getattr(self._raw, "read1", self._raw.read)(size)


def bundle_kind(head: bytes) -> str | None:
    """An archive of several files (a support bundle), from its first bytes: "tar", "zip" or None.
    A tar compressed with gzip, bzip2 or xz is told by decompressing its first bytes (`open_stream`
    decompresses a file before it asks and `discover` asks only of a file no decompressor takes, so
    in practice this finds a tar compressed twice, which then gets the tar reader's one-line error)."""
    d: Any = None
    if head[:2] == _GZIP:
        d = zlib.decompressobj(wbits=31)
    elif head[:3] == _BZIP2:
        d = bz2.BZ2Decompressor()
    elif head[:6] == _XZ:
        d = lzma.LZMADecompressor()
    if d is not None:
        try:
            head = d.decompress(head, 512)
        except BROKEN:
            return None  # not what it seemed: read as it is
    if head[257:262] == b"ustar":
        return "tar"
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":  # (the second: an empty zip)
        return "zip"
    return None


def _decoded(f: BinaryIO, head: bytes) -> BinaryIO:
    """`f`, or what reads it as the log it holds: UTF-16 saved by Windows PowerShell or Notepad
    (`diag.ingest.utf16`), a container runtime's log file (`diag.ingest.containerlog`), a journal
    exported as JSON (`diag.ingest.journalexport`). `head`: its
    first bytes, which reading `f` returns again."""
    enc = utf16_encoding(head)
    if enc is not None:
        f.read(2)
        return Utf16Source(f, enc)  # type: ignore[return-value]
    fmt = container_format(head)
    if fmt is not None:
        return ContainerLogSource(f, fmt)  # type: ignore[return-value]
    if journal_export(head):
        return JournalExportSource(f)  # type: ignore[return-value]
    return f


def read_chunks(f: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    """A whole stream in chunks; a read error (truncated or corrupt archive, I/O error) is an InputError,
    raised after the bytes read before it. A chunk is gathered with `read1` where the stream has it:
    a decompressor's `read(n)` that breaks (a rotation cut short) loses what it had decompressed."""
    read1 = getattr(f, "read1", None)
    while True:
        broke: BaseException | None = None
        if read1 is None:
            try:
                data = f.read(size)
            except BROKEN as exc:  # truncated or corrupt archive, I/O error
                broke, data = exc, b""
        else:
            data, broke = _gathered(read1, size)
        if data:
            yield data
        if broke is not None:
            raise InputError(f"read failed: {type(broke).__name__}: {broke}") from None
        if not data:
            return


def read_lines(f: BinaryIO, max_line: int = DEFAULT_MAX_LINE, splitter: LineSplitter | None = None) -> Iterator[Line]:
    """Read a whole stream, flushing a last line without newline at EOF."""
    sp = splitter or LineSplitter(max_line)
    for data in read_chunks(f):
        yield from sp.feed(data)
    yield from sp.flush()


def iter_text_lines(text: str | bytes) -> Iterator[Line]:
    """Lines of an in-memory text (rule examples, tests)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return read_lines(io.BytesIO(data))
