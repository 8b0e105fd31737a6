# The C layout of the parsing context in a built package (see diag/analysis/trace.pxd).
cdef class Ctx:
    cdef public object path, clock, proc, pid, wrap_ts
    cdef public dict state
