# The C layout of the pipeline in a built package (see diag/analysis/trace.pxd): its stages are
# typed where the hot path calls them once per line or per request.
from diag.analysis.trace cimport Trace
from diag.analysis.traces cimport TraceAssembler


cdef class Stats:
    cdef public object lines, started, seconds, outside_first, outside_last
    cdef public Py_ssize_t events, outside


cdef class Pipeline:
    cdef public object since, until, findings, _on_hit, _on_trace, keep_traces, _trace_sink
    cdef public object facts, engine, internal, max_line, fast, last_ts
    cdef public TraceAssembler assembler
    cdef public Stats stats
    cdef public list traces, sources, samples

    cpdef _trace_done(self, Trace t)
    cpdef seen(self, ts)
    cpdef bint outside(self, ts) except -1
    cpdef dropped(self, ts, Py_ssize_t lines)
    cpdef event(self, ev)
