"""One trace as the compact JSON bytes `diag scan --json` writes for it.

`pure_trace_json` is the reference: the trace's public dict (`Trace.to_dict`) through
`diag.compactjson.dumps`. A scan serialises every request, and building that dict (26 keys, a
timeline list of dicts, six ISO times) only for orjson to take it apart again cost more than the
encoding itself; `_tracejson_c.pyx` is its typed twin, writing the same bytes from the trace's
fields into one buffer (built by `pip install .` when a C compiler is there, like the log
classifier in `diag.ingest.fastpath`). It hands anything it does not spell exactly like the
reference back to the reference. `DIAG_NO_EXT=1` forces the reference; `IMPLEMENTATION` says
which one is in use (`diag --version` prints it).
"""

from __future__ import annotations

from diag.analysis.trace import Trace
from diag.compactjson import dumps
from diag.compiled import typed_twin


def pure_trace_json(t: Trace) -> bytes:
    """The reference: the public shape, encoded."""
    return dumps(t.to_dict())


_typed, IMPLEMENTATION = typed_twin("diag.report._tracejson_c", "pure Python (not built)")
trace_json = pure_trace_json if _typed is None else _typed.trace_json

__all__ = ["IMPLEMENTATION", "pure_trace_json", "trace_json"]
