# The C layout of the trace spool in a built package (see diag/analysis/trace.pxd).
from diag.analysis.trace cimport Trace
from diag.report.document cimport TraceSummary


cdef class TraceSpool:
    cdef public TraceSummary summary
    cdef public object indent, _file, _src, _line, _end, _size, _spilled
    cdef public bytes _sep
    cdef public dict _sources
    cdef public list _buf

    cpdef add(self, Trace t)
    cpdef _spill(self)
