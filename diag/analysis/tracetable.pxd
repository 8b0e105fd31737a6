# The C layout of the trace table in a built package (see trace.pxd): the same code as
# tracetable.py, with its fields as struct members, the traces it handles typed (their fields
# read directly) and the methods the hot path calls as C functions (the assembler's layers,
# access_lines.pxd and traces.pxd, derive from it and call them the same way). The OrderedDicts
# stay `object`: dict's C calls would bypass their order.
cimport cython
from diag.analysis.trace cimport Trace
from diag.analysis.access_index cimport AwaitingIndex
from diag.analysis.traceids cimport IdScopes, engine_base


cdef class TraceTable:
    cdef public object open, recent, alias
    cdef public object on_done
    cdef public object max_open, dropped
    cdef public dict models, awaiting
    cdef public set changed, ends_logged
    cdef public IdScopes ids

    cpdef canonical(self, rid, path, sfx=*)
    cpdef add_alias(self, rid, base)
    @cython.locals(t=Trace)
    cpdef trace_of(self, ev, rid, create=*)
    @cython.locals(t=Trace)
    cpdef open_trace(self, cid, str rid, server, path, lineno)
    cpdef await_access(self, Trace t, AwaitingIndex aw)
    @cython.locals(tl=list)
    cpdef add_timeline(self, Trace t, kind, ts, lineno, path)
    @cython.locals(aw=AwaitingIndex)
    cpdef settle(self, Trace t)
    cpdef hand_over(self, Trace t)
