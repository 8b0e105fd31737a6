"""Pasted and mangled text: the format is a parsing concern, never a gate for rules."""

from __future__ import annotations

from diag import rules
from diag.parsers import parse_text
from diag.pipeline import Pipeline, SourceResult
from diag.parsers import SourceParser
from diag.reader import iter_text_lines

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
