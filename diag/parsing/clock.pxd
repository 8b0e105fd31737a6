# The C layout of a source's clock in a built package (see diag/analysis/trace.pxd): a vLLM line
# with a new second asks it for the time.
cdef class Clock:
    cdef public object ref, year, _cache_key, _cache_val, _minute, _minute_base, _last

    cpdef local(self, year, month, day, hh, mm, ss)
    cpdef yearless(self, month, day, hh, mm, ss)
