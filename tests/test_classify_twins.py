"""The typed classifier (`_classify_c.pyx`) and the pure one (`classify.py`) are two programs
that must give the same records: same tuples with the same field types, the same bytes for
every line they leave to the full parser.

The typed one re-implements the pure one's two regexes by hand, so these tests go after what a
hand-written matcher gets wrong: lines built from the real prefixes with their pieces swapped for
near misses (odd characters in the process tag, `]` and `:` where the source's lazy group must
backtrack, a `[` that belongs to the source, non-ASCII and invalid UTF-8 bytes, pids of any
length), cut or with a byte changed anywhere, at exactly `max_line` and one past it, empty lines
and runs of newlines. tests/test_fastpath.py compares the two on the corpus and fuzzed logs.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import COMPILED_CLASSIFIER, needs_compiled

from diag.analysis.rules import ruleset as rules
from diag.ingest.fastpath import classify as pure
from diag.parsing.formats import vllm
from diag.parsing.usercontent import REQUEST_METHODS, kept_path, scrub
from diag.pipeline import Pipeline
from diag.report.document import to_json

typed = COMPILED_CLASSIFIER

_REAL = [
    b"(APIServer pid=16263) INFO 11-22 18:27:00 [request_logger.py:65] Received request chatcmpl-d66b: params: "
    b"SamplingParams(n=1, max_tokens=1904), lora_request: None.",
    b"(APIServer pid=16263) INFO 11-22 18:27:00 [async_llm.py:578] Added request chatcmpl-d66b-a46d6753.",
    b'INFO:     10.0.1.8:30008 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
    b"INFO 01-24 09:05:48 logger.py:37] Received request chatcmpl-1: prompt: '\xe6\x8f\x8f\xe8\xbf\xb0', "
    b"params: SamplingParams(n=1, max_tokens=9), lora_request: None.",
    b"INFO 01-24 09:05:48 engine.py:267] Added request chatcmpl-1.",
]


_ADVERSARIAL = [
    b"INFO 11-22 18:27:00 [a.py:1] Received request x: params: SamplingParams(n=1, stop=['max_tokens=7', "
    b"'prompt_token_ids: [1]'], bad_words=[\"it's max_tokens=8\"], max_tokens=16), lora_request: None.",
    b"INFO 11-22 18:27:00 [a.py:1] Received request chatcmpl-a b Finished request y: params: SamplingParams(max_tokens=16), "
    b"lora_request: None.",
    b"INFO 11-22 18:27:00 [a.py:1] Received request chatcmpl-a:b: prompt: 'x', params: SamplingParams(max_tokens=16).",
    b"INFO 11-22 18:27:00 [a.py:1] Added request chatcmpl-CUDA out of memory. Finished request y-1234abcd.",
    b'INFO:     1.2.3.4:5 - "GET /v1/models?a="CUDA%20out%20of%20memory" HTTP/1.1" 200 OK',
    b'INFO:     1.2.3.4:5 - "GET /x?HTTP/1.1"%20500 HTTP/1.1" 200 OK',
    b'INFO:     1.2.3.4:5 - "GET /x y HTTP/1.1" 500 OK',
]


def typed_records(recs: list) -> list:
    """Records with each value's type beside it: 200 == 200.0 and 1 == True must not pass."""
    return [tuple((type(v), v) for v in r) if isinstance(r, tuple) else (type(r), r) for r in recs]


def assert_twins(body: bytes, max_line: int, crlf: bool = False) -> list:
    want = pure.split_classify(body, max_line, crlf)
    assert typed_records(typed.split_classify(body, max_line, crlf)) == typed_records(want)
    return want


# -- edges, each a construct of the regexes -------------------------------------------------------
_EDGES = {
    # the source group: "\[?" gives its "[" back when nothing but ":N" would be left after it
    b"INFO 11-22 18:27:00 [:12] Added request x.": "[:12",
    b"INFO 11-22 18:27:00 [[a:1] Added request x.": "[a:1",
    b"INFO 11-22 18:27:00 a:b:1] Added request x.": "a:b:1",
    b"INFO 11-22 18:27:00 :12] Added request x.": None,
    b"INFO 11-22 18:27:00 [a.py:1]x] Added request x.": None,
    b"INFO 11-22 18:27:00 [a.py:1] ] Added request x.": None,
    b"INFO 11-22 18:27:00 [a.py:x1] Added request x.": None,
    b"INFO 11-22 18:27:00 [a.py:] Added request x.": None,
    b"INFO 11-22 18:27:00 [a\xc3\xa9.py:1] Added request x.": None,
    # the lazy process name: it may hold " pid=" that is not followed by digits and ") "
    b"(A pid=x pid=5) INFO 11-22 18:27:00 [a.py:1] Added request x.": "a.py:1",
    b"(_ b' pid=5) INFO 11-22 18:27:00 [a.py:1] Added request x.": "a.py:1",
    b"(A) pid=5) INFO 11-22 18:27:00 [a.py:1] Added request x.": None,
    b"(A( pid=5) INFO 11-22 18:27:00 [a.py:1] Added request x.": None,
    b"(1A pid=5) INFO 11-22 18:27:00 [a.py:1] Added request x.": None,
    b"( A pid=5) INFO 11-22 18:27:00 [a.py:1] Added request x.": None,
    b"(A pid=) INFO 11-22 18:27:00 [a.py:1] Added request x.": None,
    b"(A pid=5)  INFO 11-22 18:27:00 [a.py:1] Added request x.": None,
    b"(A\tB pid=5) INFO 11-22 18:27:00 [a.py:1] Added request x.": None,
    b"(A pid=" + b"9" * 30 + b") INFO 11-22 18:27:00 [a.py:1] Added request x.": "a.py:1",
    # longer pids: the full parser's to_int reads them as None, int() would raise past 4300 digits
    b"(A pid=" + b"9" * 31 + b") INFO 11-22 18:27:00 [a.py:1] Added request x.": None,
    b"(A pid=" + b"9" * 5000 + b") INFO 11-22 18:27:00 [a.py:1] Added request x.": None,
    # the message
    b"INFO 11-22 18:27:00 [a.py:1] Added request x:": None,
    b"INFO 11-22 18:27:00 [a.py:1] Added request x:\t": None,
    b"INFO 11-22 18:27:00 [a.py:1] Added request x: ": None,
    b"INFO 11-22 18:27:00 [a.py:1] Added request x:  ": "a.py:1",
    b"INFO 11-22 18:27:00 [a.py:1] Added request x*": None,
    b"INFO 11-22 18:27:00 [a.py:1] Added request x [repeated 2x across cluster]": None,
    b"INFO 11-22 18:27:00 [a.py:1] Added request \xff\xfe\xe4\xb8.": "a.py:1",
    b"INFO 11-22 18:27:00 [a.py:1] Added requestx.": None,
    b"INFO 11-22 18:27:0x [a.py:1] Added request x.": None,
    b"INFO 11-22 18:27:00 [a.py:1] Added request x.\x00": None,
    # bidirectional controls (U+202A-U+202E, U+2066-U+2069) go to the full parser, which takes them out
    b"INFO 11-22 18:27:00 [a.py:1] Added request x\xe2\x80\xae.": None,
    b"INFO 11-22 18:27:00 [a.py:1] Added request x\xe2\x80\xaa.": None,
    b"INFO 11-22 18:27:00 [a.py:1] Added request x\xe2\x81\xa6.": None,
    b"INFO 11-22 18:27:00 [a.py:1] Added request x\xe2\x81\xa9.": None,
    b"INFO 11-22 18:27:00 [a.py:1] Added request x\xe2\x80\xa9.": "a.py:1",  # U+2029: no bidi control
    b"INFO 11-22 18:27:00 [a.py:1] Added request x\xe2\x80\xaf.": "a.py:1",  # U+202F
    b"INFO 11-22 18:27:00 [a.py:1] Added request x\xe2\x81\xa5.": "a.py:1",  # U+2065
    b"INFO 11-22 18:27:00 [a.py:1] Added request x\xe2\xe2\x80": "a.py:1",  # cut short
    # uvicorn: (?: .*)?\Z after the status
    b'INFO:     1.2.3.4:5 - "GET /x HTTP/1.1" 200': "/x",
    b'INFO:     1.2.3.4:5 - "GET /x HTTP/1.1" 200 \xff\x00': None,
    b'INFO:     1.2.3.4:5 - "GET /x HTTP/1.1" 200 \xff\xfe': "/x",
    b'INFO:     1.2.3.4:5 - "GET /x HTTP/1.1" 2000': None,
    b'INFO:     1.2.3.4:5 - "GET /x HTTP/1.1" 200 OK:': None,
    b'INFO:1.2.3.4:5 - "GET /x HTTP/1.1" 200 OK': None,
    b'INFO:     a1.2.3.4:5 - "GET /x HTTP/1.1" 200 OK': None,
    b'INFO:     1.2.3.4:5 - "get /x HTTP/1.1" 200 OK': None,
    b'INFO:     1.2.3.4:5 - "GET /x HTTP/." 200 OK': "/x",
    b'INFO:     1.2.3.4:5 - "GET /\xc3\xa9 HTTP/1.1" 200 OK': None,
    b'INFO:     1.2.3.4:5 - "GET /x HTTP/1.1" 200 OK \xe2\x81\xa7': None,
    # what a client writes where the parsers read (tests/test_user_text_positions.py): stop strings
    # before max_tokens=, an X-Request-Id with spaces, quotes and look-alikes in a query string
    _ADVERSARIAL[0]: "a.py:1",
    _ADVERSARIAL[1]: "a.py:1",
    _ADVERSARIAL[2]: "a.py:1",
    _ADVERSARIAL[3]: "a.py:1",
    _ADVERSARIAL[4]: '/v1/models?a="CUDA%20out%20of%20memory"',
    _ADVERSARIAL[5]: '/x?HTTP/1.1"%20500',
    _ADVERSARIAL[6]: None,
}


@needs_compiled
@pytest.mark.parametrize("line", list(_EDGES), ids=lambda b: b[:60].decode("ascii", "replace"))
def test_typed_classifier_agrees_on_an_edge_of_the_patterns(line):
    """Each line once alone and once among real lines; what the pure one makes of it is pinned too,
    so that an edge the typed one gets right by accident of the pure one's change is noticed."""
    for body in (line, b"\n".join([_REAL[0], line, _REAL[2], b"", line])):
        assert_twins(body, 1 << 20)
    (rec,) = pure.split_classify(line, 1 << 20)
    field = None if not isinstance(rec, tuple) else rec[4] if rec[0] == pure.ACCESS else rec[5]
    assert field == _EDGES[line]


@needs_compiled
def test_typed_classifier_agrees_at_the_length_cap():
    """24 bytes is the shortest line considered, max_line the longest."""
    for line in _REAL:
        for cap in (len(line) - 1, len(line), len(line) + 1):
            recs = assert_twins(b"\n".join((line, line[:24], line[:23], b"", b"")), cap)
            assert isinstance(recs[0], tuple) == (cap >= len(line))
    assert assert_twins(b"", 100) == [b""]
    assert assert_twins(b"\n\n", 100) == [b"", b"", b""]
    assert assert_twins(_REAL[1], 10**30)[0][0] == pure.ADDED
    assert assert_twins(_REAL[1], -5) == [_REAL[1]]


@needs_compiled
def test_typed_classifier_hands_what_is_not_bytes_to_the_pure_one():
    body = b"\n".join(_REAL)
    assert typed_records(typed.split_classify(bytearray(body), 1 << 20)) == typed_records(pure.split_classify(bytearray(body), 1 << 20))
    assert typed.split_classify(body, 1 << 20) == typed.split_classify(body, float(1 << 20))
    assert [r[0] for r in typed.split_classify(body, 1 << 20)] == [pure.RECEIVED, pure.ADDED, pure.ACCESS,
                                                                    pure.RECEIVED, pure.ADDED]
    assert (typed.RECEIVED, typed.ADDED, typed.ACCESS) == (pure.RECEIVED, pure.ADDED, pure.ACCESS)


def test_a_pid_of_thousands_of_digits_takes_nothing_down(tmp_path):
    """int() of more than 4300 digits raises: a pid past MAX_DIGITS is left to the full parser
    (whose to_int reads it as no pid), by both classifiers, and the request is still traced."""
    log = tmp_path / "vllm.log"
    log.write_bytes(b"(APIServer pid=" + b"7" * 5000 + b") INFO 11-22 18:28:01 [async_llm.py:578] Added request chatcmpl-1.\n"
                    + _REAL[2] + b"\n")
    docs = []
    for fast in (True, False):
        pipe = Pipeline(rules.load(), fast=fast)
        pipe.scan_path(str(log))
        pipe.finish()
        doc = to_json(pipe)
        doc["stats"].pop("seconds")
        docs.append(doc)
    assert docs[0] == docs[1]
    assert [t["id"] for t in docs[0]["traces"]] == ["chatcmpl-1"]


# -- generated lines ------------------------------------------------------------------------------
# Each line is built piece by piece from these tables, mostly with one piece a near miss (one is
# what shows a matcher's mistake; two usually hide it), now and then cut, a byte changed or bytes
# put in. The pieces are drawn with the Random hypothesis gives the test: hypothesis's own
# strategies repeat a few hundred lines across a run, while plain random choices give tens of
# thousands of different ones in the same time.
def _run(chars: bytes, lo: int, hi: int):
    return lambda r: bytes(r.choice(chars) for _ in range(r.randint(lo, hi)))


def _one(r: random.Random, options: list):
    o = r.choice(options)
    return o(r) if callable(o) else o


def _cat(*parts: list):
    return lambda r: b"".join(_one(r, p) for p in parts)


def _enc(*pieces: str) -> list[bytes]:
    return [p.encode() for p in pieces]


_CLEAN = bytes(c for c in range(256) if c not in b"\r\n\x1b\x00")  # what may be anywhere in a claimed line
_GRAPH = bytes(range(0x21, 0x7f))
_PROC = bytes(c for c in range(0x20, 0x7f) if c not in b"()")
_SRC = bytes(c for c in _GRAPH if c != 0x5d)
_DIGITS = [lambda r: str(r.randint(0, 10**6)).encode(), _run(b"0123456789", 1, 30), b"9" * 30]
_NAME = _enc("APIServer", "EngineCore_DP0", "A pid=x", "_ b' pid=5") + [_cat([b"A", b"z", b"_"], [_run(_PROC, 0, 10)])]
_MARKS = _enc("?", "://", "data:", "{", "input_value=", " /", "GET /v1/models", " /x?y", '"/x?y', "\t/x?y", "data", "input_value", ":/", "=",
              "does not exist", "does not exis", "oes not exist", "x",
              "Failed to parse ", "Failed to parse", "ailed to parse ", "F",
              "last read: '", "last read: ", "ast read: '", "'")
_TAIL = [_cat(*[_enc("chatcmpl-1a2b.", ": params: SamplingParams(n=1, max_tokens=9), lora_request: None.", "é中 ", " luster]",
                     "] ", ": x", "[", "\t", "\x7f", "", "", "\u202f", "\u2065", "\u2029") + [b"\xff\xfe", b"\xe4\xb8", b"\xe2\x80", b"\xe2", _run(_CLEAN, 0, 4)] + _MARKS] * 4)]
_BAD_END = _enc(":", ": ", ":\t", "*", "`", "```", "**", " [repeated 2x across cluster]", "\r", "\x1b[0m", "\x00", "\u202e", "\u2066")

# what a container runtime or `docker logs --timestamps` (classify._TS) or journalctl (classify._JOURNAL) puts first
_JOURNAL_GOOD = _cat(_enc("Nov", "Jan", "Dec"), _enc(" 22", "  1", " 09"), [b" 18:27:00"], _enc("", ".123456", ".5"),
                     _enc(" gpu01", " a", " host.example-1:x["), _enc(" vllm", " docker", " a.b-c_d"),
                     _enc("[4242]", "", "[1]", "[" + "9" * 40 + "]"), [b": "])
_JOURNAL_NEAR = _enc("nov 22 18:27:00 gpu01 vllm[1]: ", "Nov 22 18:27:00 gpu01 vllm[1]:", "Nov 22 18:27:00 gpu01 vllm[x]: ",
                     "Nov 22 18:27:00 gpu01 vllm[1] : ", "Nov 22 18:27:00  gpu01 vllm: ", "Nov 22 18:27:00 gpu01 vl:lm: ",
                     "Nov 22 18:27:00 gpü01 vllm: ", "Nov 22 18:27 gpu01 vllm: ", "Nov 2 18:27:00 gpu01 vllm: ",
                     "Nov 22 18:27:00. gpu01 vllm: ", "Mär 22 18:27:00 gpu01 vllm: ", "Foo 22 18:27:00 gpu01 vllm: ",
                     "Nov 22 18:27:00 gpu01 vllm[1]]: ", "Nov 22 18:27:00 gpu01 vl[lm: ", "Sun 2026-11-22 18:27:00 UTC gpu01 vllm[1]: ")
_RUNTIME_TIME = ([b"", b"", b"", b"", _JOURNAL_GOOD, _cat([b"2026-11-22T18:27:00"], _enc(".123456789", ".1", "", ".123"),
                                            _enc("Z", "+08:00", "-0530", "+0000"), [b" "])] + _enc("2026-11-22T18:27:00.12Z "),
                 _enc("2026-11-22T18:27:00.123 ", "2026-11-22T18:27:00 ", "2026-11-22T18:27:00.Z ", "2026-11-22 18:27:00Z ",
                      "2026-11-22T18:27:00+08:0 ", "2026-11-22T18:27:00+08:00", "2026-11-22T18:27:00Z  ", "2026-11-22T18:27:00ZZ ",
                      "2026-11-22T18:27:00+08:000 ", "2026-11-2T18:27:00Z ", "\u0662026-11-22T18:27:00Z ", "2026-11-22T18:27:00Z\t",
                      "2026-11-22T18:27:00.1234567890123Z ") + _JOURNAL_NEAR)
_VLLM = [  # (what the regex takes, near misses) for each piece, in order
    _RUNTIME_TIME,
    ([b"", b"", _cat([b"("], _NAME, [b" pid="], _DIGITS, [b") "])],
     [_cat(_enc("(", "((", "", " ("), _NAME + _enc("1A", " A", "A)", "A(", "Aé", "A\tB", ""),
           _enc(" pid=", "pid=", " pid= ", " PID="), _DIGITS + [b"", b"x", b"9" * 31, b"7" * 4400],
           _enc(") ", ")", ")  ", "), ", ") )", " ) "))]),
    ([b"INFO "], _enc("INFO", "INFO  ", "WARNING ", "INFO:", "info ", "")),
    ([lambda r: b"%02d-%02d %02d:%02d:%02d" % tuple(r.randint(0, 99) for _ in range(5))], [_run(b"0123456789-: x", 12, 16)]),
    ([b" "], _enc("", "  ", ",", ",123 ")),
    ([_cat([b"[", b""], [_run(_SRC, 1, 10)], [b":"], _DIGITS, [b"] "])] + _enc("[:12] ", "[[a:1] ", "a:b:1] ", "[a::1] ", "[a:1:2] "),
     _enc("[a.py:1]x] ", "[a.py:] ", "[a.py:x] ", "[:] ", "[] ", ":12] ", "[:12]] ", "[a.py:1]", "a.py:1 ] ", "[a.py 1] ",
          "[é:1] ", "[a.py:1]] ") + [_cat(_enc("[", "", "[["), [_run(_SRC + b" ]\xc3", 0, 6)], _enc(":", "", "::"),
                                          [_run(b"0123456789x", 0, 3)], _enc("] ", "]", "  ", "]x"))]),
    (_enc("Received request ", "Added request "), _enc("Received request", "Added  request ", "Aborted request ", "added request ", "")),
    (_TAIL, [_cat(_TAIL, _BAD_END)]),
]
_ACCESS = [
    _RUNTIME_TIME,
    ([_cat([b"INFO:"], [_run(b" ", 1, 6)])], _enc("INFO:", "INFO:\t", "INFO ", " INFO: ", "INFO:  \t")),
    ([_cat([_run(b"0123456789", 1, 1)], [_run(_GRAPH, 0, 20)])] + _enc("10.0.0.1:5000", "127.0.0.1:1"),
     _enc("a.b", "1é", " 1", "1\x7f", '1 - "x', "")),
    ([b' - "'], _enc(' -"', " - ", '  - "', ' - "')),
    ([_run(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 1, 7)] + _enc(*REQUEST_METHODS, "XPOST"),
     _enc("", "get", "P0ST", "G ET")),
    ([b" "], _enc("", "  ")),
    ([_run(_GRAPH, 1, 20)] + _enc("/v1/chat/completions", "/health", "/v1/models?x=1", "/v1/x", "v1/models", "/v1//a",
                                  '/v1/models"x', "/metrics/"), _enc("", "/a b", "/é", "/\x7f")),
    ([b" HTTP/"], _enc("HTTP/", " HTTP", " http/", "  HTTP/")),
    ([_run(b"0123456789.", 1, 4), b"1.1"], _enc("", "x", "1x")),
    ([b'" '], _enc('"', '"  ', "' ", '""')),
    ([_run(b"0123456789", 3, 3)], _enc("20", "2000", "abc", "2x0", "200x")),
    (_enc("", " OK", " Not Found") + [_cat([b" "], _TAIL)], _enc(":", " OK:", " OK: ", " OK:\t", " \x00", " \r", "\t", "x", " OK*", " OK`")),
]


def _random_line(r: random.Random) -> bytes:
    pieces = r.choice((_VLLM, _VLLM, _ACCESS, _ACCESS, None))
    if pieces is None:
        line = r.choice(_REAL) if r.random() < 0.5 else r.randbytes(r.randint(0, 40))
    else:
        odd = r.sample(range(len(pieces)), r.choice((0, 0, 1, 1, 1, 2)))
        line = b"".join(_one(r, near if i in odd else good) for i, (good, near) in enumerate(pieces))
    how = r.choice(("as is",) * 9 + ("cut", "byte", "insert"))
    if how != "as is" and line:
        i = r.randrange(len(line))
        if how == "cut":
            line = line[:i]
        elif how == "byte":
            line = line[:i] + bytes([r.randrange(256)]) + line[i + 1:]
        else:
            line = line[:i] + r.randbytes(r.randint(1, 3)) + line[i:]
    return line.replace(b"\n", b"")


@needs_compiled
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=True),
       st.one_of(st.just(1 << 20), st.integers(-1, 400), st.tuples(st.integers(0, 1000), st.integers(-1, 1))))
def test_typed_classifier_agrees_on_generated_lines(rnd, cap):
    crlf = rnd.random() < 0.3  # Windows line ends: most lines end in \r, some do not
    ends = (b"\r\n",) * 8 + (b"\n", b"\r\r\n") if crlf else (b"\n", b"\n", b"\n\n", b"\n\n\n")
    lines = [_random_line(rnd) for _ in range(rnd.randint(0, 30))]
    body = b"".join(line + rnd.choice(ends) for line in lines)[:-1] if lines else b""
    if isinstance(cap, tuple):  # exactly one line's length, or one byte either side of it
        cap = len(lines[cap[0] % len(lines)]) + cap[1] + crlf if lines else 0
    recs = assert_twins(body, cap, crlf)
    assert len(recs) == body.count(b"\n") + 1


def test_a_line_ending_in_cr_gets_in_crlf_mode_the_record_it_gets_without_its_cr():
    """A source with Windows line ends (`LineSplitter.crlf`): each line is classified as the same
    line without its \\r would be, and one the classifier leaves to the full parser goes whole."""
    r = random.Random(7)
    lines = [_random_line(r) for _ in range(20000)]
    for impl in (pure, typed) if typed is not None else (pure,):
        lf = impl.split_classify(b"\n".join(lines), 1 << 20)
        crlf = impl.split_classify(b"\n".join(line + b"\r" for line in lines), 1 << 20, True)
        assert len(lf) == len(crlf) == len(lines)
        assert sum(isinstance(a, tuple) for a in lf) > 2000
        for line, a, b in zip(lines, lf, crlf):
            assert b == (a if isinstance(a, tuple) else line + b"\r")
        # in crlf mode a line without its \r (the source is not such a file after all) is never claimed
        claimed = impl.split_classify(b"\n".join(lines), 1 << 20, True)
        assert all(not isinstance(b, tuple) for line, b in zip(lines, claimed) if not line.endswith(b"\r"))


def test_a_line_behind_a_runtimes_time_gets_the_record_of_the_line_alone():
    """Behind a container runtime's time (with a zone) or journalctl's prefix a line is classified as
    it is alone: the same record, `start` moved by the prefix's length and `wrap` the prefix; or both
    go to the full parser.
    Except a process tag holding `[` (journalctl's `unit[pid]: ` is read after a time) and a time of
    24 characters with a fraction (wrappers then look for KServe's logger names): the full parser's."""
    r = random.Random(11)
    lines = [_random_line(r) for _ in range(20000)]
    times = (b"2026-11-22T18:27:00.123456789Z ", b"2026-11-22T18:27:00+08:00 ", b"2026-11-22T18:27:00.5-0530 ",
             b"Nov 22 18:27:00 gpu01 vllm[4242]: ", b"Jan  1 00:00:00.123456 h docker: ")
    for impl in (pure, typed) if typed is not None else (pure,):
        alone = impl.split_classify(b"\n".join(lines), 1 << 20)
        for t in times:
            behind = impl.split_classify(b"\n".join(t + line for line in lines), 1 << 20)
            claimed = 0
            for line, a, b in zip(lines, alone, behind):
                if isinstance(a, tuple) and a[11] is None:
                    if isinstance(b, tuple):
                        assert b == a[:1] + (t + a[1],) + a[2:8] + (a[8] + len(t), a[9], a[10], t.decode()), line
                        claimed += 1
                    else:  # (the one exception: journalctl's `unit[pid]: ` is looked for after a runtime's time)
                        assert t[:1].isdigit() and a[2] is not None and "[" in a[2], line
                elif isinstance(a, tuple) and a[11] is not None:
                    assert not isinstance(b, tuple)  # two times: the second is no line's start
                else:
                    assert b == t + line
            assert claimed > 2000
    for impl in (pure, typed) if typed is not None else (pure,):
        (rec,) = impl.split_classify(b"2026-11-22T18:27:00.12Z " + _REAL[2], 1 << 20)
        assert rec == b"2026-11-22T18:27:00.12Z " + _REAL[2]


def test_what_the_classifier_reads_for_the_fast_path_is_what_the_parsers_would():
    """A record's request id is what vllm's own patterns read from its message, and a line the
    classifier calls free of user content (an access line: once its path is a kept endpoint) is one
    `scrub` leaves as it is — on generated lines built to be near misses of both (markers, their
    pieces, request lines, ids with spaces or non-ASCII bytes)."""
    r = random.Random(12)
    recs = pure.split_classify(b"\n".join(_random_line(r) for _ in range(30000)), 1 << 20)
    seen = {"rid": 0, "no rid": 0, "plain": 0, "not plain": 0}
    for rec in recs:
        if not isinstance(rec, tuple):
            continue
        kind, msg, text, rid, plain = rec[0], rec[6], rec[7], rec[9], rec[10]
        if kind == pure.RECEIVED:
            f: dict = {}
            m = vllm.received(msg, f)
            if rid is not None:
                g: dict = {}
                vllm.received_known(msg, rid, g)
                assert m is not None and f == g, rec
        elif kind == pure.ADDED:
            assert rid is None or vllm.added_id(msg) == rid, rec
        else:
            assert rid is None
            plain = plain and kept_path(rec[4])
        if kind != pure.ACCESS:
            seen["rid" if rid is not None else "no rid"] += 1
        seen["plain" if plain else "not plain"] += 1
        if plain:
            assert scrub(text) == text, rec
    assert min(seen.values()) > 1000, seen


@needs_compiled
def test_the_fast_path_reads_a_clients_text_as_the_parsers_do_and_never_as_a_field():
    """The adversarial lines: both classifiers give the same record, and what the fast path then
    measures (`received_known` with the id the classifier read) is what `received` reads, with
    max_tokens from the parameters and not from a stop string."""
    for line in _ADVERSARIAL:
        (rec,) = assert_twins(line, 1 << 20)
        if isinstance(rec, tuple) and rec[0] == pure.RECEIVED:
            f: dict = {}
            vllm.received(rec[6], f)
            if rec[9] is not None:
                g: dict = {}
                vllm.received_known(rec[6], rec[9], g)
                assert f == g
            assert f.get("max_tokens") in (16, None) and "prompt_tokens" not in f, f
    assert [isinstance(r, tuple) and r[9] for r in pure.split_classify(b"\n".join(_ADVERSARIAL[:4]), 1 << 20)] == \
        ["x", None, "chatcmpl-a:b", None]


@needs_compiled
def test_typed_classifier_agrees_on_the_markers_it_reads():
    """The typed twin finds scrub's markers with memchr around one byte of each: put each marker,
    and each one's pieces, at the start, middle and end of a claimed line's text."""
    pieces = _enc("?", "://", ":/", "//", "data:", "data", "ata:", "{", "input_value=", "input_value", "nput_value=",
                  " /", "/", " ", ":", "=")
    for line in _REAL[:3]:
        head, _, tail = line.rpartition(b" ")
        for p in pieces:
            for variant in (head + b" " + p + tail, head + p + b" " + tail, line + b" " + p, line + p + b"x"):
                assert_twins(variant, 1 << 20)


def test_generated_lines_are_mostly_near_misses_and_often_claimed():
    """The generator is worth something only if it makes lines of every kind the classifier claims,
    and as many that it must not."""
    r = random.Random(11)
    recs = pure.split_classify(b"\n".join(_random_line(r) for _ in range(20000)), 1 << 20)
    kinds = [rec[0] if isinstance(rec, tuple) else 0 for rec in recs]
    for kind in (0, pure.RECEIVED, pure.ADDED, pure.ACCESS):
        assert kinds.count(kind) > 1500, (kind, kinds.count(kind))
