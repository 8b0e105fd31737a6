"""Traceback frames as rule input: code locations only, bounded, never from user content.

A traceback record's `File "…", line N, in func` lines become `package/module.py:func` strings in
`Event.frames` (diag.parsing.frames); the code lines under them stay out of the text and out of the
frames, and a rule's `frames` pattern matches those locations (all its other conditions still apply).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CANARY
from diag.analysis.rules import ruleset as rules
from diag.analysis.engine import RuleEngine
from diag.parsing.source import SourceParser, parse_text
from diag.parsing import frames
from diag.ingest.reader import iter_text_lines

FIELD = Path(__file__).parent / "data" / "field"


@pytest.mark.parametrize("line, want", [
    # real lines: tests/data/field/engine/*.log, vllm-project/vllm#2067, #5443
    ('  File "/usr/local/lib/python3.10/dist-packages/vllm/engine/async_llm_engine.py", line 532, in run_engine_loop',
     "vllm/engine/async_llm_engine.py:run_engine_loop"),
    ('  File "/root/miniconda3/envs/vllm/lib/python3.11/site-packages/vllm/engine/async_llm_engine.py", line 28, in _raise_exception_on_finish',
     "vllm/engine/async_llm_engine.py:_raise_exception_on_finish"),
    ('  File "/usr/lib/python3.10/asyncio/tasks.py", line 445, in wait_for', "asyncio/tasks.py:wait_for"),
    ('  File "/workspace/vllm/engine/async_llm_engine.py", line 444, in generate', "workspace/vllm/engine/async_llm_engine.py:generate"),
    ('  File "uvloop/cbhandles.pyx", line 63, in uvloop.loop.Handle._run', "uvloop/cbhandles.pyx:uvloop.loop.Handle._run"),
    ('  File "<frozen runpy>", line 198, in _run_module_as_main', "<frozen runpy>:_run_module_as_main"),
    ('File "/usr/local/lib/python3.10/dist-packages/vllm/entrypoints/api_server.py", line 5, in <module>',
     "vllm/entrypoints/api_server.py:<module>"),  # indentation lost in a paste
    ('  File "C:\\Users\\alice\\miniconda3\\Lib\\site-packages\\vllm\\utils.py", line 9, in run', "vllm/utils.py:run"),
    # an application outside any installation: its last components, not the home directory
    ('  File "/home/alice/projects/acme/app/server.py", line 3, in handler', "projects/acme/app/server.py:handler"),
])
def test_a_frame_line_is_its_code_location(line, want):
    assert frames.location(line) == want


@pytest.mark.parametrize("line", [
    "    request_outputs = await self.engine.step_async()",  # the code under a frame
    "                      ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
    '    raise ValueError(\'File "/x.py", line 1, in f\')',  # code quoting a frame
    'ERROR 06-13 02:36:52 see File "/a/b.py", line 3, in f',  # a message quoting one
    '  File "/a/b.py", line 3 in f',  # faulthandler's dump, not a traceback
    # a traceback pasted as one line (vllm-project/vllm#5697): a frame followed by its code is no frame line
    '  File "/root/anaconda3/envs/vllm/lib/python3.10/site-packages/vllm/engine/async_llm_engine.py", line 42, in '
    "_log_task_completion     return_value = task.result()",
    '  File "«url-path:12-chars»", line 1, in f',  # masked user content
])
def test_anything_else_is_no_frame(line):
    assert frames.location(line) is None


def test_frames_are_bounded_in_number_and_length():
    long_dir = "/".join(["d" * 40] * 60)  # 2.4 kB: cut to MAX_PATH
    body = [f'  File "/srv/lib/python3.12/site-packages/pkg/m{i}.py", line {i}, in f{i}\n    x = step({i})' for i in range(500)]
    body.append(f'  File "/srv/lib/python3.12/site-packages/{long_dir}/deep.py", line 1, in {"g" * 300}\n    y = 1')
    text = "Traceback (most recent call last):\n" + "\n".join(body) + "\nRuntimeError: boom\n"
    (ev,) = parse_text(text)
    fs = ev.frames
    assert len(fs) == frames.MAX_FRAMES
    half = frames.MAX_FRAMES // 2
    assert fs[:half] == tuple(f"pkg/m{i}.py:f{i}" for i in range(half))  # the outermost calls
    assert fs[-2] == "pkg/m499.py:f499" and fs[-1].endswith(":" + "g" * frames.MAX_FUNC)  # and the innermost
    path = fs[-1].rsplit(":", 1)[0]
    assert len(path) <= frames.MAX_PATH and path.startswith("…") and path.endswith("/deep.py")
    # the record itself is the header and the exception; its line numbers still point at the real lines
    assert ev.text == "Traceback (most recent call last):\nRuntimeError: boom"
    assert ev.line_at(ev.text.index("RuntimeError")) == len(text.splitlines())


def test_code_lines_stay_out_of_text_and_frames():
    # real: vllm-project/vllm#5443 (vLLM's repeated prefix), with the code of one frame quoting an error
    text = """ERROR 06-12 07:32:53 async_llm_engine.py:45] Engine background task failed
ERROR 06-12 07:32:53 async_llm_engine.py:45] Traceback (most recent call last):
ERROR 06-12 07:32:53 async_llm_engine.py:45]   File "/usr/local/lib/python3.10/dist-packages/vllm/engine/async_llm_engine.py", line 495, in engine_step
ERROR 06-12 07:32:53 async_llm_engine.py:45]     request_outputs = await self.engine.step_async()
ERROR 06-12 07:32:53 async_llm_engine.py:45]   File "/usr/local/lib/python3.10/dist-packages/vllm/worker/worker.py", line 9, in check
ERROR 06-12 07:32:53 async_llm_engine.py:45]     raise RuntimeError("CUDA out of memory")
ERROR 06-12 07:32:53 async_llm_engine.py:45] TimeoutError
"""
    (ev,) = parse_text(text)
    assert ev.frames == ("vllm/engine/async_llm_engine.py:engine_step", "vllm/worker/worker.py:check")
    assert "out of memory" not in ev.text and "step_async" not in ev.text
    assert not any("out of memory" in f or "step_async" in f for f in ev.frames)


def test_a_paste_that_starts_mid_traceback_is_one_record_with_its_frames():
    (ev,) = parse_text((FIELD / "engine" / "vllm-05-background-loop-quoted-list-prefix.log").read_text(encoding="utf-8"))
    assert ev.frames == ("vllm/engine/async_llm_engine.py:run_engine_loop", "asyncio/tasks.py:wait_for",
                         "vllm/engine/async_llm_engine.py:engine_step", "vllm/engine/async_llm_engine.py:step_async")
    assert "has_requests_in_progress" not in ev.text and "fut.result" not in ev.text  # no code
    assert (ev.lineno, ev.end_lineno) == (1, 8)


def test_no_frame_from_a_prompt_dump_or_masked_user_content(canary_corpus):
    planted_frame = f'  File "/{canary_corpus.word}.py", line 1, in <module>'
    assert frames.location(planted_frame) is not None  # as log text this line would be a frame
    dump = [p for p in canary_corpus.planted if "mmproj-verbose" in p.name]
    assert dump and planted_frame in dump[0].read_text(encoding="utf-8")  # planted in a llama-server -v prompt dump
    seen = 0
    for p in canary_corpus.planted:
        sp = SourceParser(str(p))
        evs = []
        for line in iter_text_lines(p.read_text(encoding="utf-8")):
            evs.extend(sp.feed(line))
        evs.extend(sp.flush())
        for ev in evs:
            seen += len(ev.frames or ())
            assert not any(CANARY in f for f in ev.frames or ()), (p.name, ev.lineno, ev.frames)
    assert seen > 0  # the corpus has real tracebacks: frames are found where they belong


# -- the rule key ---------------------------------------------------------------------------------
def _rule(**kw) -> rules.Rule:
    item = {"id": "t", "title": "t", "category": "engine", "severity": "error", "summary": "loop {func}",
            "remedy": "restart the server after fixing the cause", "examples": ["x"], "counter_examples": ["y"], **kw}
    return rules.build(item)


def _hits(rule: rules.Rule, text: str) -> list:
    hits: list = []
    eng = RuleEngine(rules.RuleSet([rule]), on_hit=hits.append)
    for ev in parse_text(text):
        eng.feed(ev)
    eng.flush()
    return hits


_LOOP_TB = """Traceback (most recent call last):
  File "/usr/local/lib/python3.10/dist-packages/vllm/engine/async_llm_engine.py", line 532, in run_engine_loop
    has_requests_in_progress = await asyncio.wait_for(
  File "/usr/lib/python3.10/asyncio/tasks.py", line 445, in wait_for
    return fut.result()
{exc}
"""


def test_a_frames_rule_matches_locations_and_keeps_its_other_conditions():
    r = _rule(frames=r"async_llm_engine\.py:(?P<func>run_engine_loop)$", match="RuntimeError")
    (hit,) = _hits(r, _LOOP_TB.format(exc="RuntimeError: boom"))
    assert hit.fields == {"func": "run_engine_loop"} and hit.line == 6  # where `match` matched
    assert _hits(r, _LOOP_TB.format(exc="ValueError: boom")) == []  # `match` still applies
    # the same words as text, not as frames: no traceback, no frames, no hit
    assert _hits(r, "RuntimeError: vllm/engine/async_llm_engine.py:run_engine_loop\n") == []
    only_frames = _rule(frames=r"async_llm_engine\.py:(?P<func>run_engine_loop)$", unless="CancelledError")
    (hit,) = _hits(only_frames, _LOOP_TB.format(exc="RuntimeError: boom"))
    assert hit.line == 1 and hit.excerpt.startswith("Traceback")  # the record's first line; its text has no code
    assert _hits(only_frames, _LOOP_TB.format(exc="asyncio.exceptions.CancelledError")) == []  # `unless` too
    assert _hits(_rule(frames=r"async_llm_engine\.py:generate$"), _LOOP_TB.format(exc="RuntimeError: boom")) == []


@pytest.mark.parametrize("kw, why", [
    ({"frames": "("}, "invalid regex"),
    ({"frames": 3}, "non-empty string"),
    ({"frames": "x", "consecutive": 3}, "cannot use `consecutive`"),
    ({"frames": "x", "scope": "trace", "when": {"status": "failed"}}, "a trace rule has no `frames`"),
    ({}, "needs `match`, `frames` or `when`"),
])
def test_the_schema_checks_the_frames_key(kw, why):
    with pytest.raises(rules.RuleError, match=why):
        _rule(**kw)
