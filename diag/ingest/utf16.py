"""Logs saved as UTF-16, read as the UTF-8 the rest of diag reads.

Windows PowerShell 5.1 writes UTF-16 (little-endian, after a byte-order mark) for `>` and
`Out-File`: `ssh gpu01 cat /var/log/vllm.log > vllm.log` or `docker logs vllm > vllm.log` typed
there gives such a file, and so does Notepad's "Unicode". Read as bytes, every other byte is a NUL
and no line is in any format: `diag scan` found nothing in it and said nothing. A file that starts
with a UTF-16 byte-order mark is decoded as it is read and handed on as UTF-8 (a broken sequence
replaced, like invalid UTF-8 everywhere else), so it reads as the log it holds.

Only `diag scan` opens files this way (`diag.ingest.reader.open_source`): a server writes its
live log in UTF-8, and the daemon's offsets are the file's own bytes.
"""

from __future__ import annotations

import codecs
from typing import BinaryIO

from diag.ingest.decoded import DecodedSource

_BOMS = {codecs.BOM_UTF16_LE: "utf-16-le", codecs.BOM_UTF16_BE: "utf-16-be"}


def utf16_encoding(head: bytes) -> str | None:
    """The UTF-16 codec a file's first two bytes (its byte-order mark) name, or None."""
    return _BOMS.get(bytes(head[:2]))


class Utf16Source(DecodedSource):
    """A binary stream of UTF-16 text (after its byte-order mark) read as UTF-8 bytes, however the
    reads cut a character (one CJK character is 2 bytes in UTF-16 and 3 in UTF-8)."""

    def __init__(self, raw: BinaryIO, encoding: str):
        super().__init__(raw)
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")

    def _decode(self, data: bytes, final: bool) -> bytes:
        return self._decoder.decode(data, final=final).encode("utf-8", "replace")
