"""Facts of the llama.cpp, LMDeploy and nginx logs (corpus/README.md sections 3-6)."""

from __future__ import annotations

import json
import re

import pytest

from conftest import CANARY, CANARY_TEXT, CORPUS, LLAMA, findings, scan, severe, statuses, traces


def test_llamacpp_text_tasks():
    doc = scan(LLAMA / "text.log")
    tr = traces(doc)
    assert len(tr) == 12
    timed = {i for i, t in tr.items() if t["status"] == "ok"}
    assert timed == {f"task-{n}" for n in (0, 17, 34, 43, 52, 64, 268, 270)}
    assert tr["task-61"]["status"] == "rejected" and tr["task-61"]["http_status"] == 400
    assert tr["task-261"]["status"] == "aborted"
    assert tr["task-337"]["status"] == tr["task-339"]["status"] == "failed"
    assert tr["task-0"]["prompt_tokens"] == 27 and tr["task-0"]["output_tokens"] == 16
    assert tr["task-0"]["latency_s"] == pytest.approx(1.95088)
    f = findings(doc)
    assert {"image-without-projector", "llamacpp-kv-exhausted", "llamacpp-context-exceeded"} <= set(f)
    assert f["llamacpp-context-exceeded"]["fields"] == {"tokens": "3406", "n_ctx": "512"}
    assert "llamacpp-alloc-failed" not in f  # "failed to find a memory slot" retries are not OOM
    # the two tasks failed for want of KV cache while the server kept serving (corpus README): not an engine death
    assert "request-failed-engine-dead" not in f
    assert set(f["request-failed-kv-full"]["request_ids"]) == {"task-337", "task-339"}


def test_llamacpp_prompt_tokens_are_the_whole_prompt_not_what_the_cache_missed():
    # corpus README, mmproj.log: task 35 is two images, prompt_tokens 54 in the response, 21 of them
    # from the prompt cache, so `prompt eval` counts 33; text.log: task 52 repeats task 43's prompt,
    # `n_past = 4, task.n_tokens() = 4`, and evaluates 1 token. The other tasks' evaluated counts
    # were their whole prompts, and stay.
    mm = traces(scan(LLAMA / "mmproj.log"))
    assert [(mm[f"task-{n}"]["prompt_tokens"], mm[f"task-{n}"]["output_tokens"]) for n in (0, 18, 35, 52)] == \
        [(45, 16), (41, 16), (54, 16), (18, 16)]
    text = traces(scan(LLAMA / "text.log"))
    assert text["task-52"]["prompt_tokens"] == text["task-43"]["prompt_tokens"] == 4
    # the verbose log says each prompt's size itself (`new prompt, ... task.n_tokens = N`): the same
    verbose = (LLAMA / "mmproj-verbose.log").read_text(encoding="utf-8", errors="replace")
    said = {f"task-{m[0]}": int(m[1]) for m in re.findall(r"task (\d+) \| new prompt, .*task\.n_tokens = (\d+)", verbose)}
    got = traces(scan(LLAMA / "mmproj-verbose.log"))
    assert len(said) == 4 and {i: got[i]["prompt_tokens"] for i in said} == said


@pytest.mark.parametrize("name, n", [("mmproj.log", 4), ("mmproj-verbose.log", 4), ("jsonl-stdout.log", 3),
                                     ("plain-no-prefix-stderr.log", 3), ("verbose.log", 3), ("verbose-log-colors-off.log", 1)])
def test_llamacpp_task_counts_in_every_layout(name, n):
    doc = scan(LLAMA / name)
    assert len(doc["traces"]) == n
    assert doc["files"][0]["format"] == "llamacpp"


def test_llamacpp_mmproj_verbose_sees_image_encodes():
    tr = traces(scan(LLAMA / "mmproj-verbose.log"))
    assert sum(t["images"] or 0 for t in tr.values()) == 3  # 4 sent, one served from the prompt cache
    assert tr["task-52"]["images"] is None


@pytest.mark.parametrize("name, rule", [
    ("startup-fail-missing-model.log", "gguf-not-found"),
    ("startup-fail-truncated-gguf.log", "gguf-invalid"),
    ("startup-fail-not-gguf.log", "gguf-invalid"),
    ("startup-fail-bad-mmproj.log", "mmproj-load-failed"),
    ("startup-fail-port-in-use.log", "address-in-use"),
])
def test_llamacpp_startup_failures(name, rule):
    f = findings(scan(LLAMA / name))
    assert rule in f
    assert not any(r.startswith("llamacpp-alloc") or r == "cuda-oom" for r in f)  # the n-gpu-layers hint is not OOM


def test_llamacpp_port_and_ctx_over_train():
    f = findings(scan(LLAMA / "startup-fail-port-in-use.log"))
    assert f["address-in-use"]["fields"]["port2"] == "8018"
    doc = scan(LLAMA / "ctx-4096-over-train-port-holder.log")
    assert severe(doc) == set()
    assert findings(doc)["llamacpp-ctx-over-train"]["fields"]["n_ctx"] == "4096"


def test_llamacpp_older_build():
    doc = scan(CORPUS / "llamacpp" / "synthetic-older-build.log")
    tr = traces(doc)
    assert set(tr) == {f"task-{n}" for n in (0, 98, 242, 391, 470, 472)}
    assert tr["task-98"]["images"] == 1 and tr["task-391"]["images"] == 1
    assert tr["task-391"]["status"] == "aborted"
    assert tr["task-470"]["status"] == "rejected"
    assert tr["task-472"]["status"] == "ok"
    assert tr["task-0"]["prompt_tokens"] is not None and tr["task-0"]["latency_s"] is not None
    http = doc["summary"]["http_status"]
    assert sum(http.values()) == 16
    assert http["503"] == 2


def test_llamacpp_2024_server_log_garbled_numbers(tmp_path):
    """Numbers no server writes (a timestamp past any date, NaN, 35 digits, a status of 99999, the wrong
    JSON types) in the 2024 server_log() formats are unknown values, not a crash when the report is written."""
    bad = tmp_path / "garbled.log"
    bad.write_text(
        '{"tid":"1","timestamp":99999999999999999999,"level":"INFO","function":"launch_slot_with_task","line":1,'
        '"msg":"slot is processing task","id_slot":0,"id_task":5}\n'
        '{"tid":"1","timestamp":-5e300,"level":"INFO","function":"update_slots","line":1,"msg":"slot released",'
        '"id_slot":0,"id_task":5,"n_past":1e400,"truncated":false}\n'
        'INFO [ print_timings] x | tid="1" timestamp=1e999 id_slot=0 id_task=5 t_total=nan n_decoded=' + "9" * 35 + "\n"
        '{"tid":"1","timestamp":"x","level":"INFO","function":"log_server_request","msg":"request","status":99999,'
        '"method":["a"],"path":{"p":1},"remote_addr":null}\n')
    doc = scan(bad)
    assert doc["files"][0]["format"] == "llamacpp" and doc["internal_errors"] == {}
    t = traces(doc)["task-5"]
    assert (t["received_at"], t["finished_at"], t["latency_s"], t["output_tokens"]) == (None, None, None, None)
    assert doc["summary"]["http_status"] == {}


def test_llamacpp_release_with_n_past():
    """llama-server builds of late 2024 to mid 2025 wrote the slot release as `stop processing: n_past = N,
    truncated = 0` (real logs, field corpus): the task ends there, as with `n_tokens =`."""
    field = CORPUS.parent / "field"
    t = traces(scan(field / "healthy" / "llamacpp-release-n-past-classic-timings.log"))["task-0"]
    assert [e["kind"] for e in t["timeline"]] == ["request.started", "request.finished", "request.timing"]
    assert (t["prompt_tokens"], t["output_tokens"]) == (51, 275)
    t = traces(scan(field / "healthy" / "llamacpp-journald-blob-data-chat-200.log"))["task-519"]
    assert t["finished_at"] is not None and "request.finished" in [e["kind"] for e in t["timeline"]]


def test_llamacpp_request_line_without_srv_prefix():
    """llama-server builds of late 2024 wrote the request line as `request: POST /chat/completions 127.0.0.1
    200`, without `srv  log_server_r:` (real journald log, field corpus): it is an access record."""
    doc = scan(CORPUS.parent / "field" / "healthy" / "llamacpp-journald-blob-data-chat-200.log")
    assert doc["summary"]["http_status"] == {"200": 2}
    assert doc["summary"]["top_clients"] == [{"client": "127.0.0.1", "requests": 2}]


def test_lmdeploy_sessions():
    doc = scan(CORPUS / "lmdeploy" / "synthetic-0.16.log")
    tr = traces(doc)
    assert set(tr) == {f"session-{n}" for n in (0, 1, 2, 5, 6, 7, 8, 9, 10)}
    assert statuses(doc) == {"ok": 8, "failed": 1}
    s5 = tr["session-5"]
    assert s5["status"] == "failed" and s5["reason"] == "OUT_OF_MEMORY" and s5["http_status"] == 500
    assert "lmdeploy-turbomind-kv-oom" in s5["findings"]
    assert "request-failed-kv-full" in s5["findings"] and "request-failed-engine-dead" not in findings(doc)  # TurboMind ran on
    assert tr["session-1"]["prompt_tokens"] == 1843 and tr["session-1"]["output_tokens"] == 187
    http = doc["summary"]["http_status"]
    assert http["500"] == 1 and http["404"] == 1 and http["400"] == 2
    assert doc["facts"][str(CORPUS / "lmdeploy" / "synthetic-0.16.log")]["max_model_len"] == 32768


def test_lmdeploy_before_0_5_sessions_and_prompt_lines(tmp_path):
    """LMDeploy before 0.5 wrote no `file.py:line` and `session_id=` (a user's log, field corpus):
    its requests are traced, and its prompt lines are the user's text: error text pasted into a
    prompt raises nothing."""
    real = CORPUS.parent / "field" / "healthy" / "lmdeploy-04-session-id-and-prompt-lines.log"
    doc = scan(real)
    assert doc["files"][0]["format"] == "lmdeploy"
    tr = traces(doc)
    assert {k: (t["prompt_tokens"], t["max_tokens"], t["http_status"]) for k, t in tr.items()} == {
        "session-290": (1543, 1024, 200), "session-291": (3374, 496, 200), "session-292": (881, 1024, 200),
        "session-293": (163, 1024, 200)}
    planted = tmp_path / "planted.log"
    planted.write_text(real.read_text().replace('prompt="...............', f'prompt="{CANARY_TEXT}"'))
    doc = scan(planted)
    assert doc["findings"] == [] and CANARY not in json.dumps(doc)
    assert set(traces(doc)) == set(tr)


def test_llamacpp_2024_server_log_json_and_text(tmp_path):
    """llama-server before its autumn-2024 log rewrite wrote every line through server_log(): JSON by
    default (keys sorted, later in order), `INFO [func] msg | key=value` with --log-format text (real
    logs, field corpus). Its tasks are traced, its request lines are access records, and what the
    extras carry of the user's (-v request bodies, query params) is neither read as fields nor rule input."""
    field = CORPUS.parent / "field" / "healthy"
    doc = scan(field / "llamacpp-b3029-json-log-timings-released.log")
    assert doc["files"][0]["format"] == "llamacpp"
    t = traces(doc)["task-19"]
    assert (t["status"], t["prompt_tokens"], t["output_tokens"]) == ("ok", 27, 25)
    assert t["latency_s"] == pytest.approx(6.243658) and t["finished_at"].startswith("2024-05-30T11:09:46")
    text = field / "llamacpp-2024-info-bracket-timings.log"
    doc = scan(text)
    assert doc["files"][0]["format"] == "llamacpp"
    assert {k: (t["prompt_tokens"], t["output_tokens"]) for k, t in traces(doc).items()} == {"task-0": (685, 327)}
    assert doc["summary"]["http_status"] == {"200": 2}
    doc = scan(field / "llamacpp-text-log-format-indented-paste.log")  # a paste that indents every line
    assert {k: (t["prompt_tokens"], t["received_at"]) for k, t in traces(doc).items()} == {
        "task-1": (221, "2024-07-10T21:11:47+00:00")}
    assert doc["summary"]["http_status"] == {"200": 1}
    old = field / "llamacpp-old-json-log-health-200.log"
    doc = scan(old)
    assert doc["files"][0]["format"] == "llamacpp" and doc["summary"]["http_status"] == {"200": 2}
    value = json.dumps(CANARY_TEXT + " id_task=7 n_past=99")
    for real, old_params, planted_params in ((text, "params={}", f"params={{\"q\":{value}}}"),
                                            (old, '"params":{}', f'"params":{{"q":{value}}}')):
        planted = tmp_path / real.name
        planted.write_text(real.read_text().replace(old_params, planted_params))
        doc = scan(planted)
        assert doc["findings"] == [] and CANARY not in json.dumps(doc)
        assert doc["summary"]["http_status"] == {"200": 2}
        assert all(t["id"] == "task-0" for t in doc["traces"])


def test_nginx_access_and_error_logs():
    acc = scan(CORPUS / "nginx" / "access-combined.log")
    assert acc["summary"]["http_status"] == {"200": 43, "400": 1, "499": 3, "502": 19, "503": 7, "504": 2}
    err = findings(scan(CORPUS / "nginx" / "error.log"))
    assert err["upstream-refused"]["count"] == 18
    assert err["upstream-timeout"]["count"] == 3
    assert err["upstream-closed"]["count"] == 1


def test_nginx_error_lines_pasted_without_their_date():
    """nginx error lines pasted from the level on, the date cut off (real pastes, field corpus), are nginx's:
    read as such, not as a Python proxy's 'Connection refused' (which named an unknown host '?:?')."""
    field = CORPUS.parent / "field" / "network"
    doc = scan(field / "nginx-refused-disabled-no-live-upstreams.log")
    assert doc["files"][0]["format"] == "nginx"
    assert set(findings(doc)) == {"upstream-refused"} and findings(doc)["upstream-refused"]["count"] == 2
    doc = scan(field / "nginx-upstream-timed-out-reading-header.log")
    assert doc["files"][0]["format"] == "nginx" and set(findings(doc)) == {"upstream-timeout"}


def test_dates_past_any_clock_are_unknown_not_a_crash(tmp_path):
    """A logged year no clock can show (9999, in the formats that carry a full date: LMDeploy, nginx error and
    access, vLLM's loggers under Xinference's config, KServe's stamp) is an unknown time: in a zone east of
    UTC, iso() of it overflowed and `diag scan` died writing the report."""
    import os
    import subprocess
    import sys

    log = tmp_path / "y9999.log"
    log.write_text(
        '9999-12-31 23:59:59,999 - lmdeploy - INFO - async_engine.py:1 - session 5 finished, reason "stop", input_tokens 1, '
        'output_tokens 2\n'
        '9999-12-31 23:59:59 - vllm.engine.async_llm_engine - INFO - Added request x1.\n'
        '9999/12/31 23:59:59 [error] 1#1: *1 connect() failed (111: Connection refused) while connecting to upstream, '
        'client: 1.2.3.4, server: x, request: "POST /v1/chat/completions HTTP/1.1", upstream: "http://127.0.0.1:8000/", host: "x"\n'
        '1.2.3.4 - - [31/Dec/9999:23:59:59 -1400] "POST /v1/chat/completions HTTP/1.1" 502 0 "-" "x"\n'
        '9999-12-31 23:59:59.999 1 kserve.trace Received request c9: params: SamplingParams(max_tokens=3), lora_request: None.\n')
    for tz in ("Asia/Shanghai", "America/New_York"):
        r = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", str(log)], capture_output=True, text=True,
                           env={**os.environ, "TZ": tz}, timeout=120)
        assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr[-2000:]
        doc = json.loads(r.stdout)
        assert {t["id"]: t["received_at"] for t in doc["traces"]} == {"session-5": None, "x1": None, "c9": None}


def test_llamacpp_findings_say_the_sizes_their_logs_hold():
    # synthetic-older-build.log line 106-107: the sizes are in the task's `new prompt` line, not in its error
    f = findings(scan(CORPUS / "llamacpp" / "synthetic-older-build.log"))
    ce = f["llamacpp-context-exceeded"]
    assert (ce["fields"]["prompt_tokens"], ce["fields"]["n_ctx_slot"]) == (9317, 8192)
    assert ce["summary"] == "A prompt of 9317 tokens did not fit the slot context of 8192 tokens; HTTP 400."
    # `retrying with smaller batch size, i = 0, n_batch = 2048, ret = 1`
    assert f["llamacpp-kv-cache-full"]["fields"]["n_batch2"] == "2048"
    assert "n_batch = 2048" in f["llamacpp-kv-cache-full"]["summary"]
    # text.log line 96: `…, off = 0, n_batch = 256, ret = 1`; line 131: `failed to find a memory slot for batch of size 1`
    f = findings(scan(LLAMA / "text.log"))
    assert "n_batch = 256" in f["llamacpp-kv-cache-full"]["summary"]
    assert f["llamacpp-decode-failed"]["summary"] == \
        "llama.cpp found no room in the KV cache for a batch of 1 token(s): requests fail or stall."
    assert f["llamacpp-context-exceeded"]["summary"] == \
        "A prompt of 3406 tokens did not fit the slot context of 512 tokens; HTTP 400."


def test_llamacpp_startup_failures_name_the_file_and_what_failed():
    f = findings(scan(LLAMA / "startup-fail-not-gguf.log"))
    assert f["gguf-invalid"]["summary"] == (
        "A GGUF file is not valid GGUF (llama-server was loading `/srv/models/gguf/notgguf.gguf`: that file, or a --mmproj, "
        "LoRA or draft model given with it): it starts with `this`, not `GGUF`; a truncated download or the wrong file.")
    assert f["llamacpp-model-load-failed"]["summary"] == \
        "llama-server could not load its model `/srv/models/gguf/notgguf.gguf` and exited."
    f = findings(scan(LLAMA / "startup-fail-truncated-gguf.log"))
    assert f["gguf-invalid"]["summary"] == (
        "A GGUF file is not valid GGUF (llama-server was loading `/srv/models/gguf/truncated.gguf`: that file, or a --mmproj, "
        "LoRA or draft model given with it): llama.cpp failed to read its key-value pairs; a truncated download or the wrong file.")
    # the model loaded, its --mmproj did not, and llama-server exited "due to model loading error": one finding
    # that says so, not a model-load failure with no file
    doc = scan(LLAMA / "startup-fail-bad-mmproj.log")
    assert severe(doc) == {"mmproj-load-failed"}
    s = findings(doc)["mmproj-load-failed"]["summary"]
    assert s == ("The vision projector `/srv/models/gguf/tiny.gguf` could not be loaded and the server exited: "
                 "it does not start without the projector it was given.")


def test_proxy_unreachable_names_the_server_requests_could_not_reach(tmp_path):
    # the walkthrough's proxy log (the guide's proxy_server.py, requests to http://localhost:3001)
    log = tmp_path / "proxy.log"
    log.write_text(
        "INFO:root:Proxy server listening on port 8000, forwarding /v1/* to http://localhost:3001\n"
        "INFO:root:Received POST request to /v1/chat/completions\n"
        "INFO:root:Forwarding to http://localhost:3001/v1/chat/completions\n"
        "ERROR:root:Upstream not reachable: HTTPConnectionPool(host='localhost', port=3001): Max retries exceeded with url: "
        "/v1/chat/completions (Caused by NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f>: Failed to "
        "establish a new connection: [Errno 111] Connection refused'))\n"
        '10.8.0.23 - - [24/Jan/2025 00:13:47] "POST /v1/chat/completions HTTP/1.1" 503 -\n', encoding="utf-8")
    doc = scan(log)
    assert doc["files"][0]["format"] == "proxy"
    f = findings(doc)["proxy-backend-unreachable"]
    assert (f["fields"]["host2"], f["fields"]["port2"]) == ("localhost", "3001")
    assert f["summary"].startswith("The proxy/client could not connect to localhost:3001: ")


ALL_LOGS = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*.log"))


@pytest.mark.parametrize("name", ALL_LOGS)
def test_no_finding_prints_a_placeholder(name):
    # a field a match did not capture printed as "?"; a summary now names what its log holds and leaves out,
    # as a whole phrase, what it does not (no summary template has a "?" of its own)
    doc = scan(CORPUS / name)
    assert not [(x["rule"], x["summary"]) for x in doc["findings"] if "?" in x["summary"]]


def test_a_quieting_line_of_one_start_does_not_silence_the_next(tmp_path):
    # one llama-server start fails on its --mmproj (model-load-failed is quiet after "failed to load multimodal
    # model": the projector's finding says it), then the server is started again in the same log and fails on
    # a model that is no GGUF. llama.cpp's times are relative, so no `within_s` ends the quiet: the new start does
    log = tmp_path / "llama.log"
    log.write_bytes((LLAMA / "startup-fail-bad-mmproj.log").read_bytes() + (LLAMA / "startup-fail-not-gguf.log").read_bytes())
    f = findings(scan(log))
    assert "mmproj-load-failed" in f
    assert f["llamacpp-model-load-failed"]["summary"] == \
        "llama-server could not load its model `/srv/models/gguf/notgguf.gguf` and exited."
