# The C layout of the trace assembler in a built package (see trace.pxd): the same code as
# traces.py, with its fields as struct members, the traces it handles typed (their fields read
# directly) and its own methods called as C functions. The OrderedDicts stay `object`: dict's C
# calls would bypass their order.
cimport cython
from diag.analysis.trace cimport Trace
from diag.analysis.access_index cimport AwaitingIndex
from diag.analysis.traceids cimport IdScopes

@cython.locals(n=Py_ssize_t, i=Py_ssize_t)
cpdef _engine_base(str rid)
cpdef _measured(Trace t, dict f)


cdef class TraceAssembler:
    cdef public object open, recent, alias
    cdef public object on_done
    cdef public object max_open, dropped, keep_http, http_count
    cdef public dict models, _waiting, _last_started, _just_ended, _awaiting
    cdef public list http_records
    cdef public set changed, ends_logged
    cdef public IdScopes ids

    cpdef _canonical(self, rid, path, sfx=*)
    cpdef _alias(self, rid, base)
    @cython.locals(t=Trace)
    cpdef _trace(self, ev, rid, create=*)
    @cython.locals(t=Trace, o=Trace, aw=AwaitingIndex)
    cpdef feed(self, ev)
    cpdef plain_received(self, path, rid)
    @cython.locals(t=Trace)
    cpdef apply_received(self, cid, rid, path, lineno, f, ts)
    @cython.locals(t=Trace)
    cpdef plain_added(self, path, rid)
    cpdef apply_added(self, Trace t, alias, path, lineno, ts)
    @cython.locals(aw=AwaitingIndex)
    cpdef plain_access(self, path, method, hpath)
    cpdef apply_access(self, Trace t, path, lineno, client, method, hpath, status, ts)
    @cython.locals(aw=AwaitingIndex)
    cpdef _waits_apart(self, path, tid)
    @cython.locals(t=Trace)
    cpdef _open(self, cid, str rid, server, path, lineno)
    cpdef _await(self, Trace t, AwaitingIndex aw)
    @cython.locals(tl=list)
    cpdef _timeline(self, Trace t, kind, ts, lineno, path)
    @cython.locals(aw=AwaitingIndex)
    cpdef _settle(self, Trace t)
    cpdef _finish(self, Trace t)
    @cython.locals(adj=Trace, only=Trace, aw=AwaitingIndex)
    cpdef _access(self, ev)
    cpdef _attach(self, Trace t, path, lineno, ts, client, method, hpath, status, with_client)
