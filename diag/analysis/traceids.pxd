# The C layout of the id scopes in a built package (see trace.pxd).
cdef class IdScopes:
    cdef public dict by_path
    cdef public set _tags
    cdef public object _first_taken
    cdef public dict _family

    cpdef scope(self, path)
    cpdef suffix(self, path)
