"""Compact JSON for what diag writes in bulk: trace state in the store, traces in `scan --json`.

orjson (a dependency) encodes a trace about eight times faster than the json module. It refuses a
few things json writes (an integer past 64 bits from a malformed log number, a lone surrogate):
those go through json, so a log line can never make the encoding fail. Without orjson, json does
all of it.
"""

from __future__ import annotations

import json
from typing import Any

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # one encoder, not one per call

try:
    import orjson

    def dumps(obj: Any) -> bytes:
        """UTF-8 bytes (a file or stream)."""
        try:
            return orjson.dumps(obj)
        except orjson.JSONEncodeError:
            return _encode(obj).encode("utf-8")

    def dumps_text(obj: Any) -> str:
        """Text (an SQLite column)."""
        try:
            return orjson.dumps(obj).decode("utf-8")
        except orjson.JSONEncodeError:
            return _encode(obj)
except ImportError:  # pragma: no cover - exercised where orjson is not installed
    def dumps(obj: Any) -> bytes:
        return _encode(obj).encode("utf-8")

    dumps_text = _encode
