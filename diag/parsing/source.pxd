# The C layout of the source parser in a built package (see diag/analysis/trace.pxd), on top of
# the record assembly (records.pxd): the fast path calls `took_line` and `holds` once per line it applies.
cimport cython
from diag.parsing.base cimport Ctx
from diag.parsing.records cimport RecordAssembler

cdef class SourceParser(RecordAssembler):
    cdef public object _held, _last_text, _pending_lineno
    cdef public object _pending_start, _prev_end, _prev_lineno, _scratch, _unwrap
    cdef public dict counts
    cdef public list order
    cdef public Ctx ctx
    cdef public object forced, last_ts, path, stamp_now, user_chars, user_lines

    cpdef between_records(self)
    @cython.locals(ctx=Ctx, order=list, counts=dict)
    cpdef took_line(self, fmt, lineno, proc, pid, ts, end_offset, raw)
    cpdef _stamped(self, ts)
    cpdef holds(self, n)
