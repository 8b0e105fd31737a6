# The C layout of the access-line layer of the trace assembler in a built package (see
# tracetable.pxd): fields as struct members, the methods the hot path calls as C functions.
cimport cython
from diag.analysis.trace cimport Trace
from diag.analysis.access_index cimport AwaitingIndex
from diag.analysis.tracetable cimport TraceTable


cdef class AccessAttacher(TraceTable):
    cdef public object keep_http, http_count
    cdef public dict waiting_lines, just_ended
    cdef public list http_records, shared_clients

    @cython.locals(adj=Trace, only=Trace, aw=AwaitingIndex)
    cpdef take_access(self, ev)
    @cython.locals(aw=AwaitingIndex)
    cpdef plain_access(self, path, method, hpath)
    cpdef apply_access(self, Trace t, path, lineno, client, method, hpath, status, ts)
    @cython.locals(aw=AwaitingIndex)
    cpdef waits_apart(self, path, tid)
    cpdef attach(self, Trace t, path, lineno, ts, client, method, hpath, status, with_client)
