"""The hot path: lifecycle lines turned into events without the general machinery.

A busy server's log is almost all request lifecycle lines (vLLM's Received / Added, uvicorn's
access lines). `diag.ingest.fastpath.classify` recognises them in blocks of raw bytes with one regex per
line kind; `FastSource` builds their events directly and hands every other line (errors,
warnings, tracebacks, other formats) to the full `SourceParser` in order, so the pipeline after
the parser — traces, facts, rules, sinks — sees exactly the events it would have seen.

The classifier exists twice: `classify.py`, plain Python (the reference), and its typed twin
`_classify_c.pyx` (C pointers, `memchr`, no `re`; built by `pip install .` when a C compiler is
there), tested to give the same records on the corpus, fuzzed logs and generated near misses.
`DIAG_NO_EXT=1` forces the plain one; `IMPLEMENTATION` says which is in use (`diag --version` prints it).
"""

from __future__ import annotations

from diag.compiled import typed_twin
from diag.ingest.fastpath import classify as _pure

_typed, IMPLEMENTATION = typed_twin("diag.ingest.fastpath._classify_c", "pure Python (no compiled classifier built)")
_impl = _pure if _typed is None else _typed

split_classify = _impl.split_classify

from diag.ingest.fastpath.source import FastSource  # noqa: E402

__all__ = ["FastSource", "IMPLEMENTATION", "split_classify"]
