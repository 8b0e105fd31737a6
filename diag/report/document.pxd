# The C layout of the summary accumulator in a built package (see diag/analysis/trace.pxd).
from diag.analysis.trace cimport Trace

cpdef _host(str client)


cdef class TraceSummary:
    cdef public object count, latencies, images_known, images_total, images_max
    cdef public dict by_status, http, hosts, _host_first

    cpdef add(self, Trace t, order=*)
