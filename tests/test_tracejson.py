"""The typed trace encoder (`diag/report/_tracejson_c.pyx`) and the reference
(`compactjson.dumps(trace.to_dict())`) must give the same bytes for every trace, or the same error.

The typed one spells JSON by hand, so these tests go after what a hand-written encoder gets
wrong: every control character, quotes and backslashes, non-ASCII and lone surrogates (orjson
refuses those; the reference then goes through the json module), integers at and past the 64-bit
edges (the same), floats whose repr and orjson's spelling differ (1e16, 1e-07), -0.0, NaN and
infinities, times with fractions that round up into the next second, times the reference cannot
format, None anywhere, timelines of any length with entries missing keys or carrying their own
path, http dicts with nested and odd values, non-str keys, and values of other types.
`tests/test_fastpath.py` compares whole `diag scan --json` documents with and without the
compiled code on the corpus and fuzzed logs.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from importlib import import_module

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CORPUS

from diag.analysis.trace import Trace
from diag.pipeline import Pipeline
from diag.report import tracejson
from diag.report.tracejson import pure_trace_json

try:
    typed = import_module("diag.report._tracejson_c")
except ImportError:
    typed = None
pytestmark = pytest.mark.skipif(typed is None, reason="the compiled trace encoder is not built here (no C compiler "
                                "or Cython at install time): only the reference exists")


def outcome(fn, t: Trace) -> tuple:
    """The bytes, or the error's type (the reference raises for a lone surrogate or a NaN time)."""
    try:
        return ("bytes", fn(t))
    except Exception as exc:  # noqa: BLE001 - which error it is, is what is compared
        return ("error", type(exc))


def assert_twins(t: Trace) -> tuple:
    want = outcome(pure_trace_json, t)
    assert outcome(typed.trace_json, t) == want
    return want


# -- values ----------------------------------------------------------------------------------------
# "clean": what orjson takes (the typed encoder must write it all itself); "odd": anything, which
# it must either write the same or hand to the reference.
_SPECIAL_CHARS = [chr(c) for c in range(0x20)] + ['"', "\\", "/", "\x7f", "\x80", "é", "\u2028", "\u2029", "\ufeff",
                                                  "中", "😀", "\U0010ffff"]
_SURROGATES = ["\ud800", "\udcff", "\udfff"]
clean_texts = st.one_of(
    st.text(st.sampled_from(_SPECIAL_CHARS + list("ab:. ")), max_size=40),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),  # any code point but a surrogate
    st.sampled_from(["", "ok", "chatcmpl-cd613e30d8f16adf", "/var/log/vllm.log", "10.0.0.5:51234", "x" * 3000]),
)
odd_texts = st.one_of(clean_texts, st.text(st.sampled_from(_SURROGATES + _SPECIAL_CHARS[:40]), min_size=1, max_size=5),
                      st.text(st.characters(blacklist_categories=()), max_size=40))
clean_ints = st.one_of(st.integers(-2**63, -2**63 + 2), st.integers(2**63 - 2, 2**63 + 2), st.integers(2**64 - 3, 2**64 - 1),
                       st.integers(-1000, 100000), st.integers(-2**63, 2**64 - 1), st.sampled_from([0, -1]))
odd_ints = st.one_of(clean_ints, st.sampled_from([-2**63 - 1, 2**64, 2**200, -2**200, 10**400]), st.integers())
floats = st.one_of(
    st.floats(), st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from([1e16, 1e15, 1e-7, 1e-5, 0.0001, 0.001, -0.0, 0.0, 1e21, 1e22, 5e-324, 1.7976931348623157e308,
                     123456789012345678.0, 0.1 + 0.2, math.nan, math.inf, -math.inf, 12.5, 3.0]),
)


def json_values(texts, ints):
    return st.recursive(st.one_of(st.none(), st.booleans(), texts, ints, floats),
                        lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                                                st.dictionaries(texts, inner, max_size=4)),
                        max_leaves=12)


clean_values = json_values(clean_texts, clean_ints)
odd_values = st.one_of(
    json_values(odd_texts, odd_ints), json_values(odd_texts, odd_ints),
    st.dictionaries(st.one_of(odd_ints, st.none(), st.booleans(), floats), clean_values, min_size=1, max_size=3),
    st.sampled_from([b"bytes", bytearray(b"x"), {1, 2}, frozenset(), object(), type("S", (str,), {})("sub"),
                     type("I", (int,), {})(3), type("D", (dict,), {})(a=1), type("L", (list,), {})([1])]),
)

# Times: the real ones (epoch seconds, often with a fraction), fractions that round into the next
# second, before 1970 or past the typed encoder's own range (iso() then formats them), and what
# iso() cannot format (NaN, the far future) or takes its own way (a bool, a str).
_BASE = 1_763_836_020.0  # 2025-11-22
clean_times = st.one_of(
    st.none(),
    st.floats(_BASE - 4e7, _BASE + 4e7).map(lambda x: round(x, 3)),
    st.floats(_BASE - 4e7, _BASE + 4e7),
    st.integers(0, 10**6).map(lambda n: _BASE + n + 0.9995),
    st.integers(0, 10**6).map(lambda n: _BASE + n + 0.9999995),
    st.integers(0, 10**6).map(lambda n: _BASE + n + 0.0005),
    st.integers(0, 3 * 10**9), st.floats(0, 5), st.floats(-1e8, 0),
    st.sampled_from([0.0, 0.5, -0.0, -1.5, 99999999999.5, 1e11, 1e11 - 0.25, 2e11 + 0.5]),
)
odd_times = st.one_of(clean_times, floats, st.booleans(), odd_texts, odd_ints)


@st.composite
def timelines(draw, clean: bool):
    values, times = (clean_values, clean_times) if clean else (st.one_of(clean_values, odd_values), odd_times)
    entries = []
    for _ in range(draw(st.one_of(st.integers(0, 5), st.integers(0, 5), st.integers(6, 40)))):
        e = {}
        for key, val in (("kind", st.one_of(st.sampled_from(["request.received", "request.added", "http.access"]), values)),
                         ("time", times), ("line", st.one_of(clean_ints, values))):
            if clean or draw(st.integers(0, 30)):  # now and then a key is missing (the reference's KeyError)
                e[key] = draw(val)
        if draw(st.booleans()):
            e["path"] = draw(st.one_of(clean_texts, values))
        if draw(st.integers(0, 10)) == 0:
            e["extra"] = draw(values)
        entries.append(e)
    if not clean and draw(st.integers(0, 15)) == 0:
        return draw(st.sampled_from([tuple(entries), [1, 2], "ab"]))
    return entries


@st.composite
def traces(draw, clean: bool):
    """A Trace whose every field is drawn: from what orjson takes (`clean`), or from anything."""
    texts, ints, times = (clean_texts, clean_ints, clean_times) if clean else (odd_texts, odd_ints, odd_times)
    values = clean_values if clean else st.one_of(clean_values, odd_values)
    t = Trace(draw(st.one_of(texts, texts, values)), draw(st.one_of(st.just("vllm"), texts, values)),
              draw(st.one_of(st.just("/var/log/vllm.log"), texts, values)))
    for name in ("model", "client", "endpoint", "status", "reason"):
        setattr(t, name, draw(st.one_of(st.none(), texts, values)))
    for name in ("received_at", "added_at", "first_output_at", "finished_at", "aborted_at", "failed_at"):
        setattr(t, name, draw(times))
    for name in ("http_status", "prompt_tokens", "output_tokens", "max_tokens", "images", "prompt_chars"):
        setattr(t, name, draw(st.one_of(st.none(), ints, values)))
    t.latency_s = draw(st.one_of(st.none(), floats, values))
    t.says_no_image = draw(st.one_of(st.booleans(), values))
    t.stuck = draw(st.one_of(st.booleans(), values))
    t.findings = draw(st.one_of(st.lists(texts, max_size=3), st.tuples(texts), st.lists(values, max_size=2)) if clean
                      else st.one_of(st.lists(texts, max_size=3), values))
    t.timeline = draw(timelines(clean))
    t.http = draw(st.one_of(st.none(), st.just({}), st.dictionaries(texts, values, max_size=8),
                            st.fixed_dictionaries({"method": texts, "path": texts, "status": ints, "path_file": texts,
                                                   "line": ints, "client": st.one_of(st.none(), texts)}),
                            st.nothing() if clean else values))
    if not clean and draw(st.integers(0, 20)) == 0:  # an unset slot: both raise AttributeError
        delattr(t, draw(st.sampled_from(["id", "model", "received_at", "timeline", "http", "stuck"])))
    return t


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces(clean=True))
def test_typed_encoder_writes_every_trace_orjson_takes_itself(t):
    """Control characters, quotes, backslashes, any non-surrogate code point, 64-bit edges, any
    float, nested http values, long timelines: written in C, the reference's bytes."""
    before = typed.handed_back()
    assert assert_twins(t)[0] == "bytes"
    assert typed.handed_back() == before, "handed to the reference: the typed encoder was not what was tested"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces(clean=False))
def test_typed_encoder_agrees_on_adversarial_traces(t):
    """Anything in any field: written the same, or handed back and then the same bytes or error."""
    assert_twins(t)


@settings(max_examples=300, deadline=None)
@given(st.one_of(odd_texts, floats, odd_ints, clean_values, odd_values), st.sampled_from(["client", "http", "latency_s", "findings"]))
def test_typed_encoder_agrees_on_one_odd_field_of_a_plain_trace(v, name):
    """The rest of the trace plain (so orjson would take it): the odd value alone decides."""
    t = _plain_trace()
    setattr(t, name, {"v": v} if name == "http" else [v] if name == "findings" else v)
    assert_twins(t)


def _plain_trace() -> Trace:
    t = Trace("chatcmpl-1", "vllm", "/var/log/vllm.log", model="Qwen3-VL-8B", client="10.0.0.5:51234", endpoint="chat",
              received_at=_BASE + 0.25, added_at=_BASE + 0.9996, finished_at=_BASE + 3, status="ok", http_status=200,
              max_tokens=512, latency_s=2.75, findings=["slow-request"])
    t.timeline = [{"kind": "request.received", "time": _BASE + 0.25, "line": 4},
                  {"kind": "http.access", "time": None, "line": 9, "path": "/var/log/proxy.log"}]
    t.http = {"method": "POST", "path": "/v1/chat/completions", "status": 200, "path_file": "/var/log/vllm.log",
              "line": 9, "client": "10.0.0.5:51234"}
    return t


def test_a_plain_trace_is_written_in_c_and_each_refusal_goes_back():
    """Which way a trace goes: the plain one, and a float orjson spells its own way, are written
    here; what orjson refuses goes to the reference (which writes it with json, or raises)."""
    for field, value, kind, back in ((None, None, "bytes", 0),
                                     ("latency_s", 1e16, "bytes", 0),  # orjson's 1e16, asked of orjson
                                     ("latency_s", 1e-7, "bytes", 0),
                                     ("max_tokens", 2**64, "bytes", 1),  # orjson refuses it, json writes it
                                     ("client", "\ud800", "error", 1),  # orjson and json both refuse it
                                     ("received_at", math.nan, "error", 1)):  # iso() cannot format it
        t = _plain_trace()
        if field:
            setattr(t, field, value)
        before = typed.handed_back()
        got, data = assert_twins(t)
        assert (got, typed.handed_back() - before) == (kind, back), field
        if field is None:
            assert b'"added_at":"2025-11-2' in data and b".999" in data and b'"path":"/var/log/proxy.log"' in data


def test_fields_are_read_from_the_slots_on_this_python():
    """The fast way (slot offsets checked at import against getattr) is the one the tests exercise."""
    assert typed.FIELDS_BY_OFFSET is True


def test_a_subclass_of_trace_goes_to_the_reference():
    class Special(Trace):
        __slots__ = ()

        def to_dict(self):
            d = Trace.to_dict(self)
            d["model"] = "special"
            return d

    t = Special("a", "vllm", "/x.log", model="m")
    assert typed.trace_json(t) == pure_trace_json(t)
    assert b'"model":"special"' in typed.trace_json(t)


def test_scan_json_uses_the_typed_encoder_unless_told_not_to():
    assert tracejson.IMPLEMENTATION == ("pure Python (DIAG_NO_EXT set)" if os.environ.get("DIAG_NO_EXT") else "compiled")
    env = {k: v for k, v in os.environ.items() if k != "DIAG_NO_EXT"}
    for no_ext, want in ((False, "trace encoder: compiled;"), (True, "trace encoder: pure Python (DIAG_NO_EXT set);")):
        run_env = {**env, "DIAG_NO_EXT": "1"} if no_ext else env
        ver = subprocess.run([sys.executable, "-m", "diag", "--version"], capture_output=True, text=True, env=run_env,
                             timeout=60, check=True)
        assert want in ver.stdout, ver.stdout


def test_typed_encoder_agrees_on_every_corpus_trace(ruleset):
    n = 0
    for path in sorted(CORPUS.rglob("*.log")):
        seen: list[Trace] = []
        p = Pipeline(ruleset, trace_sink=seen.append, keep_http=True)
        p.scan_path(str(path))
        p.finish()
        for t in seen:
            assert assert_twins(t)[0] == "bytes"
            n += 1
    assert n > 100


_TZ_PROBE = """
import sys
from diag.analysis.trace import Trace
from diag.report._tracejson_c import trace_json
from diag.report.tracejson import pure_trace_json
base = 1_763_836_020.0
for i in range(0, 400 * 86400, 86400 // 3 + 7):  # across both DST changes
    t = Trace("r", "vllm", "/x.log", received_at=base + i, added_at=base + i + 0.9996, finished_at=base + i + 0.123)
    t.timeline = [{"kind": "request.received", "time": base + i + 0.5, "line": 1}]
    assert trace_json(t) == pure_trace_json(t), (i, trace_json(t), pure_trace_json(t))
print(pure_trace_json(t).decode()[:200])
"""


@pytest.mark.parametrize("tz", ["Asia/Kolkata", "America/St_Johns", "Europe/Berlin", "UTC"])
def test_typed_encoder_agrees_on_local_times_in_other_zones(tz):
    """iso() writes local time with its offset (+05:30, -03:30 with DST): the typed encoder takes
    each second's text from iso() itself, and must add the fraction in the same place."""
    r = subprocess.run([sys.executable, "-c", _TZ_PROBE], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "TZ": tz})
    assert r.returncode == 0, r.stderr[-2000:]
    if tz == "Asia/Kolkata":
        assert "+05:30" in r.stdout
