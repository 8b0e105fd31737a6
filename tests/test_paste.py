"""Pasted and mangled text: the format is a parsing concern, never a gate for rules."""

from __future__ import annotations

from pathlib import Path

from diag.analysis.rules import ruleset as rules
from diag.parsing import usercontent
from diag.parsing.source import parse_text
from diag.pipeline import Pipeline, SourceResult
from diag.parsing.source import SourceParser
from diag.ingest.reader import iter_text_lines

RS = rules.load()
OOM = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.31 GiB. GPU 0 has a total capacity of 23.64 GiB of which 812.00 MiB is free."
TB = f'Traceback (most recent call last):\n  File "/x/worker.py", line 10, in run\n    raise ValueError("At most 2 image(s) may be provided in one request")\n{OOM}\n'


def hits(text: str) -> list[str]:
    got = []
    pipe = Pipeline(RS, on_hit=got.append, keep_traces=False)
    pipe.feed_lines(SourceParser("<t>"), iter_text_lines(text), SourceResult("<t>"))
    pipe.finish()
    return [h.rule.id for h in got]


def test_an_unprefixed_traceback_is_found_wherever_it_sits():
    llama = "0.00.016.596 I srv    load_model: loading model '/srv/models/gguf/tiny.gguf'\n" * 5
    lmdeploy = "2026-08-22 10:14:39,517 - lmdeploy - INFO - turbomind.py:271 - turbomind engine config:\n" * 5
    alone = hits(TB)
    assert "cuda-oom" in alone
    assert hits(llama + TB) == alone == hits(lmdeploy + TB)


def test_code_quoted_in_a_frame_is_not_rule_input():
    assert "too-many-images" not in hits(TB)


def test_a_file_in_no_known_format_still_gets_its_findings():
    text = ("terminate called after throwing an instance of 'std::runtime_error'\n"
            "  what():  [TM][ERROR] CUDA runtime error: out of memory /lmdeploy/src/turbomind/utils/allocator.h:233\n")
    assert "cuda-runtime-oom" in hits(text)


def test_markdown_ellipsis_and_prompt_leave_one_traceback_record():
    text = ("$ python serve.py --model /m\n"
            "**ERROR 01-24 09:06:04 engine.py:135] Engine background task failed**\n"
            "> Traceback (most recent call last):\n"
            '>   File "/x/a.py", line 1, in f\n'
            "...\n"
            f"> {OOM}\n")
    evs = parse_text(text)
    assert len(evs) == 1, [e.text for e in evs]  # the prompt line is no event; the rest is one record
    assert evs[0].text.splitlines()[-1] == OOM and evs[0].line_at(evs[0].text.index(OOM)) == 6
    assert {"cuda-oom", "engine-background-task-failed"} <= set(hits(text))


def test_stripped_prefixes_keep_records_together():
    text = ("[serving_chat.py:885] Error in chat completion stream generator.\n"
            "[serving_chat.py:885] Traceback (most recent call last):\n"
            '[serving_chat.py:885]   File "/x/a.py", line 1, in f\n'
            f"[serving_chat.py:885] {OOM}\n")
    evs = parse_text(text)
    assert [e.src for e in evs] == [None, None] and evs[-1].text.startswith("Traceback") and evs[-1].text.endswith(OOM)
    proc = "(EngineCore pid=316) Traceback (most recent call last):\n(EngineCore pid=316)   File \"/x\", line 1\n" f"(EngineCore pid=316) {OOM}\n"
    evs = parse_text(proc)
    assert len(evs) == 1 and evs[0].proc == "EngineCore" and evs[0].text.endswith(OOM)


def test_journald_continuation_lines_lose_their_indent():
    text = ("Nov 22 18:27:00 gpu1 vllm[123]: Traceback (most recent call last):\n"
            '                                  File "/x/a.py", line 1, in f\n'
            f"                                {OOM}\n")
    evs = parse_text(text)
    assert len(evs) == 1 and evs[0].text.endswith(OOM)


def test_wrapper_timestamps_of_other_programs_are_peeled_off():
    for line in ("2024-05-09 07:00:03 INFO:     127.0.0.1:1 - \"GET /v1/models HTTP/1.1\" 200 OK",
                 "2024-04-27 10:13:05 | INFO | stdout | INFO:     127.0.0.1:1 - \"GET /v1/models HTTP/1.1\" 200 OK",
                 "[ 1836.276684] INFO:     127.0.0.1:1 - \"GET /v1/models HTTP/1.1\" 200 OK"):
        (ev,) = parse_text(line)
        assert ev.fmt == "uvicorn" and ev.fields["status"] == 200, line
    (ev,) = parse_text("2026-08-22 10:14:39,517 - lmdeploy - INFO - turbomind.py:271 - turbomind engine config:")
    assert ev.fmt == "lmdeploy"  # its own timestamp is not a wrapper's


# -- hard wraps at the terminal width ---------------------------------------------------------
FIELD = Path(__file__).parent / "data" / "field"
VLLM_CPU = Path(__file__).parent / "data" / "corpus" / "vllm" / "real-0.32.0-cpu"


def terminal(text: str, width: int) -> str:
    """What a terminal `width` columns wide shows of `text`, copied line by line: every line cut
    into pieces of `width` characters, wherever the cut falls."""
    out = []
    for line in text.splitlines():
        out.extend([line[i:i + width] for i in range(0, len(line), width)] or [""])
    return "\n".join(out) + "\n"


def test_a_pasted_traceback_wrapped_at_119_columns_stays_one_record():
    # vLLM 0.4.3's asyncio callback error, copied from a 119-column terminal (field corpus, real).
    text = (FIELD / "engine" / "vllm-043-asyncio-callback-hard-wrapped.log").read_text(encoding="utf-8")
    evs = parse_text(text)
    handle = next(e for e in evs if e.text.startswith("handle:"))
    assert (handle.lineno, handle.end_lineno) == (4, 5)
    assert "error_callback=<bound method AsyncLLMEngine._error_callback of" in handle.text
    tb = evs[-1]
    # every frame, wrapped or not, is left out (code frames are not rule input); the rest of a
    # wrapped frame ("ception_on_finish", "ne_loop") is no exception line that ends the frames
    assert tb.text == "Traceback (most recent call last):" and (tb.lineno, tb.end_lineno) == (6, 20)
    assert not any(e.text in ("ception_on_finish", "ne_loop", "tep") for e in evs)


def test_an_exception_line_wrapped_at_a_terminal_width_is_whole_for_the_rules():
    real = (VLLM_CPU / "oom-kv-smaller-than-max-len.log").read_text(encoding="utf-8")
    raw = next(l for l in real.splitlines() if l.startswith("ValueError: To serve at least one request"))
    exc = usercontent.scrub(raw)  # its docs URL is masked like any URL
    want = hits(real)
    assert "kv-cache-smaller-than-max-len" in want
    for width in (80, 120):
        wrapped = terminal(real, width)
        evs = parse_text(wrapped)
        assert any(e.text.rsplit("\n", 1)[-1] == exc for e in evs), width
        lines = wrapped.splitlines()
        for ev in (e for e in evs if exc in e.text):  # the raw traceback, and vLLM's prefixed copy of it
            n = ev.line_at(ev.text.index(exc))
            assert "ValueError: To serve" in lines[n - 1] and ev.end_lineno >= n + (len(raw) - 1) // width
        assert set(hits(wrapped)) >= {"kv-cache-smaller-than-max-len", "engine-failed-to-start"}, width


def test_records_of_unknown_formats_at_a_terminal_width_are_never_glued():
    # Real excerpts whose lines are exactly 80-160 columns wide and carry a prefix diag has no
    # parser for (kernel: NVRM, llamafile's epoch, `[pid]`, LMDeploy without a source, a k8s box),
    # and a real vLLM log (no terminal in between) whose 80-column frame lines end where a line ends.
    for path in [FIELD / n for n in (
            "gpu/kernel-nvrm-xid-45-python3-channels.log", "context/llamafile-kv-full-epoch-prefix.log",
            "healthy/llamacpp-swap-pid-prefix-timing.log", "healthy/lmdeploy-pytorch-debug-request-temperature-warning.log",
            "config/nccl-horovod-shm-posix-fallocate.log", "healthy/vllm-k8s-box-drawn-startup.log")] + [VLLM_CPU / "oom-kv-no-blocks.log"]:
        name = path.name
        text = path.read_text(encoding="utf-8")
        lines = [usercontent.scrub(l) for l in text.splitlines()]
        for ev in parse_text(text):
            for t in ev.text.split("\n"):
                assert t in lines or any(t in l for l in lines), (name, t[:120])


def test_a_held_line_is_not_lost_and_the_read_position_waits_for_it():
    text = (FIELD / "engine" / "vllm-043-asyncio-callback-hard-wrapped.log").read_text(encoding="utf-8")
    lines = list(iter_text_lines(text))
    sp = SourceParser("<t>")
    for ln in lines[:4]:
        sp.feed(ln)
    # line 4 is 119 columns, a width learned from lines 1-3: held until line 5 says it goes on
    assert sp.has_pending and sp.safe_offset[1] <= 3
    (ev,) = [e for e in sp.flush() if e.text.startswith("handle:")]
    assert ev.lineno == ev.end_lineno == 4 and not sp.has_pending and sp.safe_offset[1] == 4


# Frames of a vLLM V1 traceback pasted from an 80-column terminal, as posted in
# https://github.com/odysseus-dev/odysseus/issues/500 (every line of the paste, unedited).
ODYSSEUS_500 = '''(EngineCore pid=519)             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
^^^^
(EngineCore pid=519)   File "/app/.local/lib/python3.12/site-packages/vllm/model
_executor/models/qwen2.py", line 517, in __init__
(EngineCore pid=519)     self.model = Qwen2Model(
(EngineCore pid=519)                  ^^^^^^^^^^^
(EngineCore pid=519)   File "/app/.local/lib/python3.12/site-packages/vllm/compi
lation/decorators.py", line 383, in __init__
(EngineCore pid=519)     old_init(self, *args, **kwargs)
(EngineCore pid=519)   File "/app/.local/lib/python3.12/site-packages/vllm/model
_executor/models/qwen2.py", line 367, in __init__
(EngineCore pid=519)     self.start_layer, self.end_layer, self.layers = make_la
yers(
(EngineCore pid=519)                                                     ^^^^^^^
^^^^^
(EngineCore pid=519)   File "/app/.local/lib/python3.12/site-packages/vllm/model
_executor/offloader/base.py", line 104, in wrap_modules
(EngineCore pid=519)     return list(modules_generator)
'''


def test_frames_wrapped_at_80_columns_are_whole_again():
    evs = parse_text(ODYSSEUS_500)
    texts = [e.text for e in evs]
    # the paste starts mid-traceback: from its first frame on it is one record, whose frames (code
    # locations, diag.parsing.frames) are whole again although the terminal broke each at 80 columns
    (tb,) = [e for e in evs if e.frames]
    assert tb.frames == ("vllm/model_executor/models/qwen2.py:__init__", "vllm/compilation/decorators.py:__init__",
                         "vllm/model_executor/models/qwen2.py:__init__", "vllm/model_executor/offloader/base.py:wrap_modules")
    assert tb.text == '  File "/app/.local/lib/python3.12/site-packages/vllm/model_executor/models/qwen2.py", line 517, in __init__'
    assert (tb.lineno, tb.end_lineno) == (3, 18)
    # no event is the rest of a broken line, and every event keeps the process tag of its first line
    assert not any(t.startswith(("_executor", "lation/", "yers(", "^^^^")) for t in texts)
    assert {e.proc for e in evs} == {"EngineCore"}


def test_a_continuation_padded_to_the_terminal_width_joins_its_line():
    # vLLM 0.15 copied from a 158-column terminal (vllm-project/vllm#33545): each ERROR line breaks
    # before ": '/data/…'", and the rest is padded with spaces to the same 158 columns.
    text = (FIELD / "healthy" / "vllm-repo-utils-safetensors-retry-padded-wrap.log").read_text(encoding="utf-8")
    assert [len(l) for l in text.splitlines()[:3]] == [158, 158, 158]
    evs = parse_text(text)
    assert [(e.lineno, e.end_lineno) for e in evs] == [(1, 2), (3, 4)]
    for ev in evs:
        assert ev.text.endswith(("retrying 1 of 2", "if needed.")), ev.text[-40:]
        assert "'namespace/repo_name': '/data/models/Qwen/Qwen3-ASR-1.7B'. Use `repo_type`" in ev.text
    # the second wrap is joined while it is read: 158 columns is the terminal's width now
    lines = list(iter_text_lines(text))
    sp = SourceParser("<t>")
    assert sp.feed(lines[0]) == sp.feed(lines[1]) == [] and sp.feed(lines[2]) == []  # line 3 is held
    (first,) = sp.feed(lines[3])  # the rest of line 3 arrives: the record before it is complete
    (second,) = sp.flush()
    assert (first.end_lineno, second.lineno, second.end_lineno) == (2, 3, 4)


# vLLM V1 on an Intel Arc card, pasted from a 119-column terminal
# (https://github.com/SergiioB/intel-arc-pro-b70-inference-cookbook/issues/4). The stored copy of
# the thread ends inside the last line ("Based on the avai"); everything before it is unedited.
ARC_B70_4 = '''(EngineCore pid=316)   File "/opt/venv/lib/python3.12/site-packages/vllm/v1/engine/core.py", line 144, in __init__
(EngineCore pid=316)     kv_cache_config = self._initialize_kv_caches(vllm_config)
(EngineCore pid=316)                       ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
(EngineCore pid=316)   File "/opt/venv/lib/python3.12/site-packages/vllm/tracing/otel.py", line 178, in sync_wrapper
(EngineCore pid=316)     return func(*args, **kwargs)
(EngineCore pid=316)            ^^^^^^^^^^^^^^^^^^^^^
(EngineCore pid=316)   File "/opt/venv/lib/python3.12/site-packages/vllm/v1/engine/core.py", line 305, in _initialize_k
v_caches
(EngineCore pid=316)     kv_cache_configs = get_kv_cache_configs(
(EngineCore pid=316)                        ^^^^^^^^^^^^^^^^^^^^^
(EngineCore pid=316)   File "/opt/venv/lib/python3.12/site-packages/vllm/v1/core/kv_cache_utils.py", line 2193, in get_
kv_cache_configs
(EngineCore pid=316)     _check_enough_kv_cache_memory(
(EngineCore pid=316)   File "/opt/venv/lib/python3.12/site-packages/vllm/v1/core/kv_cache_utils.py", line 758, in _chec
k_enough_kv_cache_memory
(EngineCore pid=316)     raise ValueError(
(EngineCore pid=316) ValueError: To serve at least one request with the model's max seq len (100000), (4.26 GiB KV cach
e is needed, which is larger than the available KV cache memory (4.25 GiB). Based on the avai
'''


def test_an_exception_line_wrapped_at_a_learned_width_reaches_the_rules_whole():
    evs = parse_text(ARC_B70_4)
    # 119 is no usual width: the breaks inside "_initialize_k|v_caches" and "get_|kv_cache_configs"
    # teach it, so the later frame and the ValueError line are whole again
    (exc,) = [e for e in evs if "ValueError: To serve" in e.text]
    assert exc.text.rsplit("\n", 1)[-1].startswith(
        "ValueError: To serve at least one request with the model's max seq len (100000), (4.26 GiB KV cache is needed,")
    assert (exc.lineno, exc.end_lineno) == (1, 18) and exc.proc == "EngineCore"  # it starts mid-traceback: one record
    assert len(evs) == 1
    assert hits(ARC_B70_4) == ["kv-cache-smaller-than-max-len"]
    # before the width is known, the two breaks are left as they were (one break is not enough to go
    # by: the frames read `_initialize_k`, `get_`); from then on the frame is whole
    assert exc.frames == ("vllm/v1/engine/core.py:__init__", "vllm/tracing/otel.py:sync_wrapper", "vllm/v1/engine/core.py:_initialize_k",
                          "vllm/v1/core/kv_cache_utils.py:get_", "vllm/v1/core/kv_cache_utils.py:_check_enough_kv_cache_memory")
