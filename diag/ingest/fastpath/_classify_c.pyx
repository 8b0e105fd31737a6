# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The typed twin of `diag.ingest.fastpath.classify`: the same records, found in C.

`classify.py` says what a line must look like to get a tuple, with two regexes and a few byte
tests; this module checks the very same conditions on `const char *` without `re`: lines are
found with `memchr`, the three bytes that disqualify a line (`\\r`, ESC, NUL) with one `memchr`
each over the whole block rather than per line (a bidirectional control by its lead byte 0xE2 the
same way), and the header fields by walking the bytes once.
Python objects are built only for what the record holds: the line's bytes, its decoded text and
message, and the fields (a field equal to the previous line's — the timestamp's second, the
process tag, the source — reuses that line's str object).

Each regex construct is mirrored where it is parsed below (the lazy `(Proc pid=N) ` tag, the
optional `[` before the lazy `src:N`, the access line's `(?: .*)?\\Z`); `tests/test_fastpath.py`
holds the two to the same output on the corpus, on fuzzed logs and on generated adversarial
lines. A body that is not `bytes` (or a `max_line` that is not an `int`) goes to the pure one.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_FromLongLong
from libc.string cimport memchr, memcmp

from diag.ingest.fastpath import classify as _pure
from diag.parsing.base import MAX_DIGITS

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX
    object PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors)
    object PyUnicode_DecodeASCII(const char *s, Py_ssize_t size, const char *errors)
    object PyUnicode_Substring(object s, Py_ssize_t start, Py_ssize_t end)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL
    void PyObject_GC_UnTrack(object o)

RECEIVED = 1
ADDED = 2
ACCESS = 3
assert (RECEIVED, ADDED, ACCESS) == (_pure.RECEIVED, _pure.ADDED, _pure.ACCESS)

cdef Py_ssize_t _MAX_PID_DIGITS = MAX_DIGITS  # longer: the full parser's to_int says None, so it reads the line


cdef inline bint _digit(unsigned char c) noexcept nogil:
    return 48 <= c <= 57  # [0-9]


cdef inline bint _graph(unsigned char c) noexcept nogil:
    return 0x21 <= c <= 0x7e  # [\x21-\x7e]


cdef inline bint _proc_first(unsigned char c) noexcept nogil:
    return (65 <= c <= 90) or (97 <= c <= 122) or c == 95  # [A-Za-z_]


cdef inline bint _proc_char(unsigned char c) noexcept nogil:
    return (0x20 <= c <= 0x27) or (0x2a <= c <= 0x7e)  # [\x20-\x27\x2a-\x7e]: printable, no parentheses


cdef inline bint _src_char(unsigned char c) noexcept nogil:
    return (0x21 <= c <= 0x5c) or (0x5e <= c <= 0x7e)  # [\x21-\x5c\x5e-\x7e]: printable, no space, no ]


cdef class _Last:
    """An ASCII field as str, reused while the lines repeat it (one object per distinct value in a row)."""
    cdef object val

    cdef object get(self, const char *p, Py_ssize_t n):
        cdef Py_ssize_t m
        cdef const char *b
        if self.val is not None:
            b = PyUnicode_AsUTF8AndSize(self.val, &m)  # an ASCII str's own buffer: no copy
            if m == n and memcmp(b, p, n) == 0:
                return self.val
        self.val = PyUnicode_DecodeASCII(p, n, NULL)
        return self.val


cdef struct _Vllm:
    Py_ssize_t start  # where "INFO " begins (the length of the process tag)
    Py_ssize_t end    # m.end(): where the message begins
    Py_ssize_t stamp  # the 14-byte timestamp
    Py_ssize_t src, src_end


cdef Py_ssize_t _vllm_rest(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, _Vllm *m) noexcept nogil:
    """`INFO (stamp) \\[?(src:N)\\] ` at `i`, as `re` would match it: m.end(), or -1."""
    cdef Py_ssize_t t, p, q, d
    if i + 20 > n or memcmp(s + i, b"INFO ", 5) != 0:
        return -1
    t = i + 5  # [0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9] then a space
    if not (_digit(s[t]) and _digit(s[t + 1]) and s[t + 2] == 45 and _digit(s[t + 3]) and _digit(s[t + 4])
            and s[t + 5] == 32 and _digit(s[t + 6]) and _digit(s[t + 7]) and s[t + 8] == 58
            and _digit(s[t + 9]) and _digit(s[t + 10]) and s[t + 11] == 58 and _digit(s[t + 12])
            and _digit(s[t + 13]) and s[t + 14] == 32):
        return -1
    p = t + 15
    # `\[?([src]+?:[0-9]+)\] `: src's class has neither "]" nor a space, so whichever length the
    # lazy +? tries, the group can only end at the first byte outside the class, q, which must be
    # "] "; the group is then [src]+ ":" [0-9]+, i.e. q's run of digits, a ":" before it and at least
    # one byte before that. "\[?" first takes a "[" (the group then starts after it); when that
    # leaves nothing before the ":" ("[:12] "), re backtracks and the "[" is the group's first byte.
    q = p
    while q < n and _src_char(s[q]):
        q += 1
    if q + 2 > n or s[q] != 93 or s[q + 1] != 32:
        return -1
    d = q
    while d > p and _digit(s[d - 1]):
        d -= 1
    if d == q or d - 1 <= p or s[d - 1] != 58:  # no digits, or no ":" with a byte before it (from p)
        return -1
    m.src = p + 1 if (s[p] == 91 and d - 1 > p + 1) else p
    m.src_end = q
    m.stamp = t
    m.start = i
    m.end = q + 2
    return q + 2


cdef Py_ssize_t _vllm(const unsigned char *s, Py_ssize_t n, _Vllm *m, Py_ssize_t *k_out,
                      Py_ssize_t *pid_a) noexcept nogil:
    """_VLLM.match: m.end() or -1; k_out gets the tag's end (0: no tag), pid_a where its digits begin."""
    cdef Py_ssize_t k, j, d0
    k_out[0] = 0
    if s[0] != 40:
        return _vllm_rest(s, n, 0, m)
    # `\(([A-Za-z_][\x20-\x27\x2a-\x7e]*?) pid=([0-9]+)\) `: the lazy name grows one byte at a
    # time; at each length re tries " pid=" digits ") " and the rest of the header, and grows the
    # name only when that fails and the next byte is in the name's class (no "(" or ")").
    if n < 2 or not _proc_first(s[1]):
        return -1
    k = 2
    while k < n:
        if s[k] == 32 and k + 5 <= n and memcmp(s + k, b" pid=", 5) == 0:
            j = k + 5
            d0 = j
            while j < n and _digit(s[j]):
                j += 1
            # [0-9]+ is greedy and a ")" follows it: no shorter run could be followed by ")"
            if j > d0 and j + 2 <= n and s[j] == 41 and s[j + 1] == 32:
                if _vllm_rest(s, n, j + 2, m) >= 0:
                    k_out[0] = k
                    pid_a[0] = d0
                    return m.end
        if not _proc_char(s[k]):
            return -1
        k += 1
    return -1


cdef inline Py_ssize_t _fraction(const unsigned char *s, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    """`(?:\.[0-9]+)?` at `i` (a time's fraction of a second): where it ends, or -1 (a dot, no digit)."""
    if i < n and s[i] == 46:
        i += 1
        if i >= n or not _digit(s[i]):
            return -1
        while i < n and _digit(s[i]):
            i += 1
    return i


cdef Py_ssize_t _docker_ts(const unsigned char *s, Py_ssize_t n) noexcept nogil:
    """classify._TS.match (wrappers.DOCKER_TS with a zone, ASCII digits): its end (the space
    after it included), or -1. `[0-9]+` and the zone are each followed by a byte they exclude, so
    the longest run is the only way `re` can match."""
    cdef Py_ssize_t i
    if n < 21:
        return -1
    if not (_digit(s[0]) and _digit(s[1]) and _digit(s[2]) and _digit(s[3]) and s[4] == 45 and _digit(s[5])
            and _digit(s[6]) and s[7] == 45 and _digit(s[8]) and _digit(s[9]) and s[10] == 84 and _digit(s[11])
            and _digit(s[12]) and s[13] == 58 and _digit(s[14]) and _digit(s[15]) and s[16] == 58
            and _digit(s[17]) and _digit(s[18])):
        return -1
    i = _fraction(s, n, 19)
    if i < 0:
        return -1
    if i < n and s[i] == 90:  # Z
        i += 1
    elif i < n and (s[i] == 43 or s[i] == 45):  # [+-][0-9][0-9]:?[0-9][0-9]
        if i + 3 > n or not (_digit(s[i + 1]) and _digit(s[i + 2])):
            return -1
        i += 3
        if i < n and s[i] == 58:
            i += 1
        if i + 2 > n or not (_digit(s[i]) and _digit(s[i + 1])):
            return -1
        i += 2
    else:
        return -1
    if i >= n or s[i] != 32:
        return -1
    return i + 1


cdef Py_ssize_t _journal(const unsigned char *s, Py_ssize_t n) noexcept nogil:
    """classify._JOURNAL.match (journalctl's `Mon dd hh:mm:ss[.frac] host unit[pid]: `, an English
    month, ASCII host and unit): its end, or -1. Each run ends at a byte it excludes and what
    follows it is fixed, so the longest run is the only way `re` can match."""
    cdef Py_ssize_t i
    cdef const char *months = b"JanFebMarAprMayJunJulAugSepOctNovDec"
    if n < 20:
        return -1
    i = 0
    while i < 36:
        if memcmp(s, months + i, 3) == 0:
            break
        i += 3
    if i >= 36:
        return -1
    if not (s[3] == 32 and (s[4] == 32 or _digit(s[4])) and _digit(s[5]) and s[6] == 32 and _digit(s[7]) and _digit(s[8])
            and s[9] == 58 and _digit(s[10]) and _digit(s[11]) and s[12] == 58 and _digit(s[13]) and _digit(s[14])):
        return -1
    i = _fraction(s, n, 15)
    if i < 0 or i >= n or s[i] != 32:
        return -1
    i += 1
    if i >= n or not _graph(s[i]):  # the host: [\x21-\x7e]+ then a space
        return -1
    while i < n and _graph(s[i]):
        i += 1
    if i >= n or s[i] != 32:
        return -1
    i += 1
    if i >= n or not (_graph(s[i]) and s[i] != 58 and s[i] != 91):  # the unit: no ":" or "["
        return -1
    while i < n and _graph(s[i]) and s[i] != 58 and s[i] != 91:
        i += 1
    if i < n and s[i] == 91:  # (?:\[[0-9]+\])?
        i += 1
        if i >= n or not _digit(s[i]):
            return -1
        while i < n and _digit(s[i]):
            i += 1
        if i >= n or s[i] != 93:
            return -1
        i += 1
    if i + 2 > n or s[i] != 58 or s[i + 1] != 32:
        return -1
    return i + 2


cdef inline bint _colon_end(const unsigned char *s, Py_ssize_t n) noexcept nogil:
    """endswith((b":", b": ", b":\\t")): a line that could open a multi-line record."""
    if s[n - 1] == 58:
        return True
    return n >= 2 and s[n - 2] == 58 and (s[n - 1] == 32 or s[n - 1] == 9)


cdef Py_ssize_t _access(const unsigned char *s, Py_ssize_t n, Py_ssize_t *f) noexcept nogil:
    """_ACCESS.match on a line starting "INFO:": the status, or -1; f gets the groups' bounds
    (client, method, path: start/end pairs). Each of its repeats is followed by a byte its class
    excludes, so each is simply the longest run (re would find no other way to match)."""
    cdef Py_ssize_t i = 5, a, st
    while i < n and s[i] == 32:  # " +"
        i += 1
    if i == 5 or i >= n or not _digit(s[i]):
        return -1
    f[0] = i  # client: [0-9][\x21-\x7e]*
    i += 1
    while i < n and _graph(s[i]):
        i += 1
    f[1] = i
    if i + 4 > n or memcmp(s + i, b' - "', 4) != 0:
        return -1
    i += 4
    a = i  # method: [A-Z]+
    while i < n and 65 <= s[i] <= 90:
        i += 1
    if i == a or i >= n or s[i] != 32:
        return -1
    f[2] = a
    f[3] = i
    i += 1
    a = i  # path: [\x21-\x7e]+
    while i < n and _graph(s[i]):
        i += 1
    if i == a or i + 6 > n or memcmp(s + i, b" HTTP/", 6) != 0:
        return -1
    f[4] = a
    f[5] = i
    i += 6
    a = i  # [0-9.]+ then '" '
    while i < n and (_digit(s[i]) or s[i] == 46):
        i += 1
    if i == a or i + 5 > n or s[i] != 34 or s[i + 1] != 32:
        return -1
    i += 2
    if not (_digit(s[i]) and _digit(s[i + 1]) and _digit(s[i + 2])):
        return -1
    st = (s[i] - 48) * 100 + (s[i + 1] - 48) * 10 + (s[i + 2] - 48)
    i += 3
    # (?: .*)?\Z under re.S: the end, or a space and anything up to the end
    if i != n and s[i] != 32:
        return -1
    return st


cdef bint _no_markers(const unsigned char *t, Py_ssize_t n) noexcept nogil:
    """classify._no_markers: no `?`, `://`, `data:`, `{` with `:`, `input_value=`, `does not exist`,
    `Failed to parse `, `last read: '`. Each marker has a byte to look for with memchr
    (`?`, `:`, `{`, `=`, `x`, `F`, `'`); the rest is compared around each hit."""
    cdef const unsigned char *p
    cdef const unsigned char *end = t + n
    cdef bint colon = False
    if memchr(t, 63, n) != NULL:  # "?"
        return False
    p = <const unsigned char *>memchr(t, 58, n)  # ":"
    while p != NULL:
        colon = True
        if (end - p >= 3 and p[1] == 47 and p[2] == 47) or (p - t >= 4 and memcmp(p - 4, b"data", 4) == 0):
            return False
        p = <const unsigned char *>memchr(p + 1, 58, end - p - 1)
    if colon and memchr(t, 123, n) != NULL:  # "{"
        return False
    p = <const unsigned char *>memchr(t, 61, n)  # "="
    while p != NULL:
        if p - t >= 11 and memcmp(p - 11, b"input_value", 11) == 0:
            return False
        p = <const unsigned char *>memchr(p + 1, 61, end - p - 1)
    p = <const unsigned char *>memchr(t, 120, n)  # "x", the 11th byte of "does not exist"
    while p != NULL:
        if p - t >= 10 and end - p >= 4 and memcmp(p - 10, b"does not exist", 14) == 0:
            return False
        p = <const unsigned char *>memchr(p + 1, 120, end - p - 1)
    p = <const unsigned char *>memchr(t, 70, n)  # "F"
    while p != NULL:
        if end - p >= 16 and memcmp(p, b"Failed to parse ", 16) == 0:
            return False
        p = <const unsigned char *>memchr(p + 1, 70, end - p - 1)
    p = <const unsigned char *>memchr(t, 39, n)  # "'", the last byte of "last read: '"
    while p != NULL:
        if p - t >= 11 and memcmp(p - 11, b"last read: ", 11) == 0:
            return False
        p = <const unsigned char *>memchr(p + 1, 39, end - p - 1)
    return True


cdef Py_ssize_t _request_lines(const unsigned char *t, Py_ssize_t n) noexcept nogil:
    """t.count(b" /")"""
    cdef Py_ssize_t k = 0
    cdef const unsigned char *p = <const unsigned char *>memchr(t, 47, n)
    while p != NULL:
        if p > t and (p - 1)[0] == 32:
            k += 1
        p = <const unsigned char *>memchr(p + 1, 47, t + n - p - 1)
    return k


cdef bint _method(const unsigned char *m, Py_ssize_t n) noexcept nogil:
    """classify._METHODS (usercontent.REQUEST_METHODS: tests/test_classify_twins.py generates each)"""
    if n == 3:
        return memcmp(m, b"GET", 3) == 0 or memcmp(m, b"PUT", 3) == 0
    if n == 4:
        return memcmp(m, b"POST", 4) == 0 or memcmp(m, b"HEAD", 4) == 0
    if n == 5:
        return memcmp(m, b"PATCH", 5) == 0
    if n == 6:
        return memcmp(m, b"DELETE", 6) == 0
    return n == 7 and memcmp(m, b"OPTIONS", 7) == 0


cdef object _rid(const unsigned char *s, Py_ssize_t n, Py_ssize_t a, int kind, const char *line):
    """classify's _RECEIVED_ID / _ADDED_ID from `a` (just past the message's prefix): the id, or None."""
    cdef Py_ssize_t i = a
    if kind == 1:  # ([\x21-\x7e]+?): : the first ": " after at least one byte, all printable before it
        while i + 1 < n and _graph(s[i]):
            if i > a and s[i] == 58 and s[i + 1] == 32:
                return PyUnicode_DecodeASCII(line + a, i - a, NULL)
            i += 1
        return None
    # ([\x21-\x7e]+)\.\Z: everything up to a final ".", all printable
    if n - a < 2 or s[n - 1] != 46:
        return None
    while i < n - 1:
        if not _graph(s[i]):
            return None
        i += 1
    return PyUnicode_DecodeASCII(line + a, n - 1 - a, NULL)


cdef inline Py_ssize_t _find(const char *base, Py_ssize_t total, Py_ssize_t frm, int c) noexcept nogil:
    cdef const char *hit = <const char *>memchr(base + frm, c, total - frm)
    return total if hit == NULL else hit - base


cdef Py_ssize_t _find_bidi(const char *base, Py_ssize_t total, Py_ssize_t frm) noexcept nogil:
    """The next bidirectional control at or after `frm` (`classify._BIDI`: E2 80 AA-AE, E2 81 A6-A9), or `total`."""
    cdef const unsigned char *s = <const unsigned char *>base
    cdef Py_ssize_t i = _find(base, total, frm, 0xe2)
    while i + 2 < total:
        if (s[i + 1] == 0x80 and 0xaa <= s[i + 2] <= 0xae) or (s[i + 1] == 0x81 and 0xa6 <= s[i + 2] <= 0xa9):
            return i
        i = _find(base, total, i + 1, 0xe2)
    return total


cdef inline object _whole(const char *line, Py_ssize_t n, bint stripped, object raw):
    """What goes to the full parser: the line as it was (its `\\r` put back when it was read without)."""
    return PyBytes_FromStringAndSize(line, n + 1) if stripped else raw


def split_classify(body, max_line, crlf=False):
    """Records (tuples) or raw bytes, one per line of `body` (lines joined by `\\n`); `crlf`: see
    classify.split_classify (a line then gets a tuple only when it ends in `\\r`, read without it)."""
    if type(body) is not bytes or type(max_line) is not int:
        return _pure.split_classify(body, max_line, crlf)
    cdef bint crlf_lines = crlf, stripped, stamped
    cdef Py_ssize_t cap
    if max_line > PY_SSIZE_T_MAX:
        cap = PY_SSIZE_T_MAX
    elif max_line < -1:
        cap = -1
    else:
        cap = max_line
    cdef const char *base = PyBytes_AS_STRING(body)
    cdef Py_ssize_t total = PyBytes_GET_SIZE(body)
    cdef Py_ssize_t pos = 0, n, le, e, k = 0, pid_a = 0, nd, i, st, w, tn
    cdef Py_ssize_t cr = -1, esc = -1, nul = -1, bidi = -1  # the next \r / ESC / NUL / bidi control at or after a line start
    cdef Py_ssize_t f[6]
    cdef const char *nl
    cdef const unsigned char *s
    cdef const unsigned char *t
    cdef const char *ln
    cdef unsigned char c, last
    cdef long long pid_v, last_pid_v = -1
    cdef int kind
    cdef _Vllm m
    cdef list out = []
    cdef bytes raw
    cdef _Last procs = _Last(), stamps = _Last(), srcs = _Last(), methods = _Last(), paths = _Last()
    cdef object text, proc, pid, last_pid = None, wrap
    cdef tuple rec
    while True:
        nl = <const char *>memchr(base + pos, 10, total - pos)
        le = total if nl == NULL else nl - base
        n = le - pos
        s = <const unsigned char *>(base + pos)
        stripped = crlf_lines and 0 < n <= cap and s[n - 1] == 13
        if stripped:
            n -= 1
        raw = PyBytes_FromStringAndSize(base + pos, n)
        if n > cap or n < 24 or (crlf_lines and not stripped):
            out.append(_whole(base + pos, n, stripped, raw))
        else:
            if cr < pos:
                cr = _find(base, total, pos, 13)
            if esc < pos:
                esc = _find(base, total, pos, 27)
            if nul < pos:
                nul = _find(base, total, pos, 0)
            if bidi < pos:
                bidi = _find_bidi(base, total, pos)
            last = s[n - 1]
            w = 0
            wrap = None
            stamped = _digit(s[0])  # a runtime's time first? (or journalctl's `Mon dd hh:mm:ss `?)
            if stamped or (s[3] == 32 and 65 <= s[0] <= 90):
                w = _docker_ts(s, n) if stamped else _journal(s, n)
                # (24: the length of a time after which wrappers.strip tries KServe's logger names)
                if w < 0 or w >= n or (stamped and w == 24 and s[19] == 46):
                    w = -1
                else:
                    wrap = PyUnicode_DecodeASCII(base + pos, w, NULL)
            t = s + w  # the line after the runtime's time (w >= 0)
            tn = n - w
            ln = base + pos + w
            c = t[0] if w >= 0 else 0
            if (w < 0 or cr < pos + n or esc < le or nul < le or bidi < le or last == 42 or last == 96  # a paste's closing ``` or **
                    or (last == 93 and memcmp(s + n - 8, b"cluster]", 8) == 0)):  # Ray's repeat suffix
                out.append(_whole(base + pos, n, stripped, raw))
            elif c == 40 or (c == 73 and tn >= 5 and memcmp(t, b"INFO ", 5) == 0):  # "(" : a process tag
                e = _vllm(t, tn, &m, &k, &pid_a)
                if e < 0 or (stamped and k and memchr(t + 1, 91, k - 1) != NULL):  # (journalctl's `unit[pid]: `, read after a time)
                    out.append(_whole(base + pos, n, stripped, raw))
                    e = -1
                elif tn - e >= 17 and memcmp(t + e, b"Received request ", 17) == 0:
                    kind = 1
                elif tn - e >= 14 and memcmp(t + e, b"Added request ", 14) == 0:
                    kind = 2
                else:
                    out.append(_whole(base + pos, n, stripped, raw))
                    e = -1
                if e >= 0:
                    nd = m.start - 2 - pid_a  # the pid's digits (when k)
                    if _colon_end(t, tn) or (k and nd > _MAX_PID_DIGITS):
                        out.append(_whole(base + pos, n, stripped, raw))
                    else:
                        if k:
                            proc = procs.get(ln + 1, k - 1)
                            if nd <= 18:
                                pid_v = 0
                                for i in range(pid_a, pid_a + nd):
                                    pid_v = pid_v * 10 + (t[i] - 48)
                                if pid_v != last_pid_v or last_pid is None:
                                    last_pid = PyLong_FromLongLong(pid_v)
                                    last_pid_v = pid_v
                                pid = last_pid
                            else:
                                pid = int(PyBytes_FromStringAndSize(ln + pid_a, nd))
                        else:
                            proc = None
                            pid = None
                        text = PyUnicode_DecodeUTF8(ln + m.start, tn - m.start, b"replace")
                        rec = (kind, raw, proc, pid, stamps.get(ln + m.stamp, 14),
                               srcs.get(ln + m.src, m.src_end - m.src),
                               PyUnicode_Substring(text, e - m.start, PyUnicode_GET_LENGTH(text)), text, w + m.start,
                               _rid(t, tn, e + (17 if kind == 1 else 14), kind, ln),
                               _request_lines(t + m.start, tn - m.start) == 0 and _no_markers(t + m.start, tn - m.start), wrap)
                        PyObject_GC_UnTrack(rec)  # str, bytes, int, None: it can be in no cycle (gc would untrack it too)
                        out.append(rec)
            elif c == 73 and tn >= 5 and t[4] == 58 and memcmp(t, b"INFO:", 5) == 0:  # "I"
                st = _access(t, tn, f)
                if st < 0 or _colon_end(t, tn):
                    out.append(_whole(base + pos, n, stripped, raw))
                else:
                    text = PyUnicode_DecodeUTF8(ln, tn, b"replace")
                    rec = (3, raw, PyUnicode_DecodeASCII(ln + f[0], f[1] - f[0], NULL),
                           methods.get(ln + f[2], f[3] - f[2]), paths.get(ln + f[4], f[5] - f[4]),
                           st, PyUnicode_Substring(text, f[0], PyUnicode_GET_LENGTH(text)), text, w, None,
                           _method(t + f[2], f[3] - f[2]) and t[f[4]] == 47 and _request_lines(t, tn) == 1
                           and _no_markers(t, tn), wrap)
                    PyObject_GC_UnTrack(rec)
                    out.append(rec)
            else:
                out.append(_whole(base + pos, n, stripped, raw))
        if nl == NULL:
            return out
        pos = le + 1

