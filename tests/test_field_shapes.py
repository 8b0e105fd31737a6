"""Log shapes the field corpus found diag misreading (tests/data/field/, issue 12).

* journalctl's short form writes the month in the host's locale (`Mai 08 …` on a German host,
  `авг 18 …` on a Russian one): the journald prefix must come off all the same, so that the server
  line inside is read (format, pid, time) and its requests traced.
* llama.cpp's examples/server of late 2023 / early 2024 printed its slot lines as plain text
  between its JSON lines (`slot 0 is processing [task id: 0]`, `slot 0 released (N tokens in
  cache)`): a request it logged is a trace.
"""

from __future__ import annotations

import time
from pathlib import Path

from diag.parsing import events as E
from diag.parsing.clock import month_number
from diag.parsing.source import parse_text

from conftest import scan

FIELD = Path(__file__).parent / "data" / "field"
DE = FIELD / "healthy" / "llamacpp-journald-german-locale-month.log"
RU = FIELD / "healthy" / "vllm-journald-russian-locale-month.log"
OLD = FIELD / "healthy" / "llamacpp-2023-plain-slot-lines.log"
LLAMAFILE = FIELD / "healthy" / "llamafile-2024-plain-slot-released.log"


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_localised_month_names():
    assert [month_number(m) for m in ("Mai", "Mär", "Okt", "Dez", "авг", "мая", "май", "ene", "mrt", "Aug", "may")] == \
        [5, 3, 10, 12, 8, 5, 5, 1, 3, 8, 5]
    assert month_number("Foo") == 0 and month_number("INF") == 0


def test_journald_prefix_with_a_german_month_is_taken_off():
    line = next(ln for ln in _lines(DE) if "processing task" in ln)  # a real line (llama.cpp#22828)
    (ev,) = parse_text(line)
    assert ev.fmt == "llamacpp" and ev.kind == E.STARTED and ev.fields["request_id"] == "task-135"
    assert ev.pid == 112653
    t = time.localtime(ev.ts)
    assert (t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec) == (5, 8, 6, 59, 48)


def test_journald_prefix_with_a_russian_month_is_taken_off():
    line = next(ln for ln in _lines(RU) if "Supported tasks" in ln)  # a real line (1Cat-vLLM#237)
    (ev,) = parse_text(line)
    assert ev.fmt == "vllm" and ev.proc == "APIServer" and ev.pid == 27876
    assert ev.text.startswith("Supported tasks")


def test_field_excerpts_with_localised_journald_months_are_read():
    de, ru = scan(DE), scan(RU)
    assert de["files"][0]["format"] == "llamacpp" and [t["id"] for t in de["traces"]] == ["task-135"]
    assert ru["files"][0]["format"] == "vllm"


def test_a_month_look_alike_is_no_journald_prefix():
    line = "Mai 08 06:59:47 was the last time it worked"
    (ev,) = parse_text(line)
    assert ev.text == line


def test_2023_llamacpp_plain_slot_lines_make_a_trace():
    doc = scan(OLD)  # llama.cpp#5104: JSON lines around plain-text slot lines
    assert doc["files"][0]["format"] == "llamacpp"
    assert [t["id"] for t in doc["traces"]] == ["task-0"]


def test_2023_llamacpp_release_with_its_timings_is_a_completed_request():
    doc = scan(LLAMAFILE)  # llamafile#343: plain-text lines only, start to release
    assert doc["files"][0]["format"] == "llamacpp"
    (t,) = doc["traces"]
    assert (t["id"], t["status"], t["prompt_tokens"], t["output_tokens"], t["latency_s"]) == ("task-0", "ok", 225, 287, 14.33704)


def test_2023_llamacpp_timing_blocks_go_to_the_releases_in_order():
    # Two slots ending in one pass of update_slots: both timing blocks, then both releases (as
    # server.cpp printed them then; the numbers are made up).
    lines = ["slot 0 is processing [task id: 3]", "slot 1 is processing [task id: 4]",
             "print_timings: prompt eval time =     100.00 ms /    10 tokens (   10.00 ms per token,   100.00 tokens per second)",
             "print_timings:        eval time =     900.00 ms /    20 runs   (   45.00 ms per token,    22.22 tokens per second)",
             "print_timings:       total time =    1000.00 ms",
             "print_timings: prompt eval time =     200.00 ms /    30 tokens (    6.67 ms per token,   150.00 tokens per second)",
             "print_timings:        eval time =    1800.00 ms /    40 runs   (   45.00 ms per token,    22.22 tokens per second)",
             "print_timings:       total time =    2000.00 ms",
             "slot 0 released (30 tokens in cache)", "slot 1 released (70 tokens in cache)"]
    ends = [e.fields for e in parse_text("\n".join(lines)) if e.kind == E.FINISHED]
    assert [(f["request_id"], f["prompt_tokens"], f["output_tokens"], f["total_ms"]) for f in ends] == \
        [("task-3", 10, 20, 1000.0), ("task-4", 30, 40, 2000.0)]


def test_2023_llamacpp_release_ends_the_task_its_slot_was_processing():
    # The excerpt stops before its release; these lines are as server.cpp printed them then
    # (`slot %d is processing [task id: %d]`, `slot %d released (%d tokens in cache)`).
    evs = parse_text("\n".join(["slot 0 is processing [task id: 7]", "slot 1 is processing [task id: 8]",
                               "slot 0 released (528 tokens in cache)", "slot 1 released (12 tokens in cache)",
                               "slot 2 released (3 tokens in cache)"]))
    got = [(e.kind, e.fields.get("request_id"), e.fields.get("n_tokens")) for e in evs]
    assert got == [(E.STARTED, "task-7", None), (E.STARTED, "task-8", None), (E.FINISHED, "task-7", 528),
                   (E.FINISHED, "task-8", 12), (E.LOG, None, None)]
    assert all(e.fmt == "llamacpp" for e in evs)


def test_llamacpp_router_child_port_prefix_is_taken_off():
    lines = _lines(FIELD / "healthy" / "llamacpp-router-journald-iso-precise.log")  # opencode#38801
    evs = parse_text("\n".join(lines))
    assert [e.fmt for e in evs] == ["llamacpp"] * 4 and all(e.pid == 1686919 for e in evs)
    assert evs[-1].proc == "slot" and evs[-1].text.startswith("slot get_availabl: id  0 | task -1")
    doc = scan(FIELD / "healthy" / "llamacpp-swap-pid-prefix-timing.log")  # llama.cpp#23269: `[42027] ` lines
    assert [(t["id"], t["status"]) for t in doc["traces"]] == [("task-388", "ok")]


def test_kubectl_prefix_is_taken_off():
    path = FIELD / "healthy" / "nginx-kubectl-prefix-pod-startup.log"  # kubernetes/kubernetes#123874
    line = next(ln for ln in _lines(path) if "nginx/1.25.4" in ln)
    (ev,) = parse_text(line)
    assert ev.fmt == "nginx" and ev.text.endswith("nginx/1.25.4") and not ev.text.startswith("[pod/")
    assert scan(path)["files"][0]["format"] == "nginx"
