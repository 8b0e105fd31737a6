# The C layout of the record assembly in a built package (see diag/analysis/trace.pxd): the
# source parser (source.pxd) derives from it; starting and taking a record are C calls.
cdef class RecordAssembler:
    cdef public object pending, pending_key, cr, dropped, _tb, _lines, _chars

    cpdef begin(self, ev, key, cr)
    cpdef take(self)
