# The C layout of the fast path in a built package (see diag/analysis/trace.pxd): from a record to
# the trace assembler, the calls a plain lifecycle line makes are C calls.
cimport cython
from diag.analysis.traces cimport TraceAssembler
from diag.parsing.source cimport SourceParser
from diag.pipeline cimport Pipeline


cdef class FastSource:
    cdef public Pipeline pipe
    cdef public SourceParser parser
    cdef public object splitter, path, lines, plain, _split_classify, _at

    @cython.locals(plain=PlainWay, parser=SourceParser, pipe=Pipeline)
    cpdef _apply(self, list records, lineno, offset, bint crlf=*)


cdef class PlainWay:
    cdef public Pipeline pipe
    cdef public TraceAssembler asm
    cdef public SourceParser parser
    cdef public object open_received, open_added, access_needles
    cdef public object access_path, received, received_known, added_id, stamp_time

    @cython.locals(asm=TraceAssembler, parser=SourceParser)
    cpdef bint apply(self, rec, access, is_received, lineno, offset) except -1
