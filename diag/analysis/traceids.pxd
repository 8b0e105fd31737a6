# The C layout of the id scopes in a built package (see trace.pxd).
cimport cython


@cython.locals(n=Py_ssize_t, i=Py_ssize_t)
cpdef engine_base(str rid)


cdef class Scope:
    cdef public object epoch, tag, used, suffix

    cpdef next_epoch(self)


cdef class IdScopes:
    cdef public dict by_path
    cdef public set _tags
    cdef public object _first_taken
    cdef public dict _family

    @cython.locals(s=Scope)
    cpdef scope(self, path)
    @cython.locals(s=Scope)
    cpdef suffix(self, path)
