# Types for the store's module in a built package (see diag/analysis/trace.pxd): the trace a row is
# built from is read as the C struct it is, not through attribute lookups.
cimport cython
from diag.analysis.trace cimport Trace

cpdef tuple _trace_row(Trace t, object now, object origin, object run)
cpdef str _state_json(Trace t)

@cython.locals(values=tuple, out=dict, i=Py_ssize_t)
cpdef dict _state(Trace t)

cpdef bint _kept(object v)
cpdef tuple _arrival(Trace t)
