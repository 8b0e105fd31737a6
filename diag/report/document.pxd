# The C layout of the summary accumulator in a built package (see diag/analysis/trace.pxd).
from diag.analysis.trace cimport Trace

cpdef _host(client)


cdef class TraceSummary:
    cdef public object count, by_status, latencies, images_known, images_total, images_max, http, hosts
    cdef public dict _host_first

    cpdef add(self, Trace t, order=*)
