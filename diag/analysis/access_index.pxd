# The C layout of the access-line index in a built package (see trace.pxd): the same code as
# access_index.py, with its fields as struct members and its hot methods called as C functions.
cimport cython
from diag.analysis.trace cimport Trace

cpdef bint is_candidate(Trace t)


cdef class AwaitingIndex:
    cdef public object entries
    cdef public dict live
    cdef public list died
    cdef public object _seq

    cpdef dict _live(self, family)
    cpdef add(self, Trace t)
    @cython.locals(t=Trace)
    cpdef remove(self, tid)
    @cython.locals(live=dict)
    cpdef settled(self, Trace t)
    @cython.locals(t=Trace)
    cpdef prune(self)
    @cython.locals(t=Trace, n=Py_ssize_t, d=dict)
    cpdef sole(self, fam)
