# The C layout of `Trace` in a built package (Cython reads this beside trace.py): the same fields,
# as struct members, so modules that declare a variable of this type read and write them directly.
# trace.py stays the one definition of their meaning; FIELDS there lists the same names.

cdef class Trace:
    cdef public object id, server, source, model, client, endpoint
    cdef public object received_at, added_at, first_output_at, finished_at, aborted_at, failed_at
    cdef public object status, http_status, prompt_tokens, output_tokens, max_tokens, images, prompt_chars
    cdef public object latency_s, reason, says_no_image, stuck, findings, timeline, http, first_line
    cdef public object _text, _ended, _aborted, _failed, _completed
