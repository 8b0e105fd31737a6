# The C layout of the parsing context in a built package (see diag/analysis/trace.pxd).
from diag.parsing.clock cimport Clock

cdef class Ctx:
    cdef public Clock clock
    cdef public object path, proc, pid, wrap_ts
    cdef public dict state
