"""A file read through a decoder, for `diag scan`: what `open_source` hands on when a file's bytes
are not the log's lines as written (UTF-16 text, a container runtime's records)."""

from __future__ import annotations

from typing import BinaryIO


class DecodedSource:
    """A binary stream read through `_decode`: `read(n)` reads `n` bytes of the file and returns what
    they decode to, which may be longer or shorter (the decoder keeps what they cut for the next
    read), and is empty only at the end. Not seekable: offsets in it are not the file's, so
    `diag scan --tail` reads such a file whole."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._done = False

    def _decode(self, data: bytes, final: bool) -> bytes:
        """What `data` completes (`final`: the file ended, `data` is empty: the rest)."""
        raise NotImplementedError

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        while not self._done:
            data = self._raw.read(size or 1)
            if not data:
                self._done = True
                return self._decode(b"", True)
            out = self._decode(data, False)
            if out:
                return out
        return b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self._raw.close()
