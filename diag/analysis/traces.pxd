# The C layout of the trace assembler in a built package (see trace.pxd): the same code as
# traces.py, on top of its layers (tracetable.pxd, access_lines.pxd): fields as struct members,
# the traces it handles typed (their fields read directly) and its own methods and its layers'
# called as C functions.
cimport cython
from diag.analysis.trace cimport Trace
from diag.analysis.access_index cimport AwaitingIndex
from diag.analysis.traceids cimport engine_base
from diag.analysis.access_lines cimport AccessAttacher

cpdef _measured(Trace t, dict f)


cdef class TraceAssembler(AccessAttacher):
    cdef public dict _last_started

    @cython.locals(t=Trace, o=Trace, aw=AwaitingIndex)
    cpdef feed(self, ev)
    cpdef plain_received(self, path, rid)
    @cython.locals(t=Trace)
    cpdef apply_received(self, cid, rid, path, lineno, f, ts)
    @cython.locals(t=Trace)
    cpdef plain_added(self, path, rid)
    cpdef apply_added(self, Trace t, alias, path, lineno, ts)
