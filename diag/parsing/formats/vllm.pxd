# The typed entry points of the vLLM parser in a built package (see diag/analysis/trace.pxd): the
# fast path measures every plain `Received request` line with these.
cimport cython
from diag.parsing.base cimport Ctx

@cython.locals(st=dict)
cpdef stamp_time(stamp, Ctx ctx)
cpdef received_known(str msg, str rid, dict f)
@cython.locals(i=Py_ssize_t, end=Py_ssize_t, n=Py_ssize_t, j=Py_ssize_t, k=Py_ssize_t)
cpdef _measure_received(str rest, dict f)
